// The client's logic against a scripted server: the test plays the gateway
// on a fake socket and moves a fake clock.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { GraphqClient } from '../graphq-client.js';
import { FakeClock, FakeSocket, fakeToken } from '../testing/fakes.mjs';

const G = 'g1';
const EPOCH = 'ep1';

const node = (id, x, y, data = {}) => ({ id, type: null, position: { x, y }, data, version: 1 });
const edge = (id, source, target) => ({ id, source, target, type: null, data: {}, version: 1 });

/** A client as alice, its clock, its recorded events, and a fetch stub. */
function setup({ fetch, token, getToken, ...options } = {}) {
  const clock = new FakeClock();
  const client = new GraphqClient({
    ...options,
    url: 'ws://graphq.test/ws',
    token: token ?? fakeToken('alice'),
    graphId: G,
    WebSocket: FakeSocket,
    fetch: fetch ?? (async () => ({ ok: false })),
    getToken,
    clock,
  });
  const events = {};
  for (const type of ['change', 'status', 'sync', 'applied', 'revert', 'conflict', 'presence', 'error', 'refreshed']) {
    events[type] = [];
    client.on(type, (detail) => events[type].push(detail));
  }
  return { client, clock, events };
}

/** Connects and answers SUBSCRIBE with `state` at `version`; returns the socket. */
function connect(client, { version = 1, nodes = [], edges = [] } = {}) {
  client.connect();
  const socket = FakeSocket.opened.at(-1);
  socket.accept();
  socket.receive({
    type: 'SYNC', graphId: G, epoch: EPOCH, version, status: 'reset',
    state: { graphId: G, epoch: EPOCH, version, nodes, edges, viewport: null, checksum: '0' },
  });
  socket.take();
  return socket;
}

/** What a user sees of a node: where it is and what it says. */
function seen(client, id) {
  const n = client.view.nodes.get(id);
  return n && { x: n.position.x, y: n.position.y, ...n.data };
}

function applied(version, operationId, userId, change) {
  return { type: 'COMMAND_APPLIED', graphId: G, operationId, version, userId, command: null, change };
}

const moved = (n, x, y) => ({ nodes: [{ ...n, position: { x, y } }], edges: [], removedNodes: [], removedEdges: [] });

beforeEach(() => {
  FakeSocket.opened = [];
});

describe('connecting and SYNC', () => {
  test('a new client subscribes without a version and loads the reset state', () => {
    const { client, events } = setup();
    client.connect();
    const socket = FakeSocket.opened[0];
    assert.match(socket.url, /^ws:\/\/graphq\.test\/ws\?token=/);
    socket.accept();
    assert.deepEqual(socket.take(), [{ type: 'SUBSCRIBE', graphId: G }]);
    assert.equal(client.status, 'syncing');

    socket.receive({
      type: 'SYNC', graphId: G, epoch: EPOCH, version: 7, status: 'reset',
      state: { nodes: [node('a', 1, 2, { label: 'A' }), node('b', 3, 4)], edges: [edge('ab', 'a', 'b')] },
    });
    assert.equal(client.status, 'online');
    assert.equal(client.version, 7);
    assert.equal(client.epoch, EPOCH);
    assert.deepEqual(seen(client, 'a'), { x: 1, y: 2, label: 'A' });
    assert.ok(client.view.edges.has('ab'));
    assert.deepEqual(events.sync.map((s) => s.status), ['reset']);
  });

  test('after a reconnect it subscribes with its (epoch, version) and applies what it missed', () => {
    const { client, clock, events } = setup();
    const first = connect(client, { version: 3, nodes: [node('a', 0, 0)] });
    first.drop();
    assert.equal(client.status, 'offline');
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    assert.deepEqual(second.take(), [{ type: 'SUBSCRIBE', graphId: G, clientVersion: 3, epoch: EPOCH }]);

    second.receive({
      type: 'SYNC', graphId: G, epoch: EPOCH, version: 5, status: 'behind',
      changes: [
        { version: 4, operationId: 'o4', userId: 'bob', type: 'UPDATE_NODE', timestamp: 0, change: moved(node('a'), 40, 40) },
        { version: 5, operationId: 'o5', userId: 'bob', type: 'CREATE_NODE', timestamp: 0,
          change: { nodes: [node('b', 5, 5)], edges: [], removedNodes: [], removedEdges: [] } },
      ],
    });
    assert.equal(client.version, 5);
    assert.deepEqual(seen(client, 'a'), { x: 40, y: 40 });
    assert.ok(client.view.nodes.has('b'));
    assert.deepEqual(events.applied.map((a) => a.version), [4, 5]);
    assert.equal(client.status, 'online');
  });

  test('in_sync keeps the state as it is', () => {
    const { client, clock } = setup();
    const first = connect(client, { version: 2, nodes: [node('a', 1, 1)] });
    first.drop();
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    second.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 2, status: 'in_sync' });
    assert.equal(client.status, 'online');
    assert.equal(client.version, 2);
    assert.deepEqual(seen(client, 'a'), { x: 1, y: 1 });
  });

  test('a reset with another epoch replaces the state; pending edits stay on top and are resent', () => {
    const { client, clock } = setup();
    const first = connect(client, { version: 9, nodes: [node('a', 0, 0), node('gone', 0, 0)] });
    const op = client.updateNode('a', { data: { label: 'mine' } });
    first.drop();
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    second.take();
    second.receive({
      type: 'SYNC', graphId: G, epoch: 'ep2', version: 2, status: 'reset',
      state: { nodes: [node('a', 7, 7), node('new', 1, 1)], edges: [] },
    });
    assert.equal(client.epoch, 'ep2');
    assert.equal(client.version, 2);
    assert.ok(!client.view.nodes.has('gone'), 'what the old epoch had is gone');
    assert.ok(client.view.nodes.has('new'));
    assert.deepEqual(seen(client, 'a'), { x: 7, y: 7, label: 'mine' });
    assert.deepEqual(second.take('COMMAND').map((m) => m.command.operationId), [op]);
  });
});

