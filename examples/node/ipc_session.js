'use strict';
// The ipc-request protocol in plain Node, with both extensions: failures
// travel back as errors, and a request that times out is cancelled at the
// peer (docs/PROTOCOL.md: section 2 = ipc-request 1.0, section 3 = the
// extensions `error` and `cancel`). No dependencies: copy this file into a
// Node project that talks to the Rust crate (or to any ipc-request peer).
// The crate's interop tests run on it (tests/js/peer.js is built on it),
// so it is an independent implementation checked against the Rust one.
//
//   const session = await setupIpcSession(proc, handler, opts)
//
// proc:    `process` (child side) or a ChildProcess (parent side) with an IPC
//          channel in JSON mode.
// handler: (payload, ctx) => value | Promise; ctx.cancelled (getter) and
//          ctx.onCancel(fn) report a CANCEL from the peer; ctx.session is
//          the session, to call the peer back.
// opts:    { extensions = ['error', 'cancel'], handshakeTimeoutMs = 10000,
//            onMessage, closeTimeoutMs = 10000 }
//          extensions: an array of names (null: the default); [] is
//          plain ipc-request 1.0 mode; onMessage, a plain-message
//          listener in place before the handshake. Timeouts are ms, as
//          timeoutMs below.
//
// The session: request(payload, {timeoutMs}) (timeoutMs: ms, at most about
// 24.8 days; unset, Infinity or more is none), send(plain) (refuses, as the
// Rust side does, a `cmd` of NODE_ and more, and the protocol's own
// shapes; a send still unwritten when close() gives up on it fails),
// onMessage(fn) (throws a TypeError for a non-function; returns an
// unsubscribe function; a function subscribed
// twice is one listener, called once, and gone at either unsubscribe;
// plain messages that come while there is no listener wait for one, up to
// 1,024 messages and 64 Mi characters of JSON text (one longer message is
// kept if nothing else waits, and those after it are dropped), kept as
// that text, and past that (or if its text would be longer than a string
// can be) are counted in droppedMessages; serialized again, a message
// kept as text has
// 0 for -0, and null for a number too large for a double, where one heard
// at once has -0 and Infinity),
// peerExtensions (what the peer advertised), extensions (negotiated: ours
// AND the peer's), uses(name), close() (fails what is pending, lets what
// was sent be written, up to closeTimeoutMs, then disconnects the channel;
// requests of the peer's that come meanwhile are not served, and its
// callers learn at the disconnect, as with the Rust side;
// returns a promise settled once it is disconnected; for a session whose
// handshake failed, settled at once, the channel left be).
//
// Setup rejects at once with ERR_NO_IPC for a proc without a channel,
// ERR_IPC_CHANNEL_CLOSED for one already disconnected, and a TypeError or
// RangeError for options it cannot take. Requests are served from the
// start, before the handshake ends. If it then fails (setup rejects:
// ETIMEDOUT when it timed out, ERR_IPC_CHANNEL_CLOSED when its request
// could not be written, or the channel closed, or the peer exited), the
// session closes: what handlers asked the peer meanwhile fails, their
// ctx.cancelled turns true, and nothing of the session stays on proc, so
// setup may be tried again on it (a close() through ctx.session then
// leaves the channel be), with the extensions of the first try: others
// are a RangeError, as the peer may take ours from the first try's
// handshake request, still in the channel. A handler's
// ctx.session.close() before the handshake ends is a close like any
// other: setup rejects with ERR_IPC_CHANNEL_CLOSED, and the channel is
// disconnected.
//
// A handler that passes on (rethrows) an error its own request to the
// peer got passes it whole (with the peer's stack, if it sent one, and
// not the local one of where it was received), but for the names that
// say a request was not run (Overloaded, RequestTooLong,
// RequestUnreadable, NoHandler, HandlerNotRun): this one was, so those go
// as the Rust side sends them on, named Remote.
//
// A handler's answer that JSON cannot hold (a BigInt, a cycle, a function)
// goes as an error named ResponseNotSent, as from the Rust side; a request
// whose payload it cannot hold is rejected. Payloads and plain messages
// are serialized by this file first (see payloadValue), at some cost.
//
// Node itself, and what close() does about it (the code of both is the
// same in Node 18, 20, 22, 24 and 26: lib/internal/child_process.js,
// setupChannel, read with --expose-internals):
// - a disconnect() while a message is half read never closes the channel
//   (no 'disconnect', and the peer never sees its end; reviews saw it in 7
//   of about 1,400 rounds from a parent, and in 16 of 20 from a child that
//   closed while its parent streamed 8 MiB requests): close() wakes Node's
//   wait (see disconnect below);
// - disconnect() drops what Node has not written yet, and its send
//   callbacks report it written all the same: close() waits for every
//   send's callback first (up to closeTimeoutMs).

