'use strict';
// A scriptable ipc-request peer, used by the Rust integration tests (plain
// Node, no npm). The Rust side implements the same ops: keep names exactly.
//
// ## Ops: request payloads the handler answers
//   {"op":"echo","data":X}                -> X
//   {"op":"sleep","ms":N,"data":X}        -> X, after N ms
//   {"op":"fail","name":S,"message":S,"code":C,"data":D}   (code, data optional)
//        -> the handler fails with an error having those fields: an
//           `_IPC_REQUEST/ERROR` response if `error` was negotiated, else a
//           plain response whose payload is {name, message, stack, code?, data?}
//   {"op":"wait_cancel","key":K}          -> never answers; when a CANCEL for
//                                            it arrives, K is remembered as cancelled
//   {"op":"cancelled","key":K}            -> true as soon as K has been
//                                            cancelled (waits up to 2000 ms), else false
//   {"op":"call","data":X}                -> requests X from the other side, answers
//        {"got": <its response payload>} or {"error": {"name","message","code","data"}}
//   {"op":"call_rethrow","data":X}        -> requests X from the other side and
//        answers its answer; its failure (rethrown) is this handler's
//   {"op":"plain","messages":[...]}       -> sends each element as a plain message,
//                                            in order, then answers their count
//   {"op":"handle","pad":N}               -> sends the plain message {"with":"handle"}
//        (plus "pad": N x's if N is given, so that the message and its
//        handle fill more than one read) together with a handle (a TCP
//        socket connected over 127.0.0.1),
//        answers "sent". Node holds back everything it writes after a handle
//        until the peer answers NODE_HANDLE_ACK or NODE_HANDLE_NACK; on NACK it
//        retransmits the handle (as {"cmd":"NODE_HANDLE","type":"net.Native",
//        ...}) up to 3 more times, so a peer that always NACKs sees 4
//        NODE_HANDLE messages, answers each with a NACK, and only then gets
//        "sent". SentHandleNotReceivedWarning is suppressed.
//   {"op":"raw","text":S}                 -> writes S byte for byte to the channel fd
//        (env PEER_CHANNEL_FD if set, else the channel handle's fd, else 3),
//        then answers "written"
//   {"op":"exit","code":N}                -> process.exit(N) at once, no answer
//   {"op":"plain_exit","messages":[...],"code":N} -> sends the plain messages,
//                                            then process.exit(N), no answer
//   {"op":"pid"}                          -> process.pid
//   {"op":"env","names":[S...]}           -> {S: process.env[S] or null} for each name
//   {"op":"close","after_ms":N}           -> "closing"; session.close() N ms later
//   {"op":"send_then_close","n":N,"size":S} -> sends N plain messages
//        {"seq":i,"pad":S x's} without waiting, answers N, then closes the
//        session (close() writes what was sent first)
//   {"op":"dropped"}                      -> the session's droppedMessages
//   {"op":"heap"}                         -> bytes of the JS heap in use, after
//                                            a full garbage collection
//   {"op":"plain_got","n":N}              -> the plain messages this child's
//        session.onMessage got (subscribed after setup, as documented),
//        once there are N of them (waits up to 2000 ms); an array as
//        {"depth": D}
//   anything else                         -> {"unknown": payload}
//
// ## Command lines
//   node tests/js/peer.js child [--v1] [--no-session] [--exit-before-handshake N]
//                               [--handshake-delay MS] [--close-timeout-ms MS]
//                               [--no-plain-listener]
//     Runs as the child of whoever spawned it with an IPC channel and serves
//     the ops above. --v1: ipc-request 1.0 mode (no EXTENSIONS key, no error /
//     cancel). --no-session: never sets up a session (ignores every message,
//     stays alive until the channel closes). --exit-before-handshake N: exits
//     with code N at once. --handshake-delay MS: waits MS before setting up
//     the session; messages arriving meanwhile (e.g. the peer's first
//     handshake request) are dropped. --close-timeout-ms: the session's
//     closeTimeoutMs. --no-plain-listener: nothing subscribes to plain
//     messages (see the dropped op). Once set up, it stays alive until the
//     channel disconnects, then exits 0. Handshake failure: exit 2.
//
//   node tests/js/peer.js parent [--v1] -- PROGRAM [ARGS...]
//     Spawns PROGRAM with stdio ['inherit','inherit','inherit','ipc'] (the
//     channel is fd 3), answers any request with {"from":"node-parent",
//     "data":payload}, runs the checks below against the child (which serves
//     the ops above) and prints `PASS <name>[ detail]`, `FAIL <name>: <detail>`
//     or `SKIP <name>: <why>` per check, then `DONE <passed>/<total>` (skips
//     not counted). It then disconnects, waits for the child to exit, and
//     exits 0 if all passed, 1 otherwise, 2 if the child could not be spawned
//     or the handshake failed.
//     Checks: handshake, echo, concurrent, out_of_order, callback, plain,
//     error, cancel (what each expects is written next to it below).
//     Checks decide from the negotiated extensions (ours AND the peer's
//     advertised ones, session.peerExtensions), not from the --v1 flag.