describe('optimistic edits', () => {
  test('an edit shows at once and goes out as a COMMAND with an operation id and base version', () => {
    const { client } = setup();
    const socket = connect(client, { version: 4 });
    const id = client.createNode({ position: { x: 10, y: 20 }, data: { label: 'New' } });
    assert.deepEqual(seen(client, id), { x: 10, y: 20, label: 'New' });
    assert.ok(client.isPending(id));
    const [sent] = socket.take();
    assert.equal(sent.type, 'COMMAND');
    assert.equal(sent.graphId, G);
    assert.equal(sent.command.type, 'CREATE_NODE');
    assert.equal(sent.command.baseVersion, 4);
    assert.match(sent.command.operationId, /^[0-9a-f-]{36}$/);
    assert.deepEqual(sent.command.payload, { node: { position: { x: 10, y: 20 }, data: { label: 'New' }, id } });
    assert.ok(Number.isFinite(sent.command.timestamp));
  });

  test("others' changes land under pending edits, which stay on top in the order they were made", () => {
    const { client } = setup();
    const a = node('a', 0, 0, { label: 'A' });
    const socket = connect(client, { version: 1, nodes: [a] });
    const move1 = client.moveNode('a', { x: 1, y: 1 });
    const move2 = client.moveNode('a', { x: 2, y: 2 });
    const rename = client.updateNode('a', { data: { label: 'Mine' } });
    assert.deepEqual(seen(client, 'a'), { x: 2, y: 2, label: 'Mine' });

    // Bob moved it and coloured it before our commands reached the server.
    socket.receive(applied(2, 'bob-op', 'bob', moved({ ...a, data: { label: 'A', color: 'red' } }, 99, 99)));
    assert.deepEqual(seen(client, 'a'), { x: 2, y: 2, label: 'Mine', color: 'red' });
    assert.deepEqual(seen({ view: client.confirmed }, 'a'), { x: 99, y: 99, label: 'A', color: 'red' });

    socket.receive(applied(3, move1, 'alice', moved({ ...a, data: { label: 'A', color: 'red' } }, 1, 1)));
    assert.equal(client.pending.length, 2);
    assert.deepEqual(seen(client, 'a'), { x: 2, y: 2, label: 'Mine', color: 'red' });

    socket.receive(applied(4, move2, 'alice', moved({ ...a, data: { label: 'A', color: 'red' } }, 2, 2)));
    socket.receive(applied(5, rename, 'alice', moved({ ...a, data: { label: 'Mine', color: 'red' } }, 2, 2)));
    assert.deepEqual(client.pending, []);
    assert.ok(!client.isPending('a'));
    assert.deepEqual(client.view, client.confirmed);
    assert.deepEqual(seen(client, 'a'), { x: 2, y: 2, label: 'Mine', color: 'red' });
  });

  test('a REVERT rolls the edit back and raises a revert event with the reason', () => {
    const { client, events } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0), node('b', 0, 0)] });
    const edgeId = client.createEdge({ source: 'a', target: 'b' });
    const [{ command }] = socket.take();
    assert.ok(client.view.edges.has(edgeId));

    // Bob deleted b first.
    socket.receive(applied(2, 'bob-del', 'bob', { nodes: [], edges: [], removedNodes: ['b'], removedEdges: [] }));
    assert.ok(!client.view.edges.has(edgeId), 'an edge to a deleted node is not shown');
    assert.ok(client.isPending(edgeId));

    const error = { code: 'NOT_FOUND', message: 'target node b does not exist' };
    socket.receive({ type: 'REVERT', graphId: G, operationId: command.operationId, error, current: { nodes: { b: null } } });
    assert.deepEqual(client.pending, []);
    assert.ok(!client.isPending(edgeId));
    assert.equal(events.revert.length, 1);
    assert.deepEqual(events.revert[0], { operationId: command.operationId, command, error, current: { nodes: { b: null } } });
  });

  test('a REVERT of one edit keeps the edits made after it', () => {
    const { client } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const bad = client.updateNode('zzz', { data: { label: 'x' } });
    client.moveNode('a', { x: 5, y: 5 });
    socket.receive({ type: 'REVERT', graphId: G, operationId: bad, error: { code: 'NOT_FOUND', message: 'node zzz does not exist' } });
    assert.equal(client.pending.length, 1);
    assert.deepEqual(seen(client, 'a'), { x: 5, y: 5 });
  });

  test('a CONFLICT is surfaced with both values', () => {
    const { client, events } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0, { label: 'A' })] });
    const op = client.updateNode('a', { data: { label: 'Mine' } });
    socket.receive({
      type: 'CONFLICT', graphId: G, operationId: op, field: '/nodes/a/data/label',
      clientValue: 'Mine', serverValue: 'Theirs', strategy: 'MERGE',
    });
    assert.equal(events.conflict.length, 1);
    assert.equal(events.conflict[0].operationId, op);
    assert.equal(events.conflict[0].command.type, 'UPDATE_NODE');
    assert.equal(events.conflict[0].field, '/nodes/a/data/label');
    assert.equal(events.conflict[0].clientValue, 'Mine');
    assert.equal(events.conflict[0].serverValue, 'Theirs');
    assert.equal(events.conflict[0].strategy, 'MERGE');
  });

  test('an ERROR refusing a command rolls it back; RATE_LIMITED sends it again later', () => {
    const { client, clock, events } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const refused = client.createNode({ id: 'bad id!', position: { x: 0, y: 0 } });
    socket.receive({ type: 'ERROR', code: 'INVALID_ID', message: 'bad id', operationId: socket.take()[0].command.operationId });
    assert.ok(!client.view.nodes.has(refused));
    assert.equal(events.revert[0].error.code, 'INVALID_ID');

    const op = client.moveNode('a', { x: 3, y: 3 });
    socket.take();
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 300, operationId: op });
    assert.deepEqual(seen(client, 'a'), { x: 3, y: 3 }, 'still shown while it waits');
    clock.tick(299);
    assert.deepEqual(socket.take(), []);
    clock.tick(1);
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [op]);
  });

  test('commands pipelined behind a RATE_LIMITED one are resent after it, one at a time, in the order made', () => {
    const { client, clock } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const ops = [1, 2, 3].map((x) => client.moveNode('a', { x, y: x }));
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), ops, 'all three on their way');
    // The gateway refuses the first, and the two behind it because of it.
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 100, operationId: ops[0] });
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'held', retryAfterMs: 99, operationId: ops[1] });
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'held', retryAfterMs: 99, operationId: ops[2] });
    assert.deepEqual(seen(client, 'a'), { x: 3, y: 3 }, 'all still shown');
    clock.tick(98);
    assert.deepEqual(socket.take(), []);
    clock.tick(1);
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [ops[0]], 'the refused one first, alone');
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: ops[0] });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [ops[1]]);
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: ops[1] });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [ops[2]]);
  });

  test('a RATE_LIMITED command settled before it went again is sent once more, so the ones behind it pass', () => {
    const { client, clock, events } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const [first, second] = [1, 2].map((x) => client.moveNode('a', { x, y: x }));
    const [sent] = socket.take('COMMAND');
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 100, operationId: first });
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'held', retryAfterMs: 99, operationId: second });
    // An earlier connection had queued it: its outcome arrives anyway.
    socket.receive(applied(2, first, 'alice', moved(node('a', 0, 0), 1, 1)));
    assert.deepEqual(client.pending.map((c) => c.operationId), [second]);

    clock.tick(100);
    const out = socket.take('COMMAND');
    assert.deepEqual(out.map((m) => m.command.operationId), [first, second], 'the refused one opens the way');
    assert.deepEqual(out[0].command, sent.command, 'the very same command');
    // Refused again: both wait once more, in the same order.
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 50, operationId: first });
    socket.receive({ type: 'ERROR', code: 'RATE_LIMITED', message: 'held', retryAfterMs: 49, operationId: second });
    assert.deepEqual(events.error, [], 'nothing to tell the app');
    clock.tick(50);
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [first, second]);
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: first, duplicate: true, status: 'completed', version: 2 });
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: second });
    const third = client.moveNode('a', { x: 3, y: 3 });
    assert.deepEqual(socket.take('COMMAND').map((m) => m.command.operationId), [third], 'and nothing is held any more');
  });

  test('undo and redo send the UNDO and REDO commands', () => {
    const { client } = setup();
    const socket = connect(client);
    client.undo();
    client.redo();
    assert.deepEqual(socket.take().map((m) => [m.command.type, m.command.payload]), [['UNDO', {}], ['REDO', {}]]);
  });
});