const crypto = require('crypto');

// Exact key and value strings of the wire protocol.
const P = '_IPC_REQUEST/';
const HS_UID = P + 'HANDSHAKE_UID';
const HS_TYPE = P + 'HANDSHAKE_MSG_TYPE';
const HS_REQUEST = P + 'HANDSHAKE_MSG_TYPE:REQUEST';
const HS_RESPONSE = P + 'HANDSHAKE_MSG_TYPE:RESPONSE';
const MSG_TYPE = P + 'MSG_TYPE';
const UID = P + 'REQUEST_UID';
const PAYLOAD = P + 'PAYLOAD';
const REQUEST = P + 'MSG_TYPE:REQUEST';
const RESPONSE = P + 'MSG_TYPE:RESPONSE';
const CANCEL = P + 'MSG_TYPE:CANCEL'; // extension `cancel`
const EXTENSIONS = P + 'EXTENSIONS'; // extension negotiation
const ERROR = P + 'ERROR'; // extension `error`

const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const isObject = (m) => m !== null && typeof m === 'object' && !Array.isArray(m);
// Section 2: a handshake message has both handshake keys; a request/response
// (or CANCEL) has all three of MSG_TYPE, REQUEST_UID and PAYLOAD. Anything
// else is a plain message and belongs to the user.
const isHandshake = (m) => isObject(m) && has(m, HS_UID) && has(m, HS_TYPE);
const isRequestLike = (m) => isObject(m) && has(m, MSG_TYPE) && has(m, UID) && has(m, PAYLOAD);

// A thrown value as text, whatever it is (a getter that throws, an object
// with no prototype, a revoked Proxy: handlers may throw anything).
function describe(x) {
  try {
    if (isObject(x) && 'message' in x) return String(x.message);
    return String(x);
  } catch (_) {
    return 'a value that cannot be shown';
  }
}

// The names the Rust side sends for a request it did not run: its caller
// may send it again.
const NOT_RUN = new Set(['Overloaded', 'RequestTooLong', 'RequestUnreadable', 'NoHandler', 'HandlerNotRun']);

// The error object of extension `error` (and of the 1.0 fallback payload).
// Each field is read once (a getter could answer otherwise the second
// time); only a string name, a string message, a string stack and a string
// or finite number code are taken (PROTOCOL.md section 3).
function errorToWire(err) {
  try {
    if (!isObject(err)) return { name: 'Error', message: describe(err) };
    const { name, message, code, data, remote, [LOCAL_STACK]: localStack } = err;
    let stack; // read alone: a throwing Error.prepareStackTrace loses only it
    try { stack = err.stack; } catch (_) { /* none */ }
    if (remote === true && NOT_RUN.has(name)) {
      // A peer's "not run" passed on by a handler that did run (a
      // rethrow): the caller may not take it as not run. As the Rust side
      // passes it on: named Remote, the peer's name and message inside.
      // The code as the Rust side prints it: a name bare, another string
      // quoted, a number as it is.
      const bare = typeof code === 'string' && /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(code);
      const shown = bare || Number.isFinite(code) ? String(code) : typeof code === 'string' ? JSON.stringify(code) : null;
      const coded = shown === null ? '' : ` (code ${shown})`;
      return { name: 'Remote', message: `the peer answered with an error: ${name}: ${describe(message)}${coded}` };
    }
    const out = {
      name: typeof name === 'string' ? name : 'Error',
      message: typeof message === 'string' ? message : describe(message ?? ''),
    };
    if (typeof stack === 'string' && stack !== localStack) out.stack = stack;
    if (typeof code === 'string' || Number.isFinite(code)) out.code = code;
    if (data !== undefined) out.data = data;
    return out;
  } catch (e) {
    return { name: 'Error', message: `an error that could not be read: ${describe(e)}` };
  }
}

