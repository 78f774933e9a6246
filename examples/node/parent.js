'use strict';
// Seed example, parent side. Self-contained: a minimal ipc-request 1.0 session
// (2-way duplex handshake, requests/responses matched by UID) over
// ChildProcess.send / 'message'. No npm, no extensions.
//
//   node examples/node/parent.js                  forks examples/node/child.js
//   node examples/node/parent.js PROGRAM [ARGS]   e.g. target/debug/examples/child,
//                                                 spawned with the channel at fd 3
//
// Handshake (10 s timeout), one request to the child, then it waits (10 s) for
// one request from the child ("(REQUEST FROM child)"), answers it, disconnects
// and waits for the child to exit. Exit 0, or 1 with the error on failure.

const path = require('path');
const { fork, spawn } = require('child_process');

const P = '_IPC_REQUEST/';

function ipcSession(child, handler, timeoutMs) {
  const uid = `${process.pid}-${Date.now()}-${Math.random()}`;
  const pending = new Map();
  let nextId = 0;
  let closed = false;
  let established, failed;
  const ready = new Promise((resolve, reject) => { established = resolve; failed = reject; });
  const timer = setTimeout(() => failed(new Error(`handshake timed out after ${timeoutMs} ms`)), timeoutMs);
  ready.then(() => clearTimeout(timer), () => clearTimeout(timer));

  const onClose = (why) => () => {
    if (closed) return;
    closed = true;
    const err = new Error(`IPC channel closed (${why})`);
    failed(err);
    for (const [, p] of pending) p.reject(err);
    pending.clear();
  };
  child.on('disconnect', onClose('disconnected'));
  child.on('exit', (code, signal) => setTimeout(onClose(`child exited with ${signal || code}`), 100));
  child.on('error', (err) => failed(err));

  child.on('message', (m) => {
    if (m === null || typeof m !== 'object') return; // plain message: not ours
    if (P + 'HANDSHAKE_UID' in m && P + 'HANDSHAKE_MSG_TYPE' in m) {
      if (m[P + 'HANDSHAKE_MSG_TYPE'] === P + 'HANDSHAKE_MSG_TYPE:REQUEST') {
        // Answer every handshake request; once written, we are established.
        child.send({ [P + 'HANDSHAKE_UID']: m[P + 'HANDSHAKE_UID'],
          [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:RESPONSE' }, (err) => { if (!err) established(); });
      } else if (m[P + 'HANDSHAKE_UID'] === uid) {
        established(); // the answer to our own handshake request
      }
      return;
    }
    if (!(P + 'MSG_TYPE' in m && P + 'REQUEST_UID' in m && P + 'PAYLOAD' in m)) return;
    const id = m[P + 'REQUEST_UID'];
    if (m[P + 'MSG_TYPE'] === P + 'MSG_TYPE:REQUEST') {
      // Run the handler as a microtask, so a response that arrived just before
      // is seen by its awaiting caller first.
      const payload = m[P + 'PAYLOAD'];
      Promise.resolve().then(() => handler(payload, (value, onSent) => child.send({ [P + 'MSG_TYPE']: P + 'MSG_TYPE:RESPONSE',
        [P + 'REQUEST_UID']: id, [P + 'PAYLOAD']: value }, onSent)));
    } else if (m[P + 'MSG_TYPE'] === P + 'MSG_TYPE:RESPONSE' && pending.has(id)) {
      pending.get(id).resolve(m[P + 'PAYLOAD']);
      pending.delete(id);
    }
  });
  // Listen first, then announce ourselves.
  child.send({ [P + 'HANDSHAKE_UID']: uid, [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:REQUEST' }, () => {});

  return ready.then(() => ({
    request(payload) {
      const id = String(++nextId);
      return new Promise((resolve, reject) => {
        if (closed) return reject(new Error('IPC channel closed'));
        pending.set(id, { resolve, reject });
        child.send({ [P + 'MSG_TYPE']: P + 'MSG_TYPE:REQUEST', [P + 'REQUEST_UID']: id, [P + 'PAYLOAD']: payload },
          (err) => { if (err) { pending.delete(id); reject(err); } });
      });
    },
  }));
}

async function main() {
  const [program, ...args] = process.argv.slice(2);
  const child = program
    ? spawn(program, args, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] })
    : fork(path.join(__dirname, 'child.js'));
  const exited = new Promise((resolve) => child.once('exit', resolve));

  // The child's request: answered, and we are done once the answer is written.
  let childAsked;
  let childAskedInVain;
  const childRequestServed = new Promise((resolve, reject) => {
    childAsked = resolve;
    childAskedInVain = reject;
    setTimeout(() => reject(new Error('the child sent no request within 10 s')), 10000).unref();
  });
  const session = await ipcSession(child, (request, reply) => {
    console.log(`[parent] Got request:      ${request}`);
    const response = `(RESPONSE FROM parent TO ${request})`;
    console.log(`[parent] Sending response: ${response}`);
    reply(response, (err) => {
      if (err) {
        childAskedInVain(new Error(`the response was not sent: ${err.message}`));
        return;
      }
      console.log(`[parent] Response sent:    ${response}`);
      childAsked();
    });
  }, 10000);
  console.log('[parent] Hands have been shaken! Now I know that the child process listens to my requests');

  const request = '(REQUEST FROM parent)';
  console.log(`[parent] Sending request:  ${request}`);
  console.log(`[parent] Got response:     ${await session.request(request)}`);

  await childRequestServed;
  child.disconnect();
  const killer = setTimeout(() => child.kill(), 5000);
  await exited;
  clearTimeout(killer);
}

main().then(() => process.exit(0), (err) => {
  console.error(`[parent] Error: ${err && err.message}`);
  process.exit(1);
});