describe('reconnecting', () => {
  test("the browser's offline event drops the socket at once; online reconnects at once", (t) => {
    const target = new EventTarget();
    globalThis.window = target;
    t.after(() => delete globalThis.window);
    const { client, events } = setup();
    connect(client);
    client.createNode({ id: 'n', position: { x: 1, y: 1 } });
    target.dispatchEvent(new Event('offline'));
    assert.equal(client.status, 'offline', 'no waiting for a silent minute');
    assert.deepEqual(events.status.at(-1), { status: 'offline', pending: 1, retryInMs: events.status.at(-1).retryInMs });
    const sockets = FakeSocket.opened.length;
    target.dispatchEvent(new Event('online'));
    assert.equal(FakeSocket.opened.length, sockets + 1);
    assert.equal(client.status, 'connecting');
    client.close();
  });

  test('backs off exponentially with jitter, and starts over after a successful sync', () => {
    const { client, clock, events } = setup();
    connect(client);
    const delays = [];
    client.on('status', (s) => s.status === 'offline' && delays.push(s.retryInMs));
    clock.randomValue = 0;
    FakeSocket.opened.at(-1).drop();
    for (let i = 0; i < 7; i++) {
      clock.tick(delays.at(-1));
      FakeSocket.opened.at(-1).drop(); // refused again
    }
    assert.deepEqual(delays, [125, 250, 500, 1000, 2000, 4000, 5000, 5000]);

    clock.randomValue = 0.999;
    clock.tick(delays.at(-1));
    FakeSocket.opened.at(-1).drop();
    assert.equal(delays.at(-1), 9995, 'jitter spreads the delay up to the cap');

    clock.tick(delays.at(-1));
    connectAgain(FakeSocket.opened.at(-1), 1);
    FakeSocket.opened.at(-1).drop();
    assert.ok(delays.at(-1) <= 250, 'a successful sync resets the backoff');
    assert.ok(events.status.some((s) => s.status === 'online'));
  });

  test('edits made offline show at once and are sent in order after catching up', () => {
    const { client, clock } = setup();
    const first = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    first.drop();
    const n = client.createNode({ position: { x: 50, y: 50 }, data: { label: 'offline' } });
    client.moveNode('a', { x: 9, y: 9 });
    client.updateNode(n, { data: { label: 'renamed offline' } });
    assert.equal(client.status, 'offline');
    assert.deepEqual(seen(client, n), { x: 50, y: 50, label: 'renamed offline' });
    assert.deepEqual(seen(client, 'a'), { x: 9, y: 9 });

    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    assert.deepEqual(second.take().map((m) => m.type), ['SUBSCRIBE'], 'nothing is sent before the SYNC');
    second.receive({
      type: 'SYNC', graphId: G, epoch: EPOCH, version: 2, status: 'behind',
      changes: [{ version: 2, operationId: 'bob', userId: 'bob', type: 'CREATE_NODE', timestamp: 0,
        change: { nodes: [node('b', 1, 1)], edges: [], removedNodes: [], removedEdges: [] } }],
    });
    assert.deepEqual(second.take('COMMAND').map((m) => m.command.type), ['CREATE_NODE', 'UPDATE_NODE', 'UPDATE_NODE']);
    assert.ok(client.view.nodes.has('b'));
    assert.deepEqual(seen(client, n), { x: 50, y: 50, label: 'renamed offline' });
  });

  test('unconfirmed commands are resent with the same operation id and applied once', () => {
    const { client, clock, events } = setup();
    const first = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const id = client.createNode({ position: { x: 1, y: 1 } });
    const [original] = first.take();
    first.receive({ type: 'ACCEPTED', graphId: G, operationId: original.command.operationId });
    first.drop(); // before its COMMAND_APPLIED arrived

    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    second.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 1, status: 'in_sync' });
    const [resent] = second.take('COMMAND');
    assert.deepEqual(resent, original, 'the very same command, operation id included');

    const change = { nodes: [node(id, 1, 1)], edges: [], removedNodes: [], removedEdges: [] };
    second.receive({ type: 'ACCEPTED', graphId: G, operationId: original.command.operationId });
    second.receive(applied(2, original.command.operationId, 'alice', change));
    second.receive(applied(2, original.command.operationId, 'alice', change));
    assert.deepEqual(client.pending, []);
    assert.equal(client.version, 2);
    assert.equal(client.view.nodes.size, 2);
    assert.deepEqual(events.applied.map((a) => [a.version, a.own]), [[2, true]]);
  });

  test('a command applied while the socket was down is confirmed by the catch-up, not resent', () => {
    const { client, clock } = setup();
    const first = connect(client, { version: 1 });
    const id = client.createNode({ position: { x: 1, y: 1 } });
    const [{ command }] = first.take();
    first.drop();
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    second.take();
    second.receive({
      type: 'SYNC', graphId: G, epoch: EPOCH, version: 2, status: 'behind',
      changes: [{ version: 2, operationId: command.operationId, userId: 'alice', type: 'CREATE_NODE', timestamp: 0,
        change: { nodes: [node(id, 1, 1)], edges: [], removedNodes: [], removedEdges: [] } }],
    });
    assert.deepEqual(second.take('COMMAND'), []);
    assert.deepEqual(client.pending, []);
    assert.ok(client.confirmed.nodes.has(id));
  });

  test('a resent command whose outcome was announced while away is settled by asking the server', async () => {
    const answers = new Map();
    const asked = [];
    const fetch = async (url, init) => {
      asked.push([url, init.headers.Authorization]);
      const id = decodeURIComponent(url.split('/').at(-1));
      return { ok: true, json: async () => answers.get(id) };
    };
    const { client, clock, events } = setup({ fetch });
    const first = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    client.createEdge({ source: 'a', target: 'b-deleted-meanwhile' });
    client.moveNode('a', { x: 4, y: 4 });
    const [reverted, kept] = first.take().map((m) => m.command.operationId);
    first.drop();
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    // The log was trimmed: a reset that already contains the move.
    second.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 3, status: 'reset', state: { nodes: [node('a', 4, 4)], edges: [] } });
    for (const m of second.take('COMMAND')) second.receive({ type: 'ACCEPTED', graphId: G, operationId: m.command.operationId });
    answers.set(reverted, { operationId: reverted, status: 'failed', error: { code: 'NOT_FOUND', message: 'target node b-deleted-meanwhile does not exist' } });
    answers.set(kept, { operationId: kept, status: 'completed', version: 3 });

    clock.tick(1500);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(asked.length, 2);
    assert.equal(asked[0][0], `http://graphq.test/api/v2/operations/${reverted}`);
    assert.match(asked[0][1], /^Bearer /);
    assert.deepEqual(client.pending, []);
    assert.deepEqual(events.revert.map((r) => [r.operationId, r.error.code]), [[reverted, 'NOT_FOUND']]);
    assert.deepEqual(seen(client, 'a'), { x: 4, y: 4 });
  });

  test('a resent command the server says it already decided is settled from its answer', () => {
    const asked = [];
    const fetch = async (url) => { asked.push(url); return { ok: false }; };
    const { client, clock, events } = setup({ fetch });
    const first = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    client.createEdge({ source: 'a', target: 'b-deleted-meanwhile' });
    client.moveNode('a', { x: 4, y: 4 });
    const [reverted, kept] = first.take().map((m) => m.command.operationId);
    first.drop();
    clock.tick(10_000);
    const second = FakeSocket.opened[1];
    second.accept();
    second.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 3, status: 'reset', state: { nodes: [node('a', 4, 4)], edges: [] } });
    assert.deepEqual(second.take('COMMAND').map((m) => m.command.operationId), [reverted, kept]);
    second.receive({ type: 'ACCEPTED', graphId: G, operationId: reverted, duplicate: true });
    second.receive({ type: 'REVERT', graphId: G, operationId: reverted, error: { code: 'NOT_FOUND', message: 'gone' } });
    second.receive({ type: 'ACCEPTED', graphId: G, operationId: kept, duplicate: true, status: 'completed', version: 3 });
    assert.deepEqual(client.pending, []);
    assert.deepEqual(events.revert.map((r) => [r.operationId, r.error.code]), [[reverted, 'NOT_FOUND']]);
    assert.deepEqual(seen(client, 'a'), { x: 4, y: 4 });
    clock.tick(60_000);
    assert.deepEqual(asked, [], 'no need to ask the server');
  });

  test('a gap in COMMAND_APPLIED versions asks for a sync instead of applying', () => {
    const { client, clock } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    socket.receive(applied(3, 'o3', 'bob', moved(node('a'), 3, 3)));
    assert.equal(client.version, 1);
    assert.deepEqual(seen(client, 'a'), { x: 0, y: 0 });
    clock.tick(1000);
    assert.deepEqual(socket.take(), [{ type: 'REQUEST_SYNC', graphId: G, clientVersion: 1, epoch: EPOCH }]);
  });

  test('a quiet socket is asked with HEARTBEAT after 5 s: an answer keeps it, 3 s of silence replaces it', () => {
    const { client, clock, events } = setup();
    const socket = connect(client);
    clock.tick(4_999);
    assert.deepEqual(socket.take(), []);
    clock.tick(1);
    assert.deepEqual(socket.take(), [{ type: 'HEARTBEAT' }]);
    clock.tick(2_000);
    socket.receive({ type: 'HEARTBEAT', serverTime: clock.now() });
    clock.tick(4_999);
    assert.equal(client.status, 'online', 'the answer counted');
    assert.deepEqual(socket.take(), []);
    clock.tick(1);
    assert.deepEqual(socket.take(), [{ type: 'HEARTBEAT' }]);
    // The path goes silent: the socket still looks open, nothing comes back.
    clock.tick(2_999);
    assert.equal(client.status, 'online');
    clock.tick(1);
    assert.equal(client.status, 'offline', '8 s after the last word from the server');
    assert.equal(socket.readyState, 3, 'the silent socket is closed');
    assert.equal(events.status.filter((s) => s.status === 'offline').length, 1);
    clock.tick(events.status.at(-1).retryInMs);
    assert.equal(FakeSocket.opened.length, 2, 'and replaced');
  });

  test('an answer that comes back inside send() (as over SSE) counts too', () => {
    const { client, clock } = setup();
    const socket = connect(client);
    const send = socket.send.bind(socket);
    socket.send = (text) => {
      send(text);
      if (JSON.parse(text).type === 'HEARTBEAT') socket.receive({ type: 'HEARTBEAT', serverTime: clock.now() });
    };
    clock.tick(60_000);
    assert.equal(client.status, 'online');
    assert.equal(FakeSocket.opened.length, 1);
    assert.ok(socket.take('HEARTBEAT').length >= 12, 'asked at least every 5 s');
  });

  test('a command that gets no answer within 3 s drops a silent socket; the edits wait and are resent', () => {
    const { client, clock, events } = setup();
    const socket = connect(client);
    clock.tick(1_000);
    client.createNode({ id: 'a', position: { x: 1, y: 1 } });
    const [{ command }] = socket.take('COMMAND');
    clock.tick(100);
    socket.receive({ type: 'ACCEPTED', graphId: G, operationId: command.operationId });
    clock.tick(3_500);
    assert.equal(client.status, 'online', 'an ACCEPTED answered it');

    client.createNode({ id: 'b', position: { x: 2, y: 2 } });
    assert.equal(socket.take('COMMAND').length, 1);
    clock.tick(1_000);
    client.createNode({ id: 'c', position: { x: 3, y: 3 } });
    clock.tick(1_999);
    assert.equal(client.status, 'online');
    clock.tick(1);
    assert.equal(client.status, 'offline', '3 s after the first unanswered command');
    assert.equal(events.status.at(-1).pending, 3, 'all three edits are waiting');
    clock.tick(events.status.at(-1).retryInMs);
    const again = FakeSocket.opened.at(-1);
    assert.notEqual(again, socket);
    connectAgain(again, 1);
    assert.deepEqual(again.take('COMMAND').map((m) => m.command.payload.node.id), ['a', 'b', 'c'],
      'resent in order, with their operation ids');
  });

  test('a socket that never opens is given up after 10 s and another one tried', () => {
    const { client, clock } = setup();
    client.connect();
    clock.tick(9_999);
    assert.equal(client.status, 'connecting');
    clock.tick(1);
    assert.equal(client.status, 'offline');
    assert.equal(FakeSocket.opened[0].readyState, 3);
    clock.tick(250);
    assert.equal(FakeSocket.opened.length, 2);
  });

  test('the heartbeat every 15 s also renews presence; with probing off, 40 s of silence replaces the socket', () => {
    const { client, clock } = setup({ probeTimeoutMs: Infinity, probeAfterMs: Infinity });
    const socket = connect(client);
    clock.tick(15_000);
    assert.deepEqual(socket.take().map((m) => m.type), ['HEARTBEAT', 'PRESENCE'],
      'the heartbeat also tells the others this user is still here');
    clock.tick(30_000); // 45 s without a word from the server
    assert.equal(FakeSocket.opened.length, 1);
    assert.equal(client.status, 'offline');
    clock.tick(1000);
    assert.equal(FakeSocket.opened.length, 2);
  });
});