const { spawn } = require('child_process');
const assert = require('assert');
const fs = require('fs');
const net = require('net');
const { setupIpcSession, KEYS: K } = require('../../examples/node/ipc_session');

// Node warns when a sent handle was NACKed too often; that is expected here.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  const name = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
  if (name === 'SentHandleNotReceivedWarning' || warning?.name === 'SentHandleNotReceivedWarning') return;
  return emitWarning.call(this, warning, ...rest);
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- child side

function channelFd(proc) {
  if (process.env.PEER_CHANNEL_FD) return Number(process.env.PEER_CHANNEL_FD);
  // Node deletes NODE_CHANNEL_FD from env at startup; the channel handle knows its fd.
  const fd = proc.channel?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : 3;
}

function writeRaw(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err; // the channel fd is non-blocking
    }
  }
}

// A connected net.Socket (not a net.Server): for sockets Node keeps the
// handle after sending and retransmits it on NACK (3 times), so a peer that
// NACKs sees the whole dance. The server and our accepted end are closed at
// once; the sent fd stays a valid (closed-by-peer) socket, which is all a
// handle test needs.
async function connectedSocket() {
  const server = net.createServer((accepted) => accepted.destroy());
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const sock = net.connect(server.address().port, '127.0.0.1');
  sock.on('error', () => {});
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  server.close();
  return sock;
}