// Set on an error from the peer to the stack it was made with here, when
// the peer sent none: that one says only where the answer was read, and a
// handler that passes the error on does not send it as the peer's.
// Symbol.for: a program may hold two copies of this file.
const LOCAL_STACK = Symbol.for('ipc-session local stack');

function errorFromWire(w) {
  const e = new Error(isObject(w) && typeof w.message === 'string' ? w.message : String(w));
  e.remote = true;
  if (isObject(w)) {
    if (typeof w.name === 'string') e.name = w.name;
    if (w.code !== undefined) e.code = w.code;
    if (w.data !== undefined) e.data = w.data;
    if (typeof w.stack === 'string') {
      e.stack = w.stack;
      return e;
    }
  }
  // Read now: an Error.prepareStackTrace of the program's may throw, and V8
  // would format our frames again on a later read, unmarked. Then a stack
  // without frames is kept, and marked.
  let local;
  try { local = e.stack; } catch (_) { /* none */ }
  if (typeof local !== 'string') {
    local = `${e.name}: ${e.message}`;
    e.stack = local;
  }
  Object.defineProperty(e, LOCAL_STACK, { value: local });
  return e;
}

// A plain message as the peer will parse it, to send in its place, or a
// thrown error if it may not be sent: as the Rust side refuses them
// (PROTOCOL.md 1.2, 1.3 and section 2). Serialized once here, so what is
// judged is what goes out (a toJSON or a getter could give another answer
// each time it is asked, and Node serializes the message itself, maybe
// later). Refused: a message JSON cannot hold or that serializes to
// nothing (Node would write the line `undefined`, which a Node peer cannot
// parse); a NODE_ command (Node's rule: `cmd` longer than 5 characters),
// which is Node's own (a NODE_HANDLE without a handle makes Node's
// receiving side fail); a message of the protocol's shape, which would be
// taken as a request, a response or a handshake.
function wireMessage(msg) {
  const wire = jsonCopy(msg);
  if (isObject(wire) && typeof wire.cmd === 'string' && wire.cmd.length > 5 && wire.cmd.startsWith('NODE_')) {
    throw makeError("a cmd starting with NODE_ is Node's own", 'ERR_RESERVED_MESSAGE');
  }
  if (isHandshake(wire) || isRequestLike(wire)) {
    throw makeError('it has the shape of an ipc-request protocol message', 'ERR_RESERVED_MESSAGE');
  }
  return wire;
}

// A request's or an answer's payload as JSON will carry it, serialized
// here, once, into a copy of our own; throws if JSON cannot hold it. JSON
// drops a key whose value serializes to nothing (a function, a symbol, a
// toJSON that gives undefined), and a message without its PAYLOAD is no
// longer a request or a response: its caller would wait for ever. Judged
// on the value itself, a toJSON or a getter could answer otherwise when
// Node serializes it, and while a handle sent with proc.send waits for its
// ACK, Node serializes queued messages later, where a failure is thrown
// inside Node: the copy is plain data. (A toJSON(key) gets "" here.) The
// price: every payload is serialized twice and parsed once.
function payloadValue(v) {
  return v === undefined ? null : jsonCopy(v);
}

// `v` serialized once and parsed back: plain data, as the peer will see
// it. Throws if JSON cannot hold it, or if it serializes to nothing.
function jsonCopy(v) {
  const text = JSON.stringify(v);
  if (text === undefined) throw makeError('JSON cannot hold this value: it serializes to nothing', 'ERR_UNSERIALIZABLE');
  return JSON.parse(text);
}