describe('presence', () => {
  /** A PRESENCE as the client sends it: every field, null when unset. */
  const presence = (fields) => ({ type: 'PRESENCE', graphId: G, cursor: null, selection: [], name: null, preview: null, ...fields });

  test('cursor updates are throttled and the latest one is always sent', () => {
    const { client, clock } = setup();
    const socket = connect(client);
    clock.tick(1000);
    client.setPresence({ cursor: { x: 1, y: 1 } });
    client.setPresence({ cursor: { x: 2, y: 2 } });
    client.setPresence({ selection: ['a'] });
    client.setPresence({ cursor: { x: 3, y: 3 } });
    assert.deepEqual(socket.take(), [presence({ cursor: { x: 1, y: 1 } })]);
    clock.tick(99);
    assert.deepEqual(socket.take(), []);
    clock.tick(1);
    assert.deepEqual(socket.take(), [presence({ cursor: { x: 3, y: 3 }, selection: ['a'] })]);
    clock.tick(1000);
    client.setPresence({ cursor: null });
    assert.deepEqual(socket.take(), [presence({ selection: ['a'] })],
      'the selection stays when only the cursor changes');
  });

  test('a name and a gesture preview go out with presence, and a preview ends with null', () => {
    const { client, clock } = setup();
    const socket = connect(client);
    clock.tick(1000);
    socket.take();
    client.setPresence({ name: 'Alice Liddell', preview: { dx: 5, dy: 0, nodes: ['a'] } });
    assert.deepEqual(socket.take(), [presence({ name: 'Alice Liddell', preview: { dx: 5, dy: 0, nodes: ['a'] } })]);
    clock.tick(100);
    client.setPresence({ preview: null });
    assert.deepEqual(socket.take(), [presence({ name: 'Alice Liddell' })]);
  });

  test('a client announces itself on joining and answers a newcomer, so idle users are listed too', () => {
    const { client, clock } = setup();
    client.connect();
    const socket = FakeSocket.opened.at(-1);
    socket.accept();
    socket.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version: 0, status: 'reset', state: { nodes: [], edges: [] } });
    assert.deepEqual(socket.take().map((m) => m.type), ['SUBSCRIBE', 'PRESENCE']);
    clock.tick(1000);
    socket.receive({ type: 'PRESENCE', graphId: G, userId: 'bob', cursor: null, selection: null, name: 'Bob B' });
    assert.deepEqual(socket.take(), [presence({})]);
    assert.equal(client.peers.get('bob').name, 'Bob B');
    clock.tick(1000);
    socket.receive({ type: 'PRESENCE', graphId: G, userId: 'bob', cursor: { x: 1, y: 1 }, selection: null });
    assert.deepEqual(socket.take(), [], 'once per arrival');
  });

  test("other users' cursors and selections are tracked until they leave or the socket drops", () => {
    const { client, events } = setup();
    const socket = connect(client);
    socket.receive({ type: 'PRESENCE', graphId: G, userId: 'bob', cursor: { x: 5, y: 6 }, selection: ['a'] });
    socket.receive({ type: 'PRESENCE', graphId: G, userId: 'alice', cursor: { x: 0, y: 0 }, selection: null });
    socket.receive({ type: 'PRESENCE', graphId: G, userId: 'carol', cursor: null, selection: null });
    assert.deepEqual([...client.peers.keys()], ['bob', 'carol'], 'not ourselves');
    assert.deepEqual(client.peers.get('bob'),
      { userId: 'bob', cursor: { x: 5, y: 6 }, selection: ['a'], name: null, preview: null });
    socket.receive({ type: 'PRESENCE_LEAVE', graphId: G, userId: 'carol' });
    assert.deepEqual([...client.peers.keys()], ['bob']);
    socket.drop();
    assert.equal(client.peers.size, 0);
    assert.equal(events.presence.length, 4);
  });
});