function makeOpsHandler(proc, getSession) {
  const cancelledKeys = new Set();
  const cancelWaiters = new Set(); // functions called whenever a key gets cancelled

  return async function handler(p, ctx) {
    const op = p !== null && typeof p === 'object' ? p.op : undefined;
    switch (op) {
      case 'echo':
        return p.data;
      case 'sleep':
        await sleep(Number(p.ms) || 0);
        return p.data;
      case 'fail': {
        const err = new Error(p.message);
        err.name = p.name;
        if (p.code !== undefined) err.code = p.code;
        if (p.data !== undefined) err.data = p.data;
        throw err;
      }
      case 'wait_cancel':
        return new Promise((resolve) => ctx.onCancel(() => {
          cancelledKeys.add(p.key);
          for (const w of cancelWaiters) w();
          resolve(null); // not written: the request was cancelled
        }));
      case 'cancelled':
        if (cancelledKeys.has(p.key)) return true;
        return new Promise((resolve) => {
          const done = (v) => { cancelWaiters.delete(check); clearTimeout(t); resolve(v); };
          const check = () => { if (cancelledKeys.has(p.key)) done(true); };
          const t = setTimeout(() => done(false), 2000);
          cancelWaiters.add(check);
        });
      case 'call_rethrow': // requests X from the other side; its failure is ours
        return ctx.session.request(p.data);
      case 'call': {
        const session = ctx.session; // the handler's own way back to the peer
        try {
          return { got: await session.request(p.data) };
        } catch (e) {
          return { error: { name: e.name, message: e.message, code: e.code, data: e.data } };
        }
      }
      case 'plain': {
        const session = await getSession();
        const msgs = Array.isArray(p.messages) ? p.messages : [];
        for (const m of msgs) session.send(m).catch(() => {});
        return msgs.length;
      }
      case 'handle': {
        const sock = await connectedSocket();
        // Node detaches the fd from `sock` and closes it itself on ACK, or
        // after the last NACK (with the suppressed warning).
        await new Promise((resolve, reject) =>
          proc.send(
            p.pad ? { with: 'handle', pad: 'x'.repeat(p.pad) } : { with: 'handle' },
            sock,
            (err) => (err ? reject(err) : resolve())));
        return 'sent';
      }
      case 'raw':
        writeRaw(channelFd(proc), String(p.text));
        return 'written';
      case 'plain_exit': {
        // Small messages are written to the socket synchronously, so they
        // are in it when the process exits at once, with no answer.
        const session = await getSession();
        for (const m of Array.isArray(p.messages) ? p.messages : []) session.send(m).catch(() => {});
        process.exit(Number(p.code) || 0);
        return undefined; // not reached
      }
      case 'exit':
        process.exit(Number(p.code) || 0);
        return undefined; // not reached
      case 'pid':
        return process.pid;
      case 'bigint': // an answer JSON cannot hold
        return { n: 1n };
      case 'throw_null': // an answer whose serializing throws what is not an Error
        return { toJSON() { throw null; } }; // eslint-disable-line no-throw-literal
      case 'handle_then_bad_error': { // an error JSON cannot hold, queued behind a handle
        // While the handle waits for its ACK, Node queues the answer and
        // serializes it later itself, where a failure would be thrown
        // inside Node: the session must have serialized it first.
        proc.send({ with: 'handle' }, await connectedSocket(), () => {});
        throw Object.assign(new Error('failed'), { data: { n: 1n } });
      }
      case 'function_answer': // an answer JSON would silently drop
        return () => 1;
      case 'flip_answer': { // no toJSON when first asked, one that drops the answer after
        let reads = 0;
        return { get toJSON() { return reads++ ? () => undefined : undefined; } };
      }
      case 'unreadable_error': // a failure whose fields throw when read
        throw { get name() { throw new Error('name getter'); } }; // eslint-disable-line no-throw-literal
      case 'send_reserved': { // what session.send refuses: the codes
        const session = await getSession();
        const tries = [
          { cmd: 'NODE_HANDLE' },
          { [K.MSG_TYPE]: K.REQUEST, [K.UID]: 'x', [K.PAYLOAD]: 1 },
          { [K.HS_UID]: 'x', [K.HS_TYPE]: K.HS_REQUEST },
          // Judged as the peer will parse them: reserved on the wire ...
          { cmd: new String('NODE_HANDLE') }, // eslint-disable-line no-new-wrappers
          { toJSON: () => ({ [K.MSG_TYPE]: K.REQUEST, [K.UID]: 'x', [K.PAYLOAD]: 1 }) },
          new Proxy({ [K.MSG_TYPE]: K.REQUEST, [K.UID]: 'x', [K.PAYLOAD]: 1 }, { has: () => false }),
          // ... and harmless there (Node's rule needs more than NODE_).
          { cmd: 'NODE_' },
          { [K.MSG_TYPE]: K.REQUEST, [K.UID]: 'x', [K.PAYLOAD]: undefined },
          // Nothing on the wire at all: Node would write the line `undefined`.
          { toJSON: () => undefined },
        ];
        return Promise.all(tries.map((m) => session.send(m).then(() => 'sent', (e) => e.code)));
      }
      case 'env': // the value of each variable named, or null if unset
        return Object.fromEntries((p.names || []).map((n) => [n, process.env[n] ?? null]));
      case 'close': {
        const session = await getSession();
        setTimeout(() => session.close(), Number(p.after_ms) || 0);
        return 'closing';
      }
      case 'send_then_close': {
        const session = await getSession();
        const pad = 'x'.repeat(Number(p.size) || 0);
        for (let i = 0; i < p.n; i++) session.send({ seq: i, pad }).catch(() => {});
        // After the answer is handed to Node (a microtask from here).
        setImmediate(() => session.close());
        return p.n;
      }
      case 'dropped': // plain messages the session dropped, nobody listening
        return (await getSession()).droppedMessages;
      case 'heap': {
        // gc() without node's --expose-gc flag on the command line.
        require('v8').setFlagsFromString('--expose-gc');
        require('vm').runInNewContext('gc')();
        return process.memoryUsage().heapUsed;
      }
      case 'plain_got': {
        const deadline = Date.now() + 2000;
        while (plainReceived.length < p.n && Date.now() < deadline) await sleep(10);
        // An array as its depth: one too deep for JSON.stringify could not
        // be answered.
        const depth = (a) => { let d = 0; while (Array.isArray(a)) { d++; a = a[0]; } return d; };
        return plainReceived.map((m) => (Array.isArray(m) ? { depth: depth(m) } : m));
      }
      default:
        return { unknown: p };
    }
  };
}

