'use strict';
// Benchmark child: ipc-request 1.0 with raw process.send (PROTOCOL.md 2.1
// handshake), answering every request with its own payload. Started by
// bench/node/parent.js or by the Rust bench; exits when the channel closes.

const P = '_IPC_REQUEST/';
const HS_UID = P + 'HANDSHAKE_UID';
const HS_TYPE = P + 'HANDSHAKE_MSG_TYPE';
const MSG_TYPE = P + 'MSG_TYPE';
const UID = P + 'REQUEST_UID';
const PAYLOAD = P + 'PAYLOAD';
const REQUEST = P + 'MSG_TYPE:REQUEST';
const RESPONSE = P + 'MSG_TYPE:RESPONSE';

if (!process.send) {
  process.stderr.write('child.js needs an IPC channel (run it from bench/node/parent.js or the Rust bench)\n');
  process.exit(1);
}

const ourUid = `${process.pid}-${Date.now()}-${Math.random()}`;

process.on('message', (m) => {
  if (m === null || typeof m !== 'object') return;
  if (HS_UID in m && HS_TYPE in m) {
    if (m[HS_TYPE] === P + 'HANDSHAKE_MSG_TYPE:REQUEST') {
      process.send({ [HS_UID]: m[HS_UID], [HS_TYPE]: P + 'HANDSHAKE_MSG_TYPE:RESPONSE' });
    }
    return; // a response to ours needs nothing: we only answer
  }
  if (m[MSG_TYPE] === REQUEST && UID in m && PAYLOAD in m) {
    process.send({ [MSG_TYPE]: RESPONSE, [UID]: m[UID], [PAYLOAD]: m[PAYLOAD] });
  }
});
// Listen first, then announce ourselves.
process.send({ [HS_UID]: ourUid, [HS_TYPE]: P + 'HANDSHAKE_MSG_TYPE:REQUEST' });
