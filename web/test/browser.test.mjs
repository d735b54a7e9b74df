// The demo editor in a real browser: Debian's Chromium, driven headless by
// playwright-core, two browser contexts as two users, against a real
// `graphq gateway`, `graphq worker` and redis-server started here.
// Screenshots of both windows go to web/test-output/.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  TEST_TIMEOUT, addNodeAt, centre, connect, drag, node, nodeAt, rename, settled, shown, startWorld,
} from '../testing/editor.mjs';
import { startGraphqDev } from '../testing/servers.mjs';

const PREFIX = `webtest${process.pid}`;

let world;
let proxy;

before(async () => {
  world = await startWorld(PREFIX);
  proxy = world.proxy;
}, { timeout: 60_000 });

after(() => world?.stop(), { timeout: 20_000 });

describe('two users in two browser windows', () => {
  test('a node created, dragged and renamed in one window shows in the other, with cursors and undo', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'together';
    const { a, b, close } = await world.openPair(graph);

    const id = await addNodeAt(a, 200, 150);
    await node(b, id).waitFor();
    await nodeAt(b, id, 200, 150);

    const from = await centre(a, id);
    await drag(a, from, { x: from.x + 250, y: from.y + 110 });
    await nodeAt(a, id, 450, 260);
    await nodeAt(b, id, 450, 260);

    await rename(a, id, 'Alpha');
    await b.locator(`#nodes .node[data-id="${id}"] .node-label`, { hasText: 'Alpha' }).waitFor();

    const second = await addNodeAt(b, 640, 120);
    await node(a, second).waitFor();
    await connect(a, id, second);
    await b.locator(`#edges .edge[data-source="${id}"][data-target="${second}"]`).waitFor();

    // Alice's selection, pointer and name are on Bob's canvas; both are listed in each window.
    await node(a, id).click();
    await b.waitForFunction((id) => {
      const tag = document.querySelector(`#nodes .node[data-id="${id}"] .node-remote-tag`);
      return tag?.getAttribute('visibility') === 'visible' && tag.textContent === 'alice';
    }, id);
    await a.mouse.move(300, 400);
    await b.locator('#cursors .cursor[data-user="alice"]').waitFor();
    assert.equal(await b.locator('#cursors .cursor[data-user="alice"] text').textContent(), 'alice');
    await a.locator('#people .avatar[data-user="bob"]').waitFor();

    // Ctrl+Z asks the server to undo Alice's last change (the edge); Ctrl+Shift+Z redoes it.
    await a.keyboard.press('Control+z');
    await b.locator(`#edges .edge[data-source="${id}"]`).waitFor({ state: 'detached' });
    await a.keyboard.press('Control+Shift+z');
    await b.locator(`#edges .edge[data-source="${id}"]`).waitFor();

    const state = await world.serverState(graph);
    await settled(a, state.version);
    await settled(b, state.version);
    assert.deepEqual(await shown(a), { nodes: state.nodes, edges: state.edges });
    assert.deepEqual(await shown(b), { nodes: state.nodes, edges: state.edges });
    await world.screenshots('1-together', { alice: a, bob: b });
    await close();
  });

  test('an edge to a node the other user just deleted is pending, then rolls back with a toast', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'rollback';
    const { a, b, close } = await world.openPair(graph);
    const kept = await addNodeAt(a, 180, 200);
    const doomed = await addNodeAt(b, 560, 260);
    await node(a, doomed).waitFor();
    await rename(b, doomed, 'Doomed');
    await a.locator(`#nodes .node[data-id="${doomed}"] .node-label`, { hasText: 'Doomed' }).waitFor();

    // Alice does not hear of the delete before she draws her edge.
    proxy.hold();
    t.after(() => proxy.release());
    await node(b, doomed).click();
    await b.keyboard.press('Delete');
    await node(b, doomed).waitFor({ state: 'detached' });
    await connect(a, kept, doomed);
    const edge = a.locator(`#edges .edge[data-source="${kept}"][data-target="${doomed}"]`);
    await edge.waitFor();
    assert.ok(await edge.evaluate((g) => g.classList.contains('pending')), 'the new edge is marked pending');
    await world.screenshots('2-before-rollback', { alice: a, bob: b });

    proxy.release();
    await edge.waitFor({ state: 'detached' });
    await node(a, doomed).waitFor({ state: 'detached' });
    const toast = a.locator('.toast', { hasText: 'rolled back' });
    await toast.waitFor();
    assert.match(await toast.textContent(), /Your new connection was rolled back.*Target node “Doomed” does not exist/);
    await world.screenshots('2-rolled-back', { alice: a, bob: b });

    const state = await world.serverState(graph);
    assert.deepEqual(state.edges, {});
    assert.deepEqual(Object.keys(state.nodes), [kept]);
    await settled(a, state.version);
    assert.deepEqual(await shown(a), { nodes: state.nodes, edges: {} });
    assert.deepEqual(await shown(b), { nodes: state.nodes, edges: {} });
    await close();
  });

  test('edits made while the socket is cut are kept, flushed on reconnect, and both windows converge', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'offline';
    const { a, b, close } = await world.openPair(graph);
    const one = await addNodeAt(a, 160, 140);
    const two = await addNodeAt(a, 420, 300);
    await node(b, two).waitFor();

    proxy.cut();
    t.after(() => proxy.restore());
    await a.locator('#conn[data-status="offline"]').waitFor();

    // Alice, offline: a new node, a rename, a move, a connection.
    const three = await addNodeAt(a, 650, 160);
    await rename(a, one, 'Renamed offline');
    const c = await centre(a, two);
    await drag(a, c, { x: c.x - 60, y: c.y + 80 });
    await connect(a, one, three);
    await a.locator('#conn', { hasText: 'edits waiting' }).waitFor();
    assert.ok(await node(a, three).evaluate((g) => g.classList.contains('pending')));

    // Bob, online meanwhile: his own node, and he moves Alice's first one.
    const four = await addNodeAt(b, 300, 420);
    const c1 = await centre(b, one);
    await drag(b, c1, { x: c1.x + 40, y: c1.y - 30 });
    assert.equal(await node(b, three).count(), 0, 'Bob sees nothing of what Alice did offline');
    await world.screenshots('3-offline', { alice: a, bob: b });

    proxy.restore();
    await a.locator('#conn[data-status="online"]').waitFor({ timeout: 20_000 });
    await a.waitForFunction(() => window.graphqEditor.client.pending.length === 0);
    const state = await world.serverState(graph);
    await settled(a, state.version);
    await settled(b, state.version);
    assert.deepEqual(Object.keys(state.nodes).sort(), [one, two, three, four].sort());
    assert.equal(state.nodes[one].label, 'Renamed offline');
    near(state.nodes[one], { x: 200, y: 110 }, "Bob's move and Alice's offline rename both hold");
    near(state.nodes[two], { x: 360, y: 380 }, "Alice's offline move holds");
    assert.deepEqual(Object.values(state.edges), [`${one}->${three}`]);
    assert.deepEqual(await shown(a), { nodes: state.nodes, edges: state.edges });
    assert.deepEqual(await shown(b), { nodes: state.nodes, edges: state.edges });
    await world.screenshots('3-converged', { alice: a, bob: b });
    await close();
  });
});