// JSON.stringify for a value JSON.parse made (a message Node read) that
// is nested too deep for JSON.stringify's recursion (V8 parses deeper than
// it writes): the same text, written with a stack of its own. Such a value
// holds only plain objects, arrays, strings, finite numbers (or Infinity,
// from a number too large for a double, written as null, as
// JSON.stringify writes it), booleans and null.
function stringifyDeep(value) {
  const parts = [];
  const open = []; // the arrays and objects being written: {v, keys, i}
  let v = value;
  for (;;) {
    if (v !== null && typeof v === 'object') {
      const keys = Array.isArray(v) ? null : Object.keys(v);
      parts.push(keys ? '{' : '[');
      open.push({ v, keys, i: 0 });
    } else {
      parts.push(JSON.stringify(v) ?? 'null');
    }
    // The next value to write, closing what is done.
    for (;;) {
      const top = open[open.length - 1];
      if (top === undefined) return parts.join('');
      const { v: container, keys } = top;
      if (top.i < (keys ? keys.length : container.length)) {
        if (top.i > 0) parts.push(',');
        if (keys) {
          const key = keys[top.i++];
          parts.push(JSON.stringify(key), ':');
          v = container[key];
        } else {
          v = container[top.i++];
        }
        break;
      }
      parts.push(keys ? '}' : ']');
      open.pop();
    }
  }
}