// What the child's session.onMessage got (the first 10,000).
const plainReceived = [];

async function runChild(args) {
  if (!process.send) {
    console.error('peer.js child: no IPC channel (spawn me with an "ipc" stdio entry)');
    process.exit(2);
  }
  const flag = (name) => args.includes(name);
  const value = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };

  if (value('--exit-before-handshake') !== undefined) process.exit(Number(value('--exit-before-handshake')));
  process.once('disconnect', () => process.exit(0));
  if (flag('--no-session')) {
    process.on('message', () => {}); // keeps us alive until the channel closes
    return;
  }
  const delay = Number(value('--handshake-delay') || 0);
  if (delay > 0) {
    const drop = () => {}; // messages before the session exists are lost
    process.on('message', drop);
    await sleep(delay);
    process.removeListener('message', drop);
  }
  const opts = { extensions: flag('--v1') ? [] : ['error', 'cancel'] };
  if (value('--close-timeout-ms') !== undefined) opts.closeTimeoutMs = value('--close-timeout-ms');
  let sessionP = null;
  const handler = makeOpsHandler(process, () => sessionP);
  sessionP = setupIpcSession(process, handler, opts);
  sessionP.catch((err) => {
    console.error(`peer.js child: handshake failed: ${err.message}`);
    process.exit(2);
  });
  // Subscribed once set up, as the header of ipc_session.js documents:
  // what came before waits for a listener. The first takes one message
  // and leaves, as a "first message" helper does; the next subscribes a
  // moment later and takes the rest: none may be lost between them.
  const session = await sessionP.catch(() => null);
  if (!session || flag('--no-plain-listener')) return;
  const keep = (m) => { if (plainReceived.length < 10000) plainReceived.push(m); };
  const first = session.onMessage((m) => {
    first();
    keep(m);
    setImmediate(() => session.onMessage(keep));
  });
}

// --------------------------------------------------------------- parent side

