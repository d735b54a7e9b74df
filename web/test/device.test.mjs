// The client's device state, tabs, ordered resends and predicted undo,
// against a scripted server (fake socket, hand-moved clock) and a fake
// device store (testing/fakes.mjs). IndexedDB itself is exercised in
// Chromium by browser.test.mjs.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { GraphqClient } from '../graphq-client.js';
import { FakeClock, FakeDeviceHub, FakeSocket, fakeToken } from '../testing/fakes.mjs';

const G = 'g1';
const EPOCH = 'ep1';

const node = (id, x, y, data = {}) => ({ id, type: null, position: { x, y }, data, version: 1 });

function client({ device, clock = new FakeClock(), user = 'alice' } = {}) {
  const c = new GraphqClient({
    url: 'ws://graphq.test/ws', token: fakeToken(user), graphId: G, WebSocket: FakeSocket,
    fetch: async () => ({ ok: false }), clock, device,
  });
  const events = { revert: [], storage: [], change: 0 };
  c.on('revert', (r) => events.revert.push(r));
  c.on('storage', (s) => events.storage.push(s));
  c.on('change', () => { events.change += 1; });
  return { client: c, clock, events };
}

/** Lets the store's promises settle. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Opens the client's socket and returns it (the SUBSCRIBE is left in `sent`). */
async function open(c) {
  c.connect();
  await c.ready;
  await settle();
  const socket = FakeSocket.opened.at(-1);
  socket.accept();
  return socket;
}

function reset(socket, version, nodes = []) {
  socket.receive({
    type: 'SYNC', graphId: G, epoch: EPOCH, version, status: 'reset',
    state: { graphId: G, epoch: EPOCH, version, nodes, edges: [], viewport: null },
  });
}

function applied(version, command, userId, change) {
  return { type: 'COMMAND_APPLIED', graphId: G, operationId: command.operationId, version, userId, command, change };
}

const created = (n) => ({ nodes: [n], edges: [], removedNodes: [], removedEdges: [], undo: { nodes: { [n.id]: null }, edges: {} } });

const seen = (c, id) => {
  const n = c.view.nodes.get(id);
  return n && { x: n.position.x, y: n.position.y, ...n.data };
};

beforeEach(() => {
  FakeSocket.opened = [];
});

describe('the device', () => {
  test('what an earlier session left is shown before any network, and the subscription starts from it', async () => {
    const pendingMove = { operationId: 'op-move', type: 'UPDATE_NODE', payload: { id: 'a', patch: { position: { x: 50, y: 60 } } }, baseVersion: 7, timestamp: 1 };
    const hub = new FakeDeviceHub({
      snapshot: { epoch: EPOCH, version: 7, nodes: [node('a', 1, 2, { label: 'A' })], edges: [], viewport: null },
      pending: [{ seq: 5, command: pendingMove }],
    });
    const { client: c } = client({ device: hub.store() });
    await c.ready;
    assert.equal(FakeSocket.opened.length, 0, 'no socket yet');
    assert.deepEqual(seen(c, 'a'), { x: 50, y: 60, label: 'A' }, 'the stored graph with the stored edit on top');
    assert.equal(c.version, 7);
    assert.deepEqual(c.storage, { kind: 'indexeddb', reason: null });

    const socket = await open(c);
    assert.deepEqual(socket.take(), [{ type: 'SUBSCRIBE', graphId: G, clientVersion: 7, epoch: EPOCH }]);
    socket.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 7, status: 'in_sync' });
    const sent = socket.take('COMMAND');
    assert.deepEqual(sent.map((m) => m.command.operationId), ['op-move'], 'sent after the SYNC with its operation id');
    assert.deepEqual(sent[0].command, pendingMove);
  });

  test('edits are written at once, dropped when settled, and the confirmed graph is saved', async () => {
    const hub = new FakeDeviceHub();
    const { client: c, clock } = client({ device: hub.store() });
    const socket = await open(c);
    reset(socket, 3, [node('a', 0, 0)]);
    const id = c.createNode({ position: { x: 5, y: 5 } });
    await settle();
    const [stored] = [...hub.pending.values()];
    assert.equal(stored.command.payload.node.id, id);

    clock.tick(1000);
    assert.equal(hub.snapshot.version, 3);
    socket.receive(applied(4, stored.command, 'alice', created(node(id, 5, 5))));
    await settle();
    assert.equal(hub.pending.size, 0, 'confirmed: no longer pending on the device');
    clock.tick(1000);
    assert.equal(hub.snapshot.version, 4);
    assert.deepEqual(hub.snapshot.nodes.map((n) => n.id).sort(), ['a', id].sort());
  });

  test('without IndexedDB the client works in memory and says so; a failing store falls back too', async () => {
    const { client: bare } = client();
    assert.equal(bare.storage.kind, 'memory');
    assert.match(bare.storage.reason, /no IndexedDB/);
    const socket = await open(bare);
    reset(socket, 1);
    bare.createNode({ id: 'n1', position: { x: 1, y: 1 } });
    assert.equal(socket.take('COMMAND').length, 1, 'edits still go out');

    const broken = { load: () => Promise.reject(new Error('blocked')) };
    const { client: c } = client({ device: Promise.resolve(broken) });
    await c.ready;
    assert.deepEqual(c.storage, { kind: 'memory', reason: 'the device store failed (blocked)' });

    const hub = new FakeDeviceHub();
    const { client: full, events } = client({ device: hub.store() });
    await full.ready;
    hub.failWrites = true;
    full.createNode({ id: 'n2', position: { x: 1, y: 1 } });
    await settle();
    assert.equal(full.storage.kind, 'memory');
    assert.match(full.storage.reason, /QuotaExceededError/);
    assert.deepEqual(events.storage.map((s) => s.kind), ['indexeddb', 'memory']);
    assert.ok(full.view.nodes.has('n2'), 'the edit is still shown');
  });

  test('forget() clears the device and the other tabs, and the client stays closed', async () => {
    const hub = new FakeDeviceHub();
    const { client: one } = client({ device: hub.store() });
    const { client: two } = client({ device: hub.store() });
    await Promise.all([one.ready, two.ready]);
    one.createNode({ id: 'n1', position: { x: 1, y: 1 } });
    await settle();
    assert.ok(two.view.nodes.has('n1'));
    await one.forget();
    assert.equal(hub.pending.size, 0);
    assert.equal(hub.snapshot, null);
    for (const c of [one, two]) {
      assert.equal(c.status, 'closed');
      assert.equal(c.view.nodes.size, 0);
      assert.deepEqual(c.pending, []);
    }
    one.connect();
    assert.equal(one.status, 'closed', 'a forgotten client does not connect again');
  });
});

