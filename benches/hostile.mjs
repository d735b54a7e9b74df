// Hostile subscribers against a running gateway (docs/reliability.md,
// "Hostile subscribers"); started by benches/hostile.sh, which passes the
// gateway's address and pid and the tokens in the environment. Prints one
// JSON line per measurement. Needs Node 20 with --experimental-websocket.
//
//   sync-flood: a viewer sends FLOOD REQUEST_SYNC for a graph of NODES nodes;
//     then (timed from the flood's last frame) another user's WebSocket
//     COMMAND until its COMMAND_APPLIED, an HTTP ?wait command, and a new
//     socket's SUBSCRIBE until its SYNC.
//   subscription-flood: one socket with a `*` token subscribes to GRAPHS
//     graphs and sends one PRESENCE on each; the gateway's RSS before and after.

import { readFileSync } from 'node:fs';

const { GW, GW_PID, EDITOR, VIEWER, OTHER, STAR } = process.env;
const FLOOD = Number(process.env.FLOOD ?? 5000);
const NODES = Number(process.env.NODES ?? 300);
const GRAPHS = Number(process.env.GRAPHS ?? 10000);

const rssKiB = () => {
  const status = readFileSync(`/proc/${GW_PID}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
};

function open(token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${GW}/ws?token=${token}`);
    const waiting = [];
    ws.frames = [];
    ws.onmessage = (e) => {
      const v = JSON.parse(e.data);
      ws.frames.push(v);
      for (const w of waiting.splice(0)) w();
    };
    // Resolves with the first frame (from now on) for which `pred` holds.
    ws.until = (pred) =>
      new Promise((res) => {
        const from = ws.frames.length;
        const check = () => {
          const hit = ws.frames.slice(from).find(pred);
          if (hit || ws.closeCode !== undefined) res(hit);
          else waiting.push(check);
        };
        check();
      });
    ws.json = (v) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(v));
    ws.onclose = (e) => {
      ws.closeCode = e.code;
      for (const w of waiting.splice(0)) w();
    };
    ws.onopen = () => resolve(ws);
    ws.onerror = reject;
  });
}

async function http(path, token, body) {
  const r = await fetch(`http://${GW}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return r.json();
}

const create = (op, id) => ({
  operationId: op, type: 'CREATE_NODE', payload: { node: { id, position: { x: 1, y: 2 } } },
});

async function syncFlood() {
  const operations = Array.from({ length: NODES }, (_, i) => ({
    type: 'CREATE_NODE',
    payload: { node: { id: `n${i}`, position: { x: i, y: i }, data: { label: `node number ${i} of the seeded graph` } } },
  }));
  await http('/api/v2/graphs/flood/command?wait=10000', EDITOR, {
    operationId: 'seed', type: 'BATCH_UPDATE', payload: { operations },
  });
  const alice = await open(EDITOR);
  alice.json({ type: 'SUBSCRIBE', graphId: 'flood', clientVersion: 1 });
  await alice.until((v) => v.type === 'SYNC');
  const flooder = await open(VIEWER);
  flooder.json({ type: 'SUBSCRIBE', graphId: 'flood' });
  await flooder.until((v) => v.type === 'SYNC');
  for (let i = 0; i < FLOOD; i++) flooder.json({ type: 'REQUEST_SYNC', graphId: 'flood' });
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const syncs = () => flooder.frames.filter((v) => v.type === 'SYNC').length - 1;
  alice.json({ type: 'COMMAND', graphId: 'flood', command: create('a1', 'a1') });
  const applied = alice.until((v) => v.type === 'COMMAND_APPLIED' && v.operationId === 'a1')
    .then(() => ({ ms: ms(), flooderSyncs: syncs() }));
  const waited = http('/api/v2/graphs/flood/command?wait=60000', OTHER, create('b1', 'b1'))
    .then(() => ({ ms: ms(), flooderSyncs: syncs() }));
  const carol = await open(OTHER);
  carol.json({ type: 'SUBSCRIBE', graphId: 'flood', clientVersion: 0 });
  const synced = carol.until((v) => v.type === 'SYNC').then(() => ({ ms: ms(), flooderSyncs: syncs() }));
  const [a, b, c] = await Promise.all([applied, waited, synced]);
  const refused = flooder.frames.filter((v) => v.code === 'SYNC_RATE_LIMITED').length;
  console.log(JSON.stringify({
    bench: 'sync-flood', flood: FLOOD, nodes: NODES,
    commandApplied: a, httpWait: b, newSubscribe: c, flooderSyncs: syncs(), flooderRefusals: refused,
  }));
  for (const s of [alice, flooder, carol]) s.close();
}

async function subscriptionFlood() {
  const before = rssKiB();
  const t0 = performance.now();
  const ws = await open(STAR);
  for (let i = 0; i < GRAPHS; i++) {
    ws.json({ type: 'SUBSCRIBE', graphId: `s${i}` });
  }
  // Every SUBSCRIBE answered (SYNC or ERROR) before presence is sent.
  await new Promise((res) => {
    const tick = () =>
      ws.frames.length >= GRAPHS || ws.closeCode !== undefined ? res() : setTimeout(tick, 50);
    tick();
  });
  const subscribed = ws.frames.filter((v) => v.type === 'SYNC').length;
  for (let i = 0; i < GRAPHS; i++) {
    ws.json({ type: 'PRESENCE', graphId: `s${i}`, cursor: { x: i, y: i } });
  }
  ws.json({ type: 'HEARTBEAT' });
  await ws.until((v) => v.type === 'HEARTBEAT');
  await new Promise((r) => setTimeout(r, 1000));
  const after = rssKiB();
  console.log(JSON.stringify({
    bench: 'subscription-flood', graphs: GRAPHS, subscribed,
    refusals: ws.frames.filter((v) => v.code === 'TOO_MANY_SUBSCRIPTIONS').length,
    seconds: Math.round(performance.now() - t0) / 1000,
    rssKiBBefore: before, rssKiBAfter: after, closeCode: ws.closeCode ?? null,
  }));
  ws.close();
}

await syncFlood();
await subscriptionFlood();
process.exit(0);