async function runParent(args) {
  const sep = args.indexOf('--');
  const own = sep >= 0 ? args.slice(0, sep) : args;
  const [program, ...programArgs] = sep >= 0 ? args.slice(sep + 1) : [];
  if (!program) {
    console.log('usage: peer.js parent [--v1] -- PROGRAM [ARGS...]');
    process.exit(2);
  }
  const v1 = own.includes('--v1');
  const ourExtensions = v1 ? [] : ['error', 'cancel'];

  const child = spawn(program, programArgs, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const spawned = new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  try {
    await spawned;
  } catch (err) {
    console.log(`FAIL spawn: ${err.message}`);
    process.exit(2);
  }

  const handler = (payload) => ({ from: 'node-parent', data: payload });
  let session;
  try {
    session = await setupIpcSession(child, handler, { extensions: ourExtensions });
  } catch (err) {
    await Promise.race([exited, sleep(500)]); // to say how the child ended, if it did
    const st = child.exitCode !== null || child.signalCode !== null
      ? ` (child exited with ${child.signalCode || child.exitCode})` : '';
    console.log(`FAIL handshake: ${err.message}${st}`);
    if (child.connected) child.disconnect();
    child.kill();
    process.exit(2);
  }

  const negotiated = (name) => ourExtensions.includes(name) && session.peerExtensions.includes(name);
  const T = { timeoutMs: 10000 }; // no check may hang forever
  const req = (payload) => session.request(payload, T);
  let passed = 0;
  let total = 0;
  async function check(name, fn) {
    total++;
    try {
      const detail = await fn();
      passed++;
      console.log(`PASS ${name}${detail ? ' ' + detail : ''}`);
    } catch (err) {
      console.log(`FAIL ${name}: ${(err && err.message) || err}`.replace(/\n/g, ' '));
    }
  }

  total++; passed++;
  console.log(`PASS handshake ${JSON.stringify(session.peerExtensions)}`);

  // One echo, nested object with non-ASCII (and U+2028, which JSON leaves raw).
  await check('echo', async () => {
    const data = { s: 'héllo ☃ 𝄞 \u2028 "q" \\', n: [1, -2.5, null, true, false], o: { a: { b: [{}, []] } } };
    assert.deepStrictEqual(await req({ op: 'echo', data }), data);
  });

  // 200 requests in flight at once; each answer must match its own request.
  await check('concurrent', async () => {
    const jobs = Array.from({ length: 200 }, (_, i) => {
      const data = { i, r: Math.random() };
      return req({ op: 'sleep', ms: Math.floor(Math.random() * 51), data })
        .then((got) => assert.deepStrictEqual(got, data, `request ${i}`));
    });
    await Promise.all(jobs);
  });

  // A slow request then a fast one: the fast answer arrives first.
  await check('out_of_order', async () => {
    const order = [];
    const slow = req({ op: 'sleep', ms: 200, data: 'slow' }).then((v) => { order.push(v); });
    const fast = req({ op: 'sleep', ms: 0, data: 'fast' }).then((v) => { order.push(v); });
    await Promise.all([slow, fast]);
    assert.deepStrictEqual(order, ['fast', 'slow']);
  });

  // The child calls us back while serving our request.
  await check('callback', async () => {
    const data = { x: [1, 'two'] };
    assert.deepStrictEqual(await req({ op: 'call', data }), { got: { from: 'node-parent', data } });
  });

  // 5 plain messages reach onMessage, in order, before the answer.
  await check('plain', async () => {
    const messages = [{ i: 1 }, 'two', 3, null, [{ five: 5 }]];
    const got = [];
    const off = session.onMessage((m) => got.push(m));
    try {
      const answer = await req({ op: 'plain', messages }).then((a) => ({ a, seen: [...got] }));
      assert.strictEqual(answer.a, 5);
      assert.deepStrictEqual(answer.seen, messages);
    } finally {
      off();
    }
  });

  // A failing handler: a rejected request with `error`, a payload without.
  await check('error', async () => {
    const op = { op: 'fail', name: 'TypeError', message: 'boom', code: 'E_BOOM', data: { n: 1 } };
    if (negotiated('error')) {
      const err = await req(op).then(
        (v) => { throw new Error(`expected a rejection, got ${JSON.stringify(v)}`); },
        (e) => e);
      assert.strictEqual(err.name, 'TypeError');
      assert.strictEqual(err.message, 'boom');
      assert.strictEqual(err.code, 'E_BOOM');
      assert.deepStrictEqual(err.data, { n: 1 });
      return '(error extension)';
    }
    const v = await req(op);
    assert.ok(v && typeof v === 'object', `expected an error object payload, got ${JSON.stringify(v)}`);
    assert.strictEqual(v.name, 'TypeError');
    assert.strictEqual(v.message, 'boom');
    return '(payload, 1.0)';
  });

  // A timed-out request is cancelled on the peer.
  if (!negotiated('cancel')) {
    console.log(`SKIP cancel: ${v1 ? 'v1' : 'peer did not advertise cancel'}`);
  } else {
    await check('cancel', async () => {
      const err = await session.request({ op: 'wait_cancel', key: 'k1' }, { timeoutMs: 100 }).then(
        (v) => { throw new Error(`expected a timeout, got ${JSON.stringify(v)}`); },
        (e) => e);
      assert.strictEqual(err.code, 'ETIMEDOUT', `expected a timeout, got ${err.message}`);
      assert.strictEqual(await req({ op: 'cancelled', key: 'k1' }), true, 'k1 was not cancelled');
    });
  }

  console.log(`DONE ${passed}/${total}`);
  session.close();
  const { code, signal } = await exited;
  if (code !== 0) console.log(`note: child exited with ${signal || code}`);
  process.exit(passed === total ? 0 : 1);
}

// ---------------------------------------------------------------------- main

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'child') runChild(rest);
else if (mode === 'parent') runParent(rest);
else {
  console.error('usage: peer.js child [--v1] [--no-session] [--exit-before-handshake N] [--handshake-delay MS]\n' +
    '       peer.js parent [--v1] -- PROGRAM [ARGS...]');
  process.exit(2);
}