/** Positions on screen are whole pixels; a drag may land one off. */
function near(actual, expected, message) {
  assert.ok(Math.abs(actual.x - expected.x) <= 1 && Math.abs(actual.y - expected.y) <= 1,
    `${message}: at (${actual.x}, ${actual.y}), expected (${expected.x}, ${expected.y})`);
}

describe('under graphq dev', () => {
  let dev;
  before(async () => {
    dev = await startGraphqDev({ redisUrl: world.redis.url, prefix: `${PREFIX}dev` });
  }, { timeout: 30_000 });
  after(() => dev?.stop(), { timeout: 10_000 });

  test('without a token the page asks for a name, gets a demo token and joins', { timeout: TEST_TIMEOUT }, async () => {
    const page = await world.bob.newPage();
    await page.goto(`${dev.base}/?graph=lobby`);
    const dialog = page.locator('dialog#login');
    await dialog.waitFor();
    await dialog.locator('input').fill('carol');
    await dialog.locator('button').click();
    await page.locator('#conn[data-status="online"]').waitFor();
    assert.equal(await page.locator('#people .avatar.me').getAttribute('title'), 'carol (you)');
    const id = await addNodeAt(page, 300, 200);
    await page.waitForFunction((id) => window.graphqEditor.client.confirmed.nodes.has(id), id);
    await page.close();
  });

  test('a short demo token is renewed on the open socket and the editor stays live past its expiry', { timeout: TEST_TIMEOUT }, async () => {
    const page = await world.bob.newPage();
    // A 3 s token: the client sends REFRESH halfway through each token's life.
    await page.goto(`${dev.base}/?graph=renewal&tokenTtl=3`);
    const dialog = page.locator('dialog#login');
    await dialog.waitFor();
    await dialog.locator('input').fill('dave');
    await dialog.locator('button').click();
    await page.locator('#conn[data-status="online"]').waitFor();
    await page.evaluate(() => {
      const seen = (window.tokenSeen = { refreshed: 0, left: false, expired: false });
      const { client } = window.graphqEditor;
      client.on('refreshed', () => { seen.refreshed += 1; });
      client.on('status', (s) => { if (s.status !== 'online') seen.left = true; });
      client.on('error', (e) => { if (e.code === 'TOKEN_EXPIRED') seen.expired = true; });
    });
    // Three renewals take the socket well past the first token's exp.
    await page.waitForFunction(() => window.tokenSeen.refreshed >= 3);
    const id = await addNodeAt(page, 300, 200);
    await page.waitForFunction((id) => window.graphqEditor.client.confirmed.nodes.has(id), id);
    const seen = await page.evaluate(() => window.tokenSeen);
    assert.deepEqual({ left: seen.left, expired: seen.expired }, { left: false, expired: false },
      'the socket was never closed');
    await page.close();
  });
});