describe('bad server data', () => {
  test('nonsense from the server is reported, never thrown, and the state stays usable', () => {
    const { client, clock, events } = setup();
    const socket = connect(client, { version: 1, nodes: [node('a', 0, 0)] });
    const stopThrowing = client.on('change', () => {
      throw new Error('a broken UI listener');
    });
    const junk = [
      'not json', '[1,2]', '{"type":5}', 'null',
      { type: 'COMMAND_APPLIED', graphId: G, version: 'two' },
      { type: 'COMMAND_APPLIED', graphId: G, version: 2, change: 'oops', operationId: 'x' },
      { type: 'COMMAND_APPLIED', graphId: G, version: 3, change: { nodes: [null, 3, { id: 7 }, { id: 'ok', position: { x: 1, y: 1 }, data: {} }], removedNodes: 'a' } },
      { type: 'SYNC', graphId: G, epoch: EPOCH, version: 9, status: 'reset' },
      { type: 'SYNC', graphId: G, epoch: 'other', version: 9, status: 'behind', changes: [] },
      { type: 'SYNC', graphId: G, epoch: EPOCH, status: 'weird' },
      { type: 'REVERT', graphId: G, operationId: 'unknown' },
      { type: 'PRESENCE', graphId: G, userId: 'bob', cursor: 'here', selection: [1, 'a', {}] },
      { type: 'PRESENCE', graphId: G },
      { type: 'COMMAND_APPLIED', graphId: 'another-graph', version: 4, change: { removedNodes: ['a'] } },
      { type: 'NEW_THING_FROM_THE_FUTURE', graphId: G },
    ];
    const originalError = console.error;
    console.error = () => {};
    try {
      for (const frame of junk) socket.receive(frame);
    } finally {
      console.error = originalError;
      stopThrowing();
    }
    assert.equal(client.version, 3);
    assert.ok(client.view.nodes.has('a'), 'a malformed removal removes nothing');
    assert.ok(client.view.nodes.has('ok'));
    assert.equal(client.view.nodes.size, 2);
    assert.deepEqual(client.peers.get('bob'), { userId: 'bob', cursor: null, selection: ['a'], name: null, preview: null });
    assert.ok(events.error.length >= 4);
    assert.deepEqual(socket.take('REQUEST_SYNC'), [{ type: 'REQUEST_SYNC', graphId: G }], 'a full resync at once');
    clock.tick(1000);
    assert.deepEqual(socket.take('REQUEST_SYNC'), [{ type: 'REQUEST_SYNC', graphId: G }], 'then at most one a second');
    clock.tick(5000);
    assert.deepEqual(socket.take('REQUEST_SYNC'), []);

    client.moveNode('a', { x: 1, y: 2 });
    assert.deepEqual(seen(client, 'a'), { x: 1, y: 2 }, 'still editable');
  });
});