// A timeout option as ms: what Number() makes of it, as setTimeout does
// ("100" from an env var); undefined (none) if unset, or longer than
// setTimeout can wait (2^31 - 1 ms, about 24.8 days: it would fire after
// 1 ms), Infinity included. Throws a TypeError or a RangeError for what is
// not 0 or more ms.
function timeoutOption(value, name) {
  if (value == null) return undefined;
  // Number() reads these as 0 (an env var set but empty would fail every
  // handshake at once): refused.
  if (typeof value === 'boolean' || Array.isArray(value) || (typeof value === 'string' && value.trim() === '')) {
    throw Object.assign(new TypeError(`${name} is not a number: ${describe(JSON.stringify(value))}`),
      { code: 'ERR_INVALID_ARG_TYPE' });
  }
  let ms;
  try {
    ms = Number(value);
  } catch (err) { // a Symbol, a valueOf that throws
    throw Object.assign(new TypeError(`${name} is not a number: ${describe(err)}`), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  if (Number.isNaN(ms) || ms < 0) {
    throw Object.assign(new RangeError(`${name} must be 0 or more ms: ${describe(value)}`), { code: 'ERR_OUT_OF_RANGE' });
  }
  return ms > 2147483647 ? undefined : ms;
}

function makeError(message, code, name = 'Error') {
  const e = new Error(message);
  e.name = name;
  e.code = code;
  return e;
}

// What each channel's first setup advertised (see setupIpcSession).
const advertisedOn = new WeakMap(); // proc -> its extensions, as sorted JSON

// Plain messages kept while nobody listens, at most: so many, and their
// JSON text so long (kept as that text, as the Rust side keeps them; one
// longer message gets in alone).
const EARLY_MESSAGES = 1024;
const EARLY_BYTES = 64 * 1024 * 1024;

function setupIpcSession(proc, handler, options) {
  if (!proc || typeof proc.send !== 'function') {
    return Promise.reject(makeError('no IPC channel on this process', 'ERR_NO_IPC'));
  }
  if (proc.connected === false) {
    // Disconnected (or disconnecting): its 'disconnect' may be gone
    // already, and nothing would end the handshake but its timeout.
    return Promise.reject(makeError('IPC channel closed', 'ERR_IPC_CHANNEL_CLOSED'));
  }
  // Whatever is wrong with the options rejects, and never throws: a caller
  // may only have chained .catch (options null, a getter that throws).
  let handshakeTimeoutMs, closeTimeoutMs, firstListener, ours, advertised;
  try {
    const { extensions, onMessage, handshakeTimeoutMs: handshakeMs, closeTimeoutMs: closeMs } = options ?? {};
    // null, as unset: the default.
    handshakeTimeoutMs = timeoutOption(handshakeMs ?? 10000, 'handshakeTimeoutMs');
    closeTimeoutMs = timeoutOption(closeMs ?? 10000, 'closeTimeoutMs');
    if (extensions != null && !(Array.isArray(extensions) && extensions.every((name) => typeof name === 'string'))) {
      throw new TypeError('extensions must be an array of names');
    }
    ours = [...(extensions ?? ['error', 'cancel'])];
    if (onMessage != null && typeof onMessage !== 'function') throw new TypeError('onMessage must be a function');
    firstListener = onMessage;
    // A try that failed leaves its handshake request in the channel when
    // the peer starts late, and the peer may take our extensions from that
    // message, not from a later one (the Rust side takes the first it
    // reads). A try with other extensions would then speak another
    // protocol than the peer: a failure would reach the caller as an
    // answer.
    advertised = JSON.stringify([...new Set(ours)].sort());
  } catch (err) {
    return Promise.reject(err);
  }
  const before = advertisedOn.get(proc);
  if (before !== undefined && before !== advertised) {
    return Promise.reject(new RangeError(
      `extensions ${advertised} differ from ${before}, which an earlier setup advertised on this channel`,
    ));
  }
  advertisedOn.set(proc, advertised);
  const v1 = ours.length === 0; // plain ipc-request 1.0 mode
  const ourUid = `${process.pid}-${crypto.randomUUID()}`; // fresh handshake UID

  let established = false;
  let closed = false;
  let peerExtensions = [];
  let nextId = 0;
  const pending = new Map(); // our request id -> {resolve, reject, timer}
  const running = new Map(); // peer request id -> ctx state of the running handler
  const plainListeners = new Set();
  // Plain messages that came while nobody listened, for the next
  // listener: the peer may send them as soon as it is set up, in the same
  // read as its handshake, before our caller could subscribe; or between
  // one listener and the next.
  const unheard = []; // their JSON text: parsed objects can be many times its size
  let unheardBytes = 0; // their length, in UTF-16 units
  let handingUnheard = false;
  let droppedMessages = 0;
  if (typeof firstListener === 'function') plainListeners.add(firstListener);
  let settleHandshake; // {resolve, reject} while the handshake runs
  let writesInFlight = 0; // sends handed to Node whose callback has not come
  let writesDone = null; // called when writesInFlight drops to 0, while close() waits
  // The rejects of session.send() calls whose write callback has not
  // come: failed if close() disconnects before it does (Node would report
  // them written all the same: see disconnect below).
  const sendsInFlight = new Set();
  let disconnected; // the promise close() returns
  let disconnectSeen = false; // proc's 'disconnect' has fired
  let onDisconnected = null; // close()'s resolve, called from our 'disconnect' listener
  let handshakeFailed = false; // see failHandshake: our listeners are off proc

  const uses = (name) => ours.includes(name) && peerExtensions.includes(name);

  // process.send with a callback, so that a closed channel is reported to the
  // callback instead of as an 'error' event (or a throw). `cb(err, unsent)`:
  // `unsent` is true when nothing went out because JSON cannot hold the
  // message (a BigInt, a cycle: Node's stringify throws before writing).
  function write(msg, cb = () => {}) {
    if (closed || !proc.connected) return cb(makeError('IPC channel closed', 'ERR_IPC_CHANNEL_CLOSED'), false);
    writesInFlight++;
    const settled = () => {
      if (--writesInFlight === 0 && writesDone) writesDone();
    };
    try {
      proc.send(msg, (err) => { settled(); cb(err || null, false); });
    } catch (err) {
      settled();
      cb(err, true);
    }
  }

  // proc.disconnect(), and a nudge for Node's lost wake-up.
  function disconnect() {
    if (!proc.connected) return;
    proc.disconnect();
    wakeDisconnect();
  }

  // Node's _disconnect (lib/internal/child_process.js), if a message is
  // half read, waits for that message's 'message' or 'internalMessage'
  // event; but it has just dropped the channel, and from then on Node drops
  // every message it reads, so the event never comes: no 'disconnect', the
  // channel open for good. An 'internalMessage' of our own ends that wait;
  // Node's own listener ignores one that is not a NODE_HANDLE (N)ACK or
  // NODE_HANDLE. Harmless when nothing waits.
  function wakeDisconnect() {
    if (proc.channel == null) proc.emit('internalMessage', { cmd: 'IPC_SESSION_DISCONNECTED' });
  }

  function handshakeMessage(type, uid) {
    const m = { [HS_UID]: uid, [HS_TYPE]: type };
    if (!v1) m[EXTENSIONS] = ours; // 1.0 mode: no EXTENSIONS key at all
    return m;
  }

  function recordPeerExtensions(m) {
    if (established) return; // negotiated once, at establishment
    const ext = m[EXTENSIONS];
    peerExtensions = Array.isArray(ext) ? ext.filter((x) => typeof x === 'string') : [];
  }

  function establish() {
    if (established || closed) return;
    established = true;
    settleHandshake.resolve();
  }

  function onHandshake(m) {
    if (m[HS_TYPE] === HS_REQUEST) {
      // 2.1 step 3: answer every handshake request of the peer (also after
      // establishment). Step 4b: established once our answer is written.
      recordPeerExtensions(m);
      write(handshakeMessage(HS_RESPONSE, m[HS_UID]), (err) => { if (!err) establish(); });
    } else if (m[HS_TYPE] === HS_RESPONSE && m[HS_UID] === ourUid) {
      // Step 4a: the answer to our own handshake request.
      recordPeerExtensions(m);
      establish();
    }
  }

  function onRequest(id, payload) {
    let cancelled = false;
    const cancelFns = [];
    const state = {
      cancel() {
        if (cancelled) return;
        cancelled = true;
        for (const fn of cancelFns.splice(0)) { try { fn(); } catch (_) { /* ignore */ } }
      },
    };
    const ctx = {
      get cancelled() { return cancelled; },
      onCancel(fn) { if (cancelled) fn(); else cancelFns.push(fn); },
      session, // requests only come once setupIpcSession has made it
    };
    running.set(id, state);
    // An answer JSON cannot hold is not written: the caller gets an error in
    // its place (without the data that may be what failed), as from the
    // Rust side, instead of waiting for ever.
    const notSentError = (err) => ({ name: 'ResponseNotSent', message: `the answer could not be sent: ${describe(err)}` });
    const failure = (err) => {
      let wire;
      try {
        wire = payloadValue(errorToWire(err)); // a copy, as a payload is (its data may be anything)
      } catch (e) {
        wire = notSentError(e);
      }
      return uses('error')
        ? { [PAYLOAD]: null, [ERROR]: wire } // extension `error`
        : { [PAYLOAD]: wire }; // 1.0 peer: the error object as payload
    };
    const notSent = (err) => failure(notSentError(err));
    const answer = (msg) => {
      if (running.get(id) === state) running.delete(id);
      if (cancelled) return; // cancel: whatever the handler sends later is not written
      write({ [MSG_TYPE]: RESPONSE, [UID]: id, ...msg }, (err, unsent) => {
        if (unsent) write({ [MSG_TYPE]: RESPONSE, [UID]: id, ...notSent(err) });
      });
    };
    Promise.resolve()
      .then(() => handler(payload, ctx))
      .then(
        (value) => {
          let carried;
          try {
            carried = payloadValue(value);
          } catch (err) {
            return answer(notSent(err));
          }
          return answer({ [PAYLOAD]: carried });
        },
        (err) => answer(failure(err)),
      );
  }

  function onResponse(m) {
    const p = pending.get(m[UID]);
    if (!p) return; // unknown, timed out or already answered: dropped
    pending.delete(m[UID]);
    clearTimeout(p.timer);
    if (uses('error') && has(m, ERROR)) p.reject(errorFromWire(m[ERROR]));
    else p.resolve(m[PAYLOAD]);
  }

  // The single 'message' listener: demultiplexes protocol and plain messages.
  function onMessage(m) {
    if (closed) return;
    if (isHandshake(m)) return onHandshake(m);
    if (isRequestLike(m)) {
      const type = m[MSG_TYPE];
      // Requests are served from the start (2.1 step 1), even before we
      // consider ourselves established: the peer may already be.
      if (type === REQUEST) return onRequest(m[UID], m[PAYLOAD]);
      if (type === RESPONSE) return onResponse(m);
      if (type === CANCEL && ours.includes('cancel')) running.get(m[UID])?.cancel();
      return; // CANCEL in 1.0 mode, or an unknown type: ignored
    }
    if (plainListeners.size === 0 || unheard.length > 0) {
      // Kept as text: as parsed objects, messages take many times the
      // memory of their text (about 20 times for a long array of empty
      // ones), and the bound is on the text. One nested deeper than
      // JSON.stringify goes (JSON.parse takes more) is written by a stack
      // of our own. One whose text is longer than a string can be (in V8,
      // 2^29 - 24 characters; written again, a message can grow: 1e20
      // comes back as 21 digits) is dropped, as one past the bound is,
      // without a second try: that would build the text in pieces first
      // (3 GB for a 122 MB line of 1e20s, and a crash in a 1 GB heap).
      let kept = null;
      try {
        kept = JSON.stringify(m);
      } catch (err) {
        if (err instanceof RangeError && /call stack/i.test(err.message)) {
          try {
            kept = stringifyDeep(m);
          } catch (_) { /* too long for a string after all: dropped below */ }
        }
      }
      const size = kept === null ? 0 : kept.length;
      // As the Rust side: one message larger than the bound gets in alone.
      const fits = kept !== null && (unheard.length === 0 || unheardBytes + size <= EARLY_BYTES);
      if (unheard.length < EARLY_MESSAGES && fits) {
        unheard.push([kept, size]);
        unheardBytes += size;
      } else {
        droppedMessages++;
      }
      handUnheardSoon();
      return;
    }
    deliver(m);
  }

  // To every listener (a copy of the set: a listener that subscribes
  // another does not give it this message). A listener that throws does
  // not keep the message from the others, nor the messages after it: its
  // error is thrown afterwards, each on its own tick, as an uncaught one
  // (which ends the process unless it has an 'uncaughtException' handler;
  // messages of the same read may reach listeners first).
  function deliver(m) {
    for (const fn of [...plainListeners]) {
      try {
        fn(m);
      } catch (err) {
        process.nextTick(() => { throw err; });
      }
    }
  }

  // The messages that waited, to the listeners, in order, on a microtask
  // (a listener gets them after onMessage returns; messages that come
  // meanwhile join the queue). One at a time: if no listener is left (one
  // that unsubscribed at once), the rest wait for the next.
  function handUnheardSoon() {
    if (handingUnheard || unheard.length === 0 || plainListeners.size === 0) return;
    handingUnheard = true;
    queueMicrotask(() => {
      handingUnheard = false;
      while (unheard.length > 0 && plainListeners.size > 0) {
        const [kept, size] = unheard.shift();
        unheardBytes -= size;
        deliver(JSON.parse(kept));
      }
    });
  }

  function close(reason) {
    if (closed) return;
    closed = true;
    const err = makeError(`IPC channel closed (${reason})`, 'ERR_IPC_CHANNEL_CLOSED');
    if (!established) settleHandshake.reject(err);
    for (const p of pending.values()) { clearTimeout(p.timer); p.reject(err); }
    pending.clear();
    for (const s of running.values()) s.cancel(); // nobody can receive the answers
    running.clear();
    proc.removeListener('message', onMessage);
  }

  const session = {
    get peerExtensions() { return [...peerExtensions]; },
    get extensions() { return ours.filter((x) => peerExtensions.includes(x)); },
    uses,
    request(payload, options) {
      return new Promise((resolve, reject) => {
        if (closed) return reject(makeError('IPC channel closed', 'ERR_IPC_CHANNEL_CLOSED'));
        // Checked before anything is registered or sent (see timeoutOption).
        let timeoutMs;
        try {
          timeoutMs = timeoutOption(options?.timeoutMs, 'timeoutMs');
        } catch (err) {
          return reject(err);
        }
        try {
          payload = payloadValue(payload);
        } catch (err) {
          return reject(err);
        }
        const id = String(++nextId);
        const p = { resolve, reject, timer: null };
        pending.set(id, p);
        if (timeoutMs != null) {
          p.timer = setTimeout(() => {
            if (pending.get(id) !== p) return;
            pending.delete(id);
            reject(makeError(`request ${id} timed out after ${timeoutMs} ms`, 'ETIMEDOUT', 'TimeoutError'));
            // Extension `cancel`: tell the peer we stopped waiting.
            if (uses('cancel')) write({ [MSG_TYPE]: CANCEL, [UID]: id, [PAYLOAD]: null });
          }, timeoutMs);
        }
        write({ [MSG_TYPE]: REQUEST, [UID]: id, [PAYLOAD]: payload }, (err) => {
          if (err && pending.get(id) === p) { pending.delete(id); clearTimeout(p.timer); reject(err); }
        });
      });
    },
    send(msg) {
      let wire;
      try {
        wire = wireMessage(msg);
      } catch (err) {
        return Promise.reject(err);
      }
      return new Promise((resolve, reject) => {
        sendsInFlight.add(reject);
        write(wire, (err) => {
          sendsInFlight.delete(reject);
          if (err) reject(err); else resolve();
        });
      });
    },
    get droppedMessages() { return droppedMessages; },
    onMessage(fn) {
      // Not kept: it would throw at the next message, from Node's reader.
      if (typeof fn !== 'function') throw new TypeError('onMessage takes a function');
      plainListeners.add(fn);
      handUnheardSoon();
      return () => plainListeners.delete(fn);
    },
    close() {
      if (disconnected) return disconnected;
      close('closed locally'); // pending requests fail; nothing more is sent
      disconnected = new Promise((resolve) => {
        if (disconnectSeen) return resolve();
        // Not a 'disconnect' listener of its own: one added while the
        // event is being emitted (close() called from a listener of the
        // program's, added before ours) would not be called.
        onDisconnected = resolve;
        // A session whose handshake failed never had the channel (a
        // handler can still close through ctx.session): it leaves it to
        // the caller, who may have set up another session on it since.
        if (handshakeFailed) return resolve();
        if (!proc.connected) {
          // Disconnecting already (by the program's own proc.disconnect()):
          // wake Node's wait if it is the lost one.
          wakeDisconnect();
          return;
        }
        const timer = closeTimeoutMs === undefined ? null : setTimeout(() => {
          const err = makeError(`IPC channel closed before this was written (closeTimeoutMs ${closeTimeoutMs})`, 'ERR_IPC_CHANNEL_CLOSED');
          for (const reject of sendsInFlight) reject(err);
          sendsInFlight.clear();
          disconnect();
        }, closeTimeoutMs);
        timer?.unref();
        writesDone = () => { clearTimeout(timer); disconnect(); };
        if (writesInFlight === 0) writesDone();
      });
      return disconnected;
    },
  };

  // The handshake failed with `err`: nothing of this session stays on
  // proc, so a caller may try again (and a handler's ctx.session.close()
  // leaves the channel be).
  function failHandshake(err, reason) {
    handshakeFailed = true;
    proc.removeListener('disconnect', onDisconnect);
    proc.removeListener('exit', onExit);
    settleHandshake.reject(err);
    // Fails what handlers asked the peer meanwhile (requests are served
    // before the handshake ends), and takes our 'message' listener off.
    close(reason);
  }
  // The channel or the peer is gone: before the handshake ends, it fails.
  const channelGone = (reason) => {
    if (established || closed) return close(reason);
    failHandshake(makeError(`IPC channel closed (${reason})`, 'ERR_IPC_CHANNEL_CLOSED'), reason);
  };
  const onDisconnect = () => {
    disconnectSeen = true;
    channelGone('disconnected');
    onDisconnected?.();
  };
  // A child that exited: give the channel a moment to deliver what is
  // still in the socket (its 'disconnect' normally follows), then give up.
  const onExit = () => setTimeout(() => channelGone('peer exited'), 200).unref();

  return new Promise((resolve, reject) => {
    const timer = handshakeTimeoutMs === undefined ? null : setTimeout(() => {
      const err = makeError(`handshake timed out after ${handshakeTimeoutMs} ms`, 'ETIMEDOUT', 'TimeoutError');
      failHandshake(err, 'handshake timed out');
    }, handshakeTimeoutMs);
    settleHandshake = {
      resolve() { clearTimeout(timer); resolve(session); },
      reject(err) { clearTimeout(timer); reject(err); },
    };
    // 2.1 step 1: listen first; then step 2: announce ourselves.
    proc.on('message', onMessage);
    proc.once('disconnect', onDisconnect);
    if (proc !== process) proc.once('exit', onExit);
    write(handshakeMessage(HS_REQUEST, ourUid), (err) => {
      if (err && !established && !closed) channelGone(`handshake not sent: ${err.message}`);
    });
  });
}

module.exports = { setupIpcSession, errorToWire, KEYS: { HS_UID, HS_TYPE, HS_REQUEST, HS_RESPONSE, MSG_TYPE, UID, PAYLOAD, REQUEST, RESPONSE, CANCEL, EXTENSIONS, ERROR } };