describe('tabs of one user', () => {
  test('one tab sends, every tab shows; outcomes reach all of them', async () => {
    const hub = new FakeDeviceHub();
    const { client: leader } = client({ device: hub.store() });
    const { client: follower, events } = client({ device: hub.store() });
    const a = await open(leader);
    const b = await open(follower);
    for (const s of [a, b]) {
      reset(s, 1, [node('x', 0, 0)]);
      s.take();
    }
    const id = follower.createNode({ position: { x: 9, y: 9 } });
    follower.moveNode('x', { x: 3, y: 3 });
    await settle();
    assert.deepEqual(b.take('COMMAND'), [], 'the follower sends nothing');
    const sent = a.take('COMMAND').map((m) => m.command);
    assert.deepEqual(sent.map((c) => c.type), ['CREATE_NODE', 'UPDATE_NODE'], 'the leader sends them, in order');
    assert.ok(leader.view.nodes.has(id) && follower.view.nodes.has(id));

    // Both sockets hear COMMAND_APPLIED; only the sender hears the REVERT.
    for (const s of [a, b]) s.receive(applied(2, sent[0], 'alice', created(node(id, 9, 9))));
    a.receive({ type: 'REVERT', graphId: G, operationId: sent[1].operationId, error: { code: 'CONFLICT', message: 'no' } });
    await settle();
    assert.deepEqual([leader.pending.length, follower.pending.length], [0, 0]);
    assert.deepEqual(seen(follower, 'x'), { x: 0, y: 0 }, 'the rolled back move is gone in the follower too');
    assert.equal(events.revert.length, 1);

    // The leader's tab closes: the follower takes over and sends.
    leader.close();
    hub.tabs[0].close();
    follower.moveNode('x', { x: 7, y: 7 });
    assert.equal(b.take('COMMAND').length, 1);
  });
});