describe('token renewal', () => {
  /** Lets `getToken`'s promise settle. */
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  /** A token for alice expiring `s` seconds after the fake clock's start. */
  const aliceFor = (s) => fakeToken('alice', { exp: 1000 + s });
  /** `ms` pass with the server heartbeating often, so the socket is not presumed dead. */
  const live = (clock, socket, ms) => {
    for (let left = ms; left > 0; left -= 4_000) {
      clock.tick(Math.min(left, 4_000));
      socket.receive({ type: 'HEARTBEAT', serverTime: clock.now() });
    }
  };

  test('a REFRESH with a fresh token goes out before exp, and the renewed token is used from then on', async () => {
    const fresh = aliceFor(600);
    let calls = 0;
    const { client, clock, events } = setup({
      token: aliceFor(120),
      getToken: async () => {
        calls += 1;
        return fresh;
      },
    });
    const socket = connect(client);
    live(clock, socket, 89_000);
    await settle();
    assert.deepEqual(socket.take('REFRESH'), [], 'not yet: 31 s before exp');
    live(clock, socket, 1_000);
    await settle();
    assert.deepEqual(socket.take('REFRESH'), [{ type: 'REFRESH', token: fresh }], '30 s before exp');
    assert.equal(calls, 1);

    socket.receive({ type: 'REFRESHED', expiresAt: 1_600_000 });
    assert.deepEqual(events.refreshed, [{ expiresAt: 1_600_000 }]);
    assert.equal(client.status, 'online', 'the same socket carries on');
    live(clock, socket, 479_000);
    await settle();
    assert.deepEqual(socket.take('REFRESH'), [], 'the next one is due 30 s before the new exp');

    socket.drop();
    clock.tick(250);
    await settle();
    assert.equal(calls, 1, 'a valid token needs no new one to reconnect');
    assert.ok(FakeSocket.opened.at(-1).url.endsWith(`token=${encodeURIComponent(fresh)}`));
  });

  test('a refused REFRESH keeps the old token; a short token is renewed halfway through its life', async () => {
    const bobs = fakeToken('bob', { exp: 1600 });
    const { client, clock, events } = setup({ token: aliceFor(20), getToken: async () => bobs });
    const socket = connect(client);
    live(clock, socket, 10_000);
    await settle();
    assert.deepEqual(socket.take('REFRESH'), [{ type: 'REFRESH', token: bobs }]);
    socket.receive({ type: 'ERROR', code: 'AUTH_REFRESH_REFUSED', message: 'the token names another user' });
    assert.equal(events.error.at(-1).code, 'AUTH_REFRESH_REFUSED');
    socket.drop();
    clock.tick(250);
    await settle();
    assert.ok(FakeSocket.opened.at(-1).url.endsWith(`token=${encodeURIComponent(aliceFor(20))}`));
  });

  test('after a 4003 close it reconnects with a new token from getToken', async () => {
    const fresh = aliceFor(600);
    let calls = 0;
    const { client, clock, events } = setup({
      token: aliceFor(60),
      getToken: async () => {
        calls += 1;
        return fresh;
      },
    });
    const socket = connect(client);
    client.moveNode('n1', { x: 1, y: 1 });
    socket.closeWith(4003);
    assert.equal(events.error.at(-1).code, 'TOKEN_EXPIRED');
    assert.equal(client.status, 'offline');
    clock.tick(250);
    await settle();
    assert.equal(calls, 1, 'the token was still valid by our clock, but the server said otherwise');
    const again = FakeSocket.opened.at(-1);
    assert.notEqual(again, socket);
    assert.ok(again.url.endsWith(`token=${encodeURIComponent(fresh)}`));
    connectAgain(again, 1);
    assert.equal(client.status, 'online');
  });

  test('without getToken an expired socket reconnects with the token it has', () => {
    const { client, clock, events } = setup({ token: aliceFor(60) });
    const socket = connect(client);
    live(clock, socket, 60_000);
    assert.deepEqual(socket.take('REFRESH'), []);
    socket.closeWith(4003);
    assert.equal(events.error.at(-1).code, 'TOKEN_EXPIRED');
    clock.tick(250);
    assert.ok(FakeSocket.opened.at(-1).url.endsWith(`token=${encodeURIComponent(aliceFor(60))}`));
  });
});

