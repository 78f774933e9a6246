'use strict';
// Seed example, child side. Self-contained: a minimal ipc-request 1.0 session
// (2-way duplex handshake, requests/responses matched by UID) over
// process.send / process.on('message'). No npm, no extensions.
//
// Run by examples/node/parent.js (or by a Rust parent). It answers
// "(RESPONSE FROM child TO <request>)", and once its answer is written it
// asks the parent "(REQUEST FROM child)". It exits when the channel closes.

const P = '_IPC_REQUEST/';

function ipcSession(handler) {
  const uid = `${process.pid}-${Date.now()}-${Math.random()}`;
  const pending = new Map();
  let nextId = 0;
  let established;
  const ready = new Promise((resolve) => { established = resolve; });

  process.on('message', (m) => {
    if (m === null || typeof m !== 'object') return; // plain message: not ours
    if (P + 'HANDSHAKE_UID' in m && P + 'HANDSHAKE_MSG_TYPE' in m) {
      if (m[P + 'HANDSHAKE_MSG_TYPE'] === P + 'HANDSHAKE_MSG_TYPE:REQUEST') {
        // Answer every handshake request; once written, we are established.
        process.send({ [P + 'HANDSHAKE_UID']: m[P + 'HANDSHAKE_UID'],
          [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:RESPONSE' }, () => established());
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
      Promise.resolve().then(() => handler(payload, (value, onSent) => process.send({ [P + 'MSG_TYPE']: P + 'MSG_TYPE:RESPONSE',
        [P + 'REQUEST_UID']: id, [P + 'PAYLOAD']: value }, onSent)));
    } else if (m[P + 'MSG_TYPE'] === P + 'MSG_TYPE:RESPONSE' && pending.has(id)) {
      pending.get(id)(m[P + 'PAYLOAD']);
      pending.delete(id);
    }
  });
  // Listen first, then announce ourselves.
  process.send({ [P + 'HANDSHAKE_UID']: uid, [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:REQUEST' });

  return ready.then(() => ({
    // Minimal, as 1.0 is: the promise settles only with the answer. One
    // whose channel closes first never settles (this process then exits,
    // as the channel's close ends it). examples/node/ipc_session.js fails
    // pending requests when the channel closes, and has deadlines.
    request(payload) {
      const id = String(++nextId);
      return new Promise((resolve) => {
        pending.set(id, resolve);
        process.send({ [P + 'MSG_TYPE']: P + 'MSG_TYPE:REQUEST', [P + 'REQUEST_UID']: id, [P + 'PAYLOAD']: payload });
      });
    },
  }));
}

if (!process.send) {
  console.error('child.js must be started with an IPC channel (run examples/node/parent.js)');
  process.exit(1);
}
// A parent that closes the channel while a send of ours is on its way (one
// that drops its session after its first answer, say) fails that send, and
// Node throws the error from `process` unless it is handled. The send's
// request can get no answer then, and the channel's close ends us anyway.
process.on('error', (err) => {
  if (err.code !== 'EPIPE' && err.code !== 'ERR_IPC_CHANNEL_CLOSED') throw err;
});

const sessionReady = ipcSession((request, reply) => {
  console.log(`[child]  Got request:      ${request}`);
  const response = `(RESPONSE FROM child TO ${request})`;
  console.log(`[child]  Sending response: ${response}`);
  reply(response, async (err) => {
    if (err) return; // the channel closed first: nothing was sent, nobody to ask
    console.log(`[child]  Response sent:    ${response}`);
    // The other direction: the child asks the parent.
    const session = await sessionReady;
    const ours = '(REQUEST FROM child)';
    console.log(`[child]  Sending request:  ${ours}`);
    console.log(`[child]  Got response:     ${await session.request(ours)}`);
  });
});
// Nothing else keeps us alive: once the parent disconnects, the channel
// (and with it our 'message' listener) is gone and the process exits.