describe('tabs that subscribe at different times', () => {
  test('a tab that missed the COMMAND_APPLIED of a queued edit drops it when the sending tab says so', async () => {
    const hub = new FakeDeviceHub();
    const { client: leader } = client({ device: hub.store() });
    const { client: late } = client({ device: hub.store() });
    const a = await open(leader);
    reset(a, 1);
    a.take();
    late.createNode({ id: 'n1', position: { x: 1, y: 1 } });
    await settle();
    const [sent] = a.take('COMMAND');
    a.receive(applied(2, sent.command, 'alice', created(node('n1', 1, 1))));
    await settle();
    assert.deepEqual(late.pending.map((c) => c.operationId), [sent.command.operationId],
      'still pending in the late tab: it has not seen version 2, and the edit stays shown');
    assert.ok(late.view.nodes.has('n1'));

    // Its socket subscribes now: the reset state already has the edit.
    const b = await open(late);
    reset(b, 2, [node('n1', 1, 1)]);
    assert.deepEqual(late.pending, []);
    assert.ok(late.view.nodes.has('n1'));
    assert.deepEqual(b.take('COMMAND'), [], 'and it never sent it');
  });
});

describe('order and prediction', () => {
  test('after RATE_LIMITED nothing made later goes out before the refused command is accepted', async () => {
    const { client: c, clock } = client();
    const socket = await open(c);
    reset(socket, 1, [node('a', 0, 0)]);
    socket.take();
    const first = c.moveNode('a', { x: 1, y: 1 });
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 100, operationId: first });
    const second = c.moveNode('a', { x: 2, y: 2 });
    const third = c.moveNode('a', { x: 3, y: 3 });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [first], 'later moves wait');
    assert.deepEqual(seen(c, 'a'), { x: 3, y: 3 }, 'but show at once');

    clock.tick(100);
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [first], 'the refused one goes first, alone');
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: first });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [second]);
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: second });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [third]);
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: third });
    // All accepted: back to sending at once.
    const fourth = c.moveNode('a', { x: 4, y: 4 });
    const fifth = c.moveNode('a', { x: 5, y: 5 });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [fourth, fifth]);
  });

  test('UNDO and REDO of a known change show at once; an unknown history waits for the server', async () => {
    const { client: c } = client();
    const socket = await open(c);
    reset(socket, 1, [node('a', 0, 0)]);
    socket.take();

    // Without any change of ours seen, the client cannot know what UNDO reverts.
    c.undo();
    assert.deepEqual(seen(c, 'a'), { x: 0, y: 0 });
    const [unknown] = socket.take('COMMAND');
    socket.receive({ type: 'REVERT', graphId: G, operationId: unknown.command.operationId, error: { code: 'INVALID', message: 'nothing to undo' } });

    const move = c.moveNode('a', { x: 40, y: 40 });
    const [sentMove] = socket.take('COMMAND');
    socket.receive(applied(2, sentMove.command, 'alice', {
      nodes: [node('a', 40, 40)], edges: [], removedNodes: [], removedEdges: [], undo: { nodes: { a: node('a', 0, 0) }, edges: {} },
    }));
    assert.equal(c.pending.length, 0, `${move} confirmed`);
    c.createNode({ id: 'b', position: { x: 9, y: 9 } });

    c.undo();
    assert.equal(c.view.nodes.has('b'), false, 'undo of the pending create shows at once');
    c.undo();
    assert.deepEqual(seen(c, 'a'), { x: 0, y: 0 }, 'undo of the confirmed move shows at once');
    assert.ok(c.isPending('a'));
    c.redo();
    assert.deepEqual(seen(c, 'a'), { x: 40, y: 40 }, 'redo re-applies it');

    // Someone else moved it since: the server will refuse to revert it, and the view does not pretend.
    const [, , , redo] = socket.take('COMMAND');
    socket.receive(applied(3, { operationId: 'bob-1', type: 'UPDATE_NODE' }, 'bob', {
      nodes: [node('a', 70, 70)], edges: [], removedNodes: [], removedEdges: [], undo: { nodes: { a: node('a', 40, 40) }, edges: {} },
    }));
    assert.equal(redo.command.type, 'REDO');
    assert.deepEqual(seen(c, 'a'), { x: 70, y: 70 });
  });
});

describe('for UI frameworks', () => {
  test('getSnapshot is the same object until something changes, and subscribe says when', async () => {
    const { client: c } = client();
    let calls = 0;
    const stop = c.subscribe(() => { calls += 1; });
    const first = c.getSnapshot();
    assert.equal(c.getSnapshot(), first);
    c.createNode({ id: 'n1', position: { x: 1, y: 1 } });
    assert.ok(calls > 0);
    const second = c.getSnapshot();
    assert.notEqual(second, first);
    assert.ok(second.view.nodes.has('n1'));
    assert.equal(second.pending.length, 1);
    assert.equal(c.getSnapshot(), second);
    stop();
    const before = calls;
    c.createNode({ id: 'n2', position: { x: 1, y: 1 } });
    assert.equal(calls, before);
  });
});