/** Opens a socket the client just created and syncs it at `version`. */
function connectAgain(socket, version) {
  socket.accept();
  socket.receive({ type: 'SYNC', graphId: G, epoch: EPOCH, version, status: 'in_sync' });
}

/** An EventSource the test feeds events into. */
class FakeEventSource {
  static opened = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = new Map();
    FakeEventSource.opened.push(this);
  }

  addEventListener(name, listener) {
    this.listeners.set(name, listener);
  }

  close() {
    this.readyState = 2;
  }

  emit(message) {
    this.readyState = 1;
    this.listeners.get(message.type)?.({ data: JSON.stringify(message) });
  }
}

/** Lets the transport's timers and promises run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('the SSE transport', () => {
  test('commands posted behind a RATE_LIMITED one are held, not posted, and go after it in the order made', async () => {
    FakeEventSource.opened = [];
    /** Every POST, answered by the test through `answer`. */
    const posts = [];
    const fetch = (url, init) => new Promise((resolve) => {
      posts.push({ url, command: JSON.parse(init.body), answer: (status, body) => resolve({
        ok: status < 300, status, json: async () => body,
      }) });
    });
    const clock = new FakeClock();
    const client = new GraphqClient({
      url: 'ws://graphq.test/ws', token: fakeToken('alice'), graphId: G, transport: 'sse',
      fetch, EventSource: FakeEventSource, clock, device: false,
    });
    client.connect();
    await settle();
    const events = FakeEventSource.opened.at(-1);
    assert.match(events.url, /\/api\/v2\/graphs\/g1\/events\?/);
    events.emit({
      type: 'SYNC', graphId: G, epoch: EPOCH, version: 1, status: 'reset',
      state: { graphId: G, epoch: EPOCH, version: 1, nodes: [node('a', 0, 0)], edges: [], viewport: null, checksum: '0' },
    });
    assert.equal(client.status, 'online');

    const ops = [1, 2, 3].map((x) => client.moveNode('a', { x, y: x }));
    await settle();
    const posted = () => posts.map((p) => p.command.operationId);
    assert.deepEqual(posted(), [ops[0]], 'one request at a time');
    posts[0].answer(429, { error: { code: 'RATE_LIMITED', message: 'too many commands', retryAfterMs: 100 } });
    await settle();
    await settle();
    assert.deepEqual(posted(), [ops[0]], 'the two behind it are not posted while it waits');
    assert.deepEqual(seen(client, 'a'), { x: 3, y: 3 }, 'but still shown');

    clock.tick(100);
    await settle();
    assert.deepEqual(posted(), [ops[0], ops[0]], 'the refused one goes first');
    posts[1].answer(202, { operationId: ops[0] });
    await settle();
    await settle();
    assert.deepEqual(posted(), [ops[0], ops[0], ops[1]]);
    posts[2].answer(202, { operationId: ops[1] });
    await settle();
    await settle();
    assert.deepEqual(posted(), [ops[0], ops[0], ops[1], ops[2]]);
    posts[3].answer(202, { operationId: ops[2] });
    await settle();
    client.close();
  });
});
