'use strict';
// Benchmark parent: a Node process speaking ipc-request 1.0 with nothing but
// process.send / 'message' (PROTOCOL.md section 2): the 2-way handshake, then
// requests matched to answers through ONE 'message' listener and a Map
// id -> resolve, ids from a counter.
//
//   node bench/node/parent.js <N[,N...]> <reps> [--seq-iters K] -- <command> [args...]
//
// For each N and each rep: N = 1 runs K sequential round trips (one in flight),
// any other N starts N requests at once and waits for all. A warm-up pass
// (not measured) runs first. Every answer is checked against its request.
// Prints one JSON line on stdout:
//   {"child":[...],"results":[{"n":1000,"rps":[...one per rep...]}, ...]}
// Exit 1 with the error on stderr on any failure.

const { spawn } = require('child_process');

const P = '_IPC_REQUEST/';
const HS_UID = P + 'HANDSHAKE_UID';
const HS_TYPE = P + 'HANDSHAKE_MSG_TYPE';
const HS_REQUEST = P + 'HANDSHAKE_MSG_TYPE:REQUEST';
const MSG_TYPE = P + 'MSG_TYPE';
const UID = P + 'REQUEST_UID';
const PAYLOAD = P + 'PAYLOAD';
const REQUEST = P + 'MSG_TYPE:REQUEST';
const RESPONSE = P + 'MSG_TYPE:RESPONSE';
const TEXT = 'hello, bench';

function fail(message) {
  process.stderr.write(`[node parent] ${message}\n`);
  process.exit(1);
}

const argv = process.argv.slice(2);
const dd = argv.indexOf('--');
if (dd < 2 || dd === argv.length - 1) {
  fail('usage: parent.js <N[,N...]> <reps> [--seq-iters K] -- <command> [args...]');
}
const sizes = argv[0].split(',').map(Number);
const reps = Number(argv[1]);
let seqIters = 2000;
const flag = argv.indexOf('--seq-iters');
if (flag >= 0 && flag < dd) seqIters = Number(argv[flag + 1]);
const [command, ...args] = argv.slice(dd + 1);
if (sizes.some((n) => !(n >= 1)) || !(reps >= 1) || !(seqIters >= 1)) fail('bad numbers');

const child = spawn(command, args, { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
let finished = false;
child.on('error', (err) => fail(`spawn ${command}: ${err.message}`));
child.on('exit', (code, signal) => {
  if (!finished) fail(`child exited early with ${signal || code}`);
});

const pending = new Map();
let nextId = 0;
const ourUid = `${process.pid}-${Date.now()}-${Math.random()}`;
let established;
const ready = new Promise((resolve) => { established = resolve; });

child.on('message', (m) => {
  if (m === null || typeof m !== 'object') return;
  if (HS_UID in m && HS_TYPE in m) {
    if (m[HS_TYPE] === HS_REQUEST) {
      child.send({ [HS_UID]: m[HS_UID], [HS_TYPE]: P + 'HANDSHAKE_MSG_TYPE:RESPONSE' }, (err) => {
        if (!err) established();
      });
    } else if (m[HS_UID] === ourUid) {
      established();
    }
    return;
  }
  if (m[MSG_TYPE] === RESPONSE) {
    const id = m[UID];
    const resolve = pending.get(id);
    if (resolve !== undefined) {
      pending.delete(id);
      resolve(m[PAYLOAD]);
    }
  }
});
child.send({ [HS_UID]: ourUid, [HS_TYPE]: HS_REQUEST });

function request(payload) {
  const id = String(++nextId);
  return new Promise((resolve) => {
    pending.set(id, resolve);
    child.send({ [MSG_TYPE]: REQUEST, [UID]: id, [PAYLOAD]: payload });
  });
}

function check(answer, i) {
  if (!Array.isArray(answer) || answer[0] !== i || answer[1] !== TEXT) {
    fail(`answer ${JSON.stringify(answer)} does not echo request ${i}`);
  }
}

async function sequential(k) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < k; i++) check(await request([i, TEXT]), i);
  return k / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function burst(n) {
  const start = process.hrtime.bigint();
  const promises = new Array(n);
  for (let i = 0; i < n; i++) promises[i] = request([i, TEXT]);
  const answers = await Promise.all(promises);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  for (let i = 0; i < n; i++) check(answers[i], i);
  return n / seconds;
}

const run = (n) => (n === 1 ? sequential(seqIters) : burst(n));

async function main() {
  const timer = setTimeout(() => fail('handshake timed out after 10 s'), 10000);
  await ready;
  clearTimeout(timer);
  // Warm-up: let V8 compile the hot paths on both sides.
  await sequential(Math.min(seqIters, 500));
  await burst(1000);
  const results = sizes.map((n) => ({ n, rps: [] }));
  for (let r = 0; r < reps; r++) {
    for (const entry of results) entry.rps.push(await run(entry.n));
  }
  finished = true;
  child.disconnect();
  const killer = setTimeout(() => child.kill(), 5000);
  await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null
    ? resolve() : child.once('exit', resolve)));
  clearTimeout(killer);
  process.stdout.write(JSON.stringify({ child: [command, ...args], results }) + '\n');
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
