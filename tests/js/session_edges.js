'use strict';
// Edge cases of examples/node/ipc_session.js between two Node processes,
// each found by a review: run by tests/processes/js_session.rs (`node
// tests/js/session_edges.js`), it forks itself as the child, prints `PASS
// <name>` or `FAIL <name>: <why>` per case and exits 0 only if all passed.

const { fork } = require('child_process');
const { EventEmitter } = require('events');
const path = require('path');
const { setupIpcSession, errorToWire, KEYS: K } = require(path.join(__dirname, '..', '..', 'examples', 'node', 'ipc_session.js'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const within = (ms, promise, what) => Promise.race([
  promise,
  sleep(ms).then(() => { throw new Error(`${what}: not within ${ms} ms`); }),
]);

// ---------------------------------------------------------------- child

async function child(mode) {
  if (mode === 'silent') { // reads, but never sets up a session
    process.on('message', () => {});
    return;
  }
  if (mode === 'lingers') { // lives on without its channel, until killed
    setInterval(() => {}, 1000);
    return;
  }
  if (mode === 'asks-without-handshake') {
    // Answers our handshake with a request, and never with its answer.
    const { KEYS: K } = require(path.join(__dirname, '..', '..', 'examples', 'node', 'ipc_session.js'));
    process.on('message', (m) => {
      if (m[K.HS_TYPE] === K.HS_REQUEST) process.send({ [K.MSG_TYPE]: K.REQUEST, [K.UID]: '1', [K.PAYLOAD]: 'hi' });
    });
    process.send('listening');
    return;
  }
  if (mode === 'close-soon') {
    const s = await setupIpcSession(process, (p) => p);
    setTimeout(() => s.close(), 50);
    return;
  }
  if (mode === 'listeners') {
    // Three listeners, subscribed once asked (after the messages came) or
    // at once; the first two throw on their first message.
    const got = [];
    const errors = [];
    let s;
    const throwsOnce = (name) => {
      let thrown = false;
      return () => { if (!thrown) { thrown = true; throw new Error(`${name} failed once`); } };
    };
    const subscribe = () => {
      s.onMessage(throwsOnce('A'));
      s.onMessage(throwsOnce('B'));
      s.onMessage((m) => got.push(m));
    };
    // Each thrown error comes here, on its own.
    process.on('uncaughtException', (err) => errors.push(err.message));
    s = await setupIpcSession(process, async (p) => {
      if (p === 'subscribe') { subscribe(); return 'subscribed'; }
      if (p === 'got') { await sleep(100); return { got, errors }; }
      return null;
    });
    if (process.argv[4] === 'early') subscribe();
  }
}

// ---------------------------------------------------------------- parent

// A stand-in for a child process that answers our handshake (with both
// extensions); `onSend(message, callback)` does the rest of each send.
function standIn(onSend) {
  const proc = new EventEmitter();
  proc.connected = true;
  proc.send = (m, cb) => {
    if (m[K.HS_TYPE] === K.HS_REQUEST) {
      const answer = { [K.HS_UID]: m[K.HS_UID], [K.HS_TYPE]: K.HS_RESPONSE, [K.EXTENSIONS]: ['error', 'cancel'] };
      setImmediate(() => proc.emit('message', answer));
    }
    return onSend(m, cb);
  };
  return proc;
}
const writes = (m, cb) => { setImmediate(() => cb?.(null)); return true; };

const cases = {
  // close() called from a 'disconnect' listener the program added before
  // the session's own settles (it once waited for ever).
  async close_from_an_earlier_disconnect_listener() {
    const c = fork(__filename, ['child', 'close-soon']);
    let session;
    const closed = new Promise((resolve) => c.on('disconnect', () => resolve(session.close())));
    session = await setupIpcSession(c, (p) => p);
    await within(5000, closed, 'close()');
  },

  // A listener that throws keeps no message from the other listeners, nor
  // the messages after it, whether they were handed over from the buffer
  // (subscribed late) or straight (subscribed early).
  async a_throwing_listener_keeps_nothing_from_the_others() {
    for (const when of ['late', 'early']) {
      const c = fork(__filename, ['child', 'listeners', when]);
      const session = await setupIpcSession(c, (p) => p);
      if (when === 'early') await session.request('got'); // it has subscribed
      for (const seq of [1, 2, 3]) await session.send({ seq });
      if (when === 'late') { await sleep(100); await session.request('subscribe'); }
      const { got, errors } = await session.request('got');
      const seqs = JSON.stringify(got.map((m) => m.seq));
      if (seqs !== '[1,2,3]') throw new Error(`${when}: the other listener got ${seqs}`);
      const thrown = JSON.stringify(errors.sort());
      if (thrown !== '["A failed once","B failed once"]') throw new Error(`${when}: errors thrown: ${thrown}`);
      await session.close();
    }
  },

  // A handshake that timed out leaves no listener on the child process, so
  // that a caller can try again and again (a dozen tries once passed
  // Node's limit of ten 'disconnect' listeners, with a warning).
  async a_handshake_timeout_leaves_no_listener_behind() {
    const c = fork(__filename, ['child', 'silent']);
    const events = ['message', 'disconnect', 'exit'];
    const counts = () => JSON.stringify(events.map((e) => c.listenerCount(e)));
    const before = counts();
    const warnings = [];
    process.on('warning', (w) => warnings.push(w.name));
    for (let i = 0; i < 12; i++) {
      const err = await setupIpcSession(c, null, { handshakeTimeoutMs: 10 }).then(() => null, (e) => e);
      if (err?.code !== 'ETIMEDOUT') throw new Error(`try ${i}: ${err}`);
    }
    await sleep(10); // a warning is emitted on the next tick
    const after = counts();
    c.kill();
    if (after !== before) throw new Error(`listeners (${events}) ${before} before, ${after} after`);
    if (warnings.length > 0) throw new Error(`warnings: ${warnings}`);
  },

  // A try that timed out left its handshake request in the channel, and a
  // peer that starts late takes our extensions from it (the Rust side
  // takes the first it reads): a second try that advertised others spoke
  // another protocol than the peer, and a failure of the peer's handler
  // reached our caller as an answer. A try with other extensions is
  // refused; one with the same (in any order) goes ahead.
  async a_second_try_must_advertise_what_the_first_did() {
    const c = fork(__filename, ['child', 'silent']);
    const fails = (extensions) => setupIpcSession(c, null, { extensions, handshakeTimeoutMs: 10 })
      .then(() => 'established', (e) => `${e.name} ${e.code ?? ''}`.trim());
    const got = [
      await fails(['error', 'cancel']),
      await fails([]),
      await fails(['error']),
      await fails(null), // the default: both
      await fails(['cancel', 'error', 'cancel']),
    ];
    const other = fork(__filename, ['child', 'silent']);
    got.push(await setupIpcSession(other, null, { extensions: [], handshakeTimeoutMs: 10 })
      .then(() => 'established', (e) => e.code)); // another channel: its own first
    c.kill();
    other.kill();
    const want = ['TimeoutError ETIMEDOUT', 'RangeError', 'RangeError', 'TimeoutError ETIMEDOUT', 'TimeoutError ETIMEDOUT', 'ETIMEDOUT'];
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(JSON.stringify(got));
  },

  // A handler runs before the handshake ends; if the handshake then times
  // out, what it asked the peer fails, and its ctx.session.close() settles
  // (it waited for ever once the timeout had taken the session's
  // 'disconnect' listener off) and leaves the channel to the caller, who
  // may have set up another session on it.
  async a_handler_outlives_a_handshake_timeout() {
    const c = fork(__filename, ['child', 'asks-without-handshake']);
    await new Promise((resolve) => c.once('message', resolve)); // it listens
    let timedOut;
    const failed = new Promise((resolve) => { timedOut = resolve; });
    let handler;
    const outcome = new Promise((resolve) => { handler = resolve; });
    const setup = setupIpcSession(c, async (p, ctx) => {
      const asked = ctx.session.request('x').then(() => 'answered', (e) => e.code);
      await failed;
      const closed = within(3000, ctx.session.close(), 'ctx.session.close()').then(() => 'settled', (e) => e.message);
      handler({ asked: await asked, closed: await closed, connected: c.connected });
    }, { handshakeTimeoutMs: 3000 }); // its request comes well before
    const err = await setup.then(() => null, (e) => e);
    timedOut();
    if (err?.code !== 'ETIMEDOUT') throw new Error(`setup: ${err}`);
    const got = JSON.stringify(await outcome);
    c.kill();
    if (got !== '{"asked":"ERR_IPC_CHANNEL_CLOSED","closed":"settled","connected":true}') throw new Error(got);
  },

  // A plain message no one listens for that cannot be kept as text (here
  // one whose every serialization throws, as a text longer than a string
  // can be does) is dropped and counted; it once killed the process. On a
  // stand-in for a child process: Node itself only hands over what
  // JSON.parse made, and such a text would take gigabytes to send.
  async a_message_that_cannot_be_written_again_is_dropped_not_fatal() {
    const proc = standIn(writes);
    const session = await setupIpcSession(proc, null);
    proc.emit('message', { get text() { throw new RangeError('Invalid string length'); } });
    // Not tried again by a stack of our own, which would build a text too
    // long for a string in pieces first: only a stack overflow is (here
    // the second try would write this one, not calling toJSON).
    proc.emit('message', { toJSON() { throw new RangeError('Invalid string length'); } });
    proc.emit('message', { seq: 1 });
    const got = await new Promise((resolve) => session.onMessage(resolve));
    if (session.droppedMessages !== 2) throw new Error(`dropped: ${session.droppedMessages}`);
    if (got.seq !== 1) throw new Error(`got ${JSON.stringify(got)}`);
  },

  // Timeouts Number() would read as 0 are refused; null is the default.
  async timeout_options_are_numbers() {
    for (const bad of ['', ' ', false, []]) {
      const err = await setupIpcSession(process.send ? process : { send() {} }, null, { handshakeTimeoutMs: bad })
        .then(() => null, (e) => e);
      if (!(err instanceof TypeError)) throw new Error(`${JSON.stringify(bad)}: ${err}`);
    }
    const c = fork(__filename, ['child', 'close-soon']);
    await setupIpcSession(c, (p) => p, { handshakeTimeoutMs: null, closeTimeoutMs: null });
  },

  // Options it cannot take reject setup, and never throw from the call (a
  // caller may only have chained .catch): options it read outside its
  // try once threw (a getter, a name JSON cannot hold), and a listener
  // that is no function was kept, to throw at the next message from
  // Node's reader.
  async bad_options_reject_and_never_throw() {
    const cycle = [];
    cycle.push(cycle);
    const bad = {
      getter: { get extensions() { throw new Error('boom'); } },
      bigint: { extensions: [1n] },
      symbol: { extensions: [Symbol('a')] },
      cycle: { extensions: [cycle] },
      number: { extensions: [1, 'cancel'] },
      listener: { onMessage: 'not a function' },
    };
    const got = {};
    for (const [name, options] of Object.entries(bad)) {
      try {
        got[name] = await setupIpcSession(standIn(writes), null, options).then(() => 'set up', (e) => e.name);
      } catch (e) {
        got[name] = `threw ${e.name}`;
      }
    }
    const want = { getter: 'Error', bigint: 'TypeError', symbol: 'TypeError', cycle: 'TypeError', number: 'TypeError', listener: 'TypeError' };
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(JSON.stringify(got));
    const session = await setupIpcSession(standIn(writes), null);
    let thrown;
    try { session.onMessage('not a function'); } catch (e) { thrown = e.name; }
    if (thrown !== 'TypeError') throw new Error(`session.onMessage of a string: ${thrown ?? 'kept'}`);
  },

  // A channel already closed fails setup at once, as does a handshake whose
  // write fails: both once waited out the handshake's timeout (with none,
  // for ever).
  async setup_on_a_closed_channel_fails_at_once() {
    const c = fork(__filename, ['child', 'lingers']); // its exit would end the wait too
    await new Promise((resolve) => { c.once('disconnect', resolve); c.disconnect(); });
    const closed = setupIpcSession(c, null, { handshakeTimeoutMs: 20000 }).then(() => null, (e) => e);
    const err = await within(2000, closed, 'setup on a closed channel').finally(() => c.kill());
    if (err?.code !== 'ERR_IPC_CHANNEL_CLOSED') throw new Error(`closed channel: ${err}`);
    const failing = new EventEmitter();
    failing.connected = true;
    failing.send = (m, cb) => { setImmediate(() => cb?.(new Error('EPIPE'))); return false; };
    const notSent = setupIpcSession(failing, null, { handshakeTimeoutMs: 20000 }).then(() => null, (e) => e);
    const err2 = await within(2000, notSent, 'setup whose handshake is not written');
    if (err2?.code !== 'ERR_IPC_CHANNEL_CLOSED') throw new Error(`handshake not written: ${err2}`);
    const left = ['message', 'disconnect', 'exit'].map((e) => failing.listenerCount(e));
    if (left.some((n) => n > 0)) throw new Error(`listeners left (message, disconnect, exit): ${left}`);
  },

  // A peer that exits, or a channel that closes, while the handshake runs
  // fails setup as a timeout does: nothing of the session left on proc
  // (after an exit its 'disconnect' listener stayed, and a handler's
  // ctx.session.close() could disconnect a later session's channel).
  async a_peer_gone_during_the_handshake_leaves_no_listener_behind() {
    for (const gone of ['exit', 'disconnect']) {
      const proc = new EventEmitter();
      proc.connected = true;
      proc.send = (m, cb) => { setImmediate(() => cb?.(null)); return true; }; // never answers
      const setup = setupIpcSession(proc, null, { handshakeTimeoutMs: 20000 }).then(() => null, (e) => e);
      await sleep(10);
      if (gone === 'disconnect') proc.connected = false;
      proc.emit(gone);
      const err = await within(2000, setup, `setup after '${gone}'`);
      if (err?.code !== 'ERR_IPC_CHANNEL_CLOSED') throw new Error(`${gone}: ${err}`);
      const left = ['message', 'disconnect', 'exit'].map((e) => proc.listenerCount(e));
      if (left.some((n) => n > 0)) throw new Error(`${gone}: listeners left (message, disconnect, exit): ${left}`);
    }
  },

  // A send still unwritten when close() gives up waiting (closeTimeoutMs)
  // fails: Node drops it as it disconnects, and its callback says written.
  async a_send_not_written_when_close_gives_up_fails() {
    const stuck = [];
    const proc = standIn((m, cb) => {
      if (m.big) { stuck.push(cb); return false; }
      return writes(m, cb);
    });
    proc.disconnect = () => { // as Node's (18 to 26)
      proc.connected = false;
      for (const cb of stuck.splice(0)) cb(null);
      setImmediate(() => proc.emit('disconnect'));
    };
    const session = await setupIpcSession(proc, null, { closeTimeoutMs: 100 });
    const sent = session.send({ big: true }).then(() => 'said to be written', (e) => e.code);
    await within(3000, session.close(), 'close()');
    const got = await sent;
    if (got !== 'ERR_IPC_CHANNEL_CLOSED') throw new Error(`the send close() gave up on: ${got}`);
  },

  // extensions: null is the default, as null is for the timeouts; a value
  // that is not an array is refused (it once threw out of setup).
  async extensions_null_is_the_default() {
    let hello;
    const proc = standIn((m, cb) => { if (m[K.HS_TYPE] === K.HS_REQUEST) hello = m; return writes(m, cb); });
    const session = await setupIpcSession(proc, null, { extensions: null });
    const sent = JSON.stringify(hello[K.EXTENSIONS]);
    if (sent !== '["error","cancel"]') throw new Error(`advertised ${sent}`);
    if (!session.uses('cancel')) throw new Error(`negotiated ${session.extensions}`);
    const err = await setupIpcSession(standIn(writes), null, { extensions: 'error' }).then(() => null, (e) => e);
    if (!(err instanceof TypeError)) throw new Error(`extensions: 'error': ${err}`);
  },

  // An error from the peer passed on by a handler goes with the peer's
  // stack, not with the one made where its answer was read here.
  async a_passed_on_error_takes_no_stack_of_ours() {
    const proc = standIn((m, cb) => {
      if (m[K.MSG_TYPE] === K.REQUEST) {
        let error = { name: 'TypeError', message: 'm' };
        if (m[K.PAYLOAD] === 'with') error.stack = 'their stack';
        if (m[K.PAYLOAD] === 'a string') error = 'just a string';
        const answer = { [K.MSG_TYPE]: K.RESPONSE, [K.UID]: m[K.UID], [K.PAYLOAD]: null, [K.ERROR]: error };
        setImmediate(() => proc.emit('message', answer));
      }
      return writes(m, cb);
    });
    const session = await setupIpcSession(proc, null);
    for (const which of ['with', 'without', 'a string']) {
      const err = await session.request(which).then(() => null, (e) => e);
      if (typeof err?.stack !== 'string' || err.remote !== true) throw new Error(`${which}: ${err}`);
      const passedOn = errorToWire(err).stack;
      if (passedOn !== (which === 'with' ? 'their stack' : undefined)) {
        throw new Error(`${which} a stack: passed on with ${JSON.stringify(passedOn)}`);
      }
    }
    // A program's Error.prepareStackTrace that throws: the request still
    // fails (it once stayed pending), and once it no longer throws, V8's
    // stack of our frames is not sent on as the peer's either.
    const prepare = Error.prepareStackTrace;
    Error.prepareStackTrace = () => { throw new Error('prepareStackTrace failed'); };
    let err;
    try {
      err = await within(2000, session.request('without').then(() => null, (e) => e), 'a request');
    } finally {
      Error.prepareStackTrace = prepare;
    }
    if (err?.message !== 'm') throw new Error(`with a throwing prepareStackTrace: ${err?.message}`);
    const passedOn = errorToWire(err).stack;
    if (passedOn !== undefined) throw new Error(`after a throwing prepareStackTrace: passed on with ${passedOn}`);
  },
};

async function parent() {
  let failed = 0;
  for (const [name, run] of Object.entries(cases)) {
    try {
      await within(30000, run(), name);
      console.log(`PASS ${name}`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${name}: ${err && err.message}`);
    }
  }
  process.exit(failed ? 1 : 0);
}

if (process.argv[2] === 'child') child(process.argv[3]);
else parent();
