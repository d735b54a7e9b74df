// How the demo editor feels, in a real browser against a real gateway,
// worker and Redis, two users: one gesture is one change, the status tells
// the truth offline, zoom, toasts that do not pile up, who is here, where
// new nodes go, and a 2,000-node graph drawn only where it is seen.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  OUTPUT, TEST_TIMEOUT, addNodeAt, centre, node, nodeAt, panFrames, rename, seed, seedGrid, settled, startWorld,
} from '../testing/editor.mjs';

let world;

before(async () => {
  world = await startWorld(`webfeel${process.pid}`);
}, { timeout: 60_000 });

after(() => world?.stop(), { timeout: 20_000 });

/** Until the server's graph is at `version` and both windows show it with nothing pending. */
async function allAt(graph, pages) {
  for (const page of pages) await page.waitForFunction(() => window.graphqEditor.client.pending.length === 0);
  const state = await world.serverState(graph);
  for (const page of pages) await settled(page, state.version);
  return state;
}

describe('one gesture is one change', () => {
  test('a one-second drag makes one version, the other user sees it move before the drop, one Ctrl+Z undoes it', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'gesture';
    const { a, b, close } = await world.openPair(graph);
    const id = await addNodeAt(a, 200, 150);
    const before = await allAt(graph, [a, b]);

    const from = await centre(a, id);
    await a.mouse.move(from.x, from.y);
    await a.mouse.down();
    // About a second of small moves, as a hand makes them.
    for (let i = 1; i <= 20; i += 1) {
      await a.mouse.move(from.x + i * 10, from.y + i * 5);
      await a.waitForTimeout(50);
    }
    // Mid-drag: Bob already sees the node away from where it was, and nothing was versioned.
    await b.waitForFunction((id) => Number(document.querySelector(`#nodes .node[data-id="${id}"]`)?.dataset.x) > 300, id);
    assert.equal((await world.serverState(graph)).version, before.version, 'a preview is never versioned');
    assert.ok(await node(b, id).evaluate((g) => g.classList.contains('remote-moving')), 'marked as moved by alice');
    await a.mouse.up();

    await nodeAt(b, id, 400, 250);
    const after = await allAt(graph, [a, b]);
    assert.ok(after.version - before.version <= 2, `the drag made ${after.version - before.version} versions`);
    assert.deepEqual(after.nodes[id], { label: 'Node 1', x: 400, y: 250 });

    await a.keyboard.press('Control+z');
    await nodeAt(b, id, 200, 150);
    await nodeAt(a, id, 200, 150);
    const undone = await allAt(graph, [a, b]);
    assert.deepEqual(undone.nodes[id], { label: 'Node 1', x: 200, y: 150 }, 'one Ctrl+Z restored the whole drag');
    await world.screenshots('4-gesture', { alice: a, bob: b });
    await close();
  });

  test('shift-click selects several nodes; they move as one batch and one undo step; a selection deletes and pastes as one', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'group';
    const { a, b, close } = await world.openPair(graph);
    const one = await addNodeAt(a, 150, 150);
    const two = await addNodeAt(a, 400, 150);
    const before = await allAt(graph, [a, b]);
    await node(a, one).click();
    await node(a, two).click({ modifiers: ['Shift'] });
    assert.deepEqual(await a.evaluate(() => [...window.graphqEditor.selNodes]), [one, two]);
    await node(a, two).click({ modifiers: ['Shift'] });
    assert.deepEqual(await a.evaluate(() => [...window.graphqEditor.selNodes]), [one], 'shift-click again leaves it out');
    await node(a, two).click({ modifiers: ['Shift'] });

    const c = await centre(a, two);
    await a.mouse.move(c.x, c.y);
    await a.mouse.down();
    await a.mouse.move(c.x + 50, c.y + 100, { steps: 10 });
    await a.mouse.up();
    await nodeAt(b, one, 200, 250);
    await nodeAt(b, two, 450, 250);
    const moved = await allAt(graph, [a, b]);
    assert.equal(moved.version, before.version + 1, 'both moves are one version');

    await a.keyboard.press('Control+z');
    await nodeAt(b, one, 150, 150).catch(async (err) => {
      throw new Error(`${err.message}; Alice's messages: ${await a.locator('#toasts').textContent()}`);
    });
    await nodeAt(b, two, 400, 150);

    // Copy and paste the two: one change; then delete the copies: one change.
    await a.keyboard.press('Control+a');
    await a.keyboard.press('Control+c');
    await a.keyboard.press('Control+v');
    await b.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 4);
    const pasted = await allAt(graph, [a, b]);
    assert.equal(pasted.version, moved.version + 2, 'the paste is one version');
    await a.keyboard.press('Delete');
    await b.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 2);
    const deleted = await allAt(graph, [a, b]);
    assert.equal(deleted.version, pasted.version + 1, 'deleting a selection is one version');
    assert.deepEqual(Object.keys(deleted.nodes).sort(), [one, two].sort());
    await close();
  });
});

describe('the status tells the truth', () => {
  test('with the network gone the pill leaves "Live" within 3 s and counts the waiting edits', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'network';
    const { a, b, close } = await world.openPair(graph);
    const id = await addNodeAt(a, 300, 200);
    await allAt(graph, [a, b]);
    await world.alice.setOffline(true);
    try {
      await a.locator('#conn[data-status="online"]').waitFor({ state: 'detached', timeout: 3000 });
      await node(a, id).focus();
      await a.keyboard.press('ArrowRight');
      await a.keyboard.press('ArrowRight');
      await a.locator('#conn', { hasText: '2 edits waiting' }).waitFor();
      await world.screenshots('5-offline', { alice: a });
    } finally {
      await world.alice.setOffline(false);
    }
    await a.locator('#conn[data-status="online"]').waitFor({ timeout: 20_000 });
    await nodeAt(b, id, 320, 200);
    await close();
  });

  test('repeated identical outcomes make one toast, below the canvas, in the user\'s words', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'toasts';
    const { a, b, close } = await world.openPair(graph);
    const id = await addNodeAt(a, 300, 200);
    await rename(b, id, 'Shared');
    await a.locator(`#nodes .node[data-id="${id}"] .node-label`, { hasText: 'Shared' }).waitFor();
    await allAt(graph, [a, b]);

    // Alice moves the node three times without hearing that Bob deleted it.
    world.proxy.hold();
    t.after(() => world.proxy.release());
    await node(b, id).click();
    await b.keyboard.press('Delete');
    await node(b, id).waitFor({ state: 'detached' });
    await node(a, id).focus();
    for (let i = 0; i < 3; i += 1) await a.keyboard.press('ArrowDown');
    world.proxy.release();

    const toast = a.locator('.toast', { hasText: 'rolled back' });
    await toast.waitFor();
    await a.waitForFunction(() => document.querySelector('.toast .toast-count')?.textContent === '×3');
    assert.equal(await a.locator('.toast').count(), 1, 'one toast for three identical outcomes');
    assert.match(await toast.textContent(), /Moving a node was rolled back.*Node “Shared” does not exist/);
    const canvas = await a.locator('#canvas').boundingBox();
    const box = await toast.boundingBox();
    assert.ok(box.y >= canvas.y + canvas.height - 1, 'the toast does not cover the canvas');
    await world.screenshots('6-one-toast', { alice: a });
    await close();
  });

  test('two users renaming one node: the loser gets one message naming the winner', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'renames';
    const { a, b, close } = await world.openPair(graph, { bobQuery: '&name=Bob%20Builder' });
    const id = await addNodeAt(a, 300, 200);
    await node(b, id).waitFor();
    await allAt(graph, [a, b]);
    world.proxy.hold();
    t.after(() => world.proxy.release());
    await rename(b, id, 'From Bob');
    // Bob's rename is applied (nothing of his pending) before Alice makes hers.
    await b.waitForFunction(() => {
      const c = window.graphqEditor.client;
      return c.status === 'online' && c.pending.length === 0;
    });
    await rename(a, id, 'From Alice');
    await a.waitForTimeout(300);
    world.proxy.release();
    const toast = a.locator('.toast');
    await toast.waitFor();
    await a.locator(`#nodes .node[data-id="${id}"] .node-label`, { hasText: 'From Bob' }).waitFor();
    await a.waitForTimeout(400);
    assert.equal(await toast.count(), 1);
    const text = await toast.textContent();
    assert.match(text, /Bob Builder renamed that node before you/);
    assert.match(text, /It stays “From Bob”; rename it again to use “From Alice”/);
    assert.doesNotMatch(text, /data\.label|\{/, 'no field paths, no JSON');
    await close();
  });
});

describe('zoom, people, placement', () => {
  test('the wheel zooms around the pointer; buttons zoom and fit; the viewport stays this user\'s own', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'zoom';
    await seed(world, graph, [{ type: 'CREATE_NODE', payload: { node: { id: 'far', position: { x: 1600, y: 1200 } } } }]);
    const { a, b, close } = await world.openPair(graph);
    const id = await addNodeAt(a, 400, 300);
    const before = await allAt(graph, [a, b]);
    const c = await centre(a, id);
    await a.mouse.move(c.x, c.y);
    await a.mouse.wheel(0, -400);
    await a.waitForFunction(() => window.graphqEditor.camera.zoom > 1.5);
    const after = await centre(a, id);
    assert.ok(Math.abs(after.x - c.x) < 2 && Math.abs(after.y - c.y) < 2, 'the point under the pointer stays put');
    await a.locator('#zoom-out').click();
    await a.locator('#fit').click();
    await a.waitForFunction(() => window.graphqEditor.camera.zoom < 1);
    // Fit shows every node.
    await a.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 2);
    assert.equal(await b.evaluate(() => window.graphqEditor.camera.zoom), 1, "Bob's view is his own");
    assert.equal((await world.serverState(graph)).version, before.version, 'zoom is not a command');
    // Bob follows Alice: his view takes hers.
    await b.locator('#people button.avatar[data-user="alice"]').click();
    await b.waitForFunction(() => window.graphqEditor.camera.zoom < 1);
    await b.locator('#follow', { hasText: 'Following alice' }).waitFor();
    await close();
  });

  test('everyone connected is listed before anyone moves, with names that have spaces', { timeout: TEST_TIMEOUT }, async () => {
    const { a, b, close } = await world.openPair('people', { aliceQuery: '&name=Alice%20Liddell' });
    await b.locator('#people .avatar[data-user="alice"][title^="Alice Liddell"]').waitFor();
    await a.locator('#people .avatar[data-user="bob"]').waitFor();
    assert.equal(await a.locator('#people .avatar.me').getAttribute('title'), 'Alice Liddell (you)');
    await close();
  });

  test('"+ Node" puts each new node where nothing is', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'placement';
    const { a, close } = await world.openPair(graph);
    for (let i = 0; i < 6; i += 1) await a.locator('#add-node').click();
    await a.waitForFunction(() => window.graphqEditor.client.view.nodes.size === 6);
    const boxes = await a.$$eval('#nodes .node .node-body', (rects) => rects.map((r) => r.getBoundingClientRect().toJSON()));
    for (const [i, p] of boxes.entries()) {
      for (const q of boxes.slice(i + 1)) {
        const overlap = p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom;
        assert.ok(!overlap, `two new nodes overlap: ${JSON.stringify([p, q])}`);
      }
    }
    await close();
  });
});

describe('a big graph', () => {
  test('2,000 nodes and 2,000 edges: only what is on screen is drawn, and panning brings the rest', { timeout: 120_000 }, async () => {
    const graph = 'big';
    const nodes = 2000;
    await seedGrid(world, graph, nodes);
    const { a, b, close } = await world.openPair(graph);
    await a.waitForFunction((n) => window.graphqEditor.client.view.nodes.size === n, nodes);
    const drawn = () => a.evaluate(() => ({
      nodes: document.querySelectorAll('#nodes .node').length, edges: document.querySelectorAll('#edges .edge').length,
    }));
    const first = await drawn();
    assert.ok(first.nodes > 10 && first.nodes < 200, `drawn: ${JSON.stringify(first)}`);
    assert.ok(first.edges < 1000, `drawn: ${JSON.stringify(first)}`);

    // Pan with the mouse for a second, timing every frame.
    const pan = await panFrames(a);
    writeFileSync(path.join(OUTPUT, 'big-graph-pan.json'), JSON.stringify(pan));
    await a.locator('#nodes .node[data-id="b305"]').waitFor();
    assert.equal(await a.locator('#nodes .node[data-id="b0"]').count(), 0, 'what left the screen is no longer drawn');

    // Bob drags a node: one command; Alice's window has it where he dropped it.
    const c = await centre(b, 'b52');
    await b.mouse.move(c.x, c.y);
    await b.mouse.down();
    await b.mouse.move(c.x + 40, c.y + 20, { steps: 8 });
    await b.mouse.up();
    await a.waitForFunction(() => {
      const p = window.graphqEditor.client.view.nodes.get('b52').position;
      return p.x === 400 && p.y === 110;
    });
    await close();
  });
});

describe('keyboard, small screens, leaving', () => {
  test('nodes take keyboard focus and are selected, moved, renamed and connected from the keyboard', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'keyboard';
    const { a, b, close } = await world.openPair(graph);
    const one = await addNodeAt(a, 200, 200);
    const two = await addNodeAt(a, 500, 200);
    await allAt(graph, [a, b]);
    await node(a, one).focus();
    assert.deepEqual(await a.evaluate(() => window.graphqEditor.selection), { kind: 'node', id: one }, 'focus selects');
    await a.locator(`#nodes .node[data-id="${one}"][aria-label="Node Node 1, selected"]`).waitFor();
    await a.keyboard.press('ArrowRight');
    await nodeAt(b, one, 210, 200);
    await a.keyboard.press('Enter');
    await a.locator('#rename').fill('Typed name');
    await a.locator('#rename').press('Enter');
    await b.locator(`#nodes .node[data-id="${one}"] .node-label`, { hasText: 'Typed name' }).waitFor();
    await node(a, two).click({ modifiers: ['Shift'] });
    await a.keyboard.press('c');
    await b.locator(`#edges .edge[data-source="${one}"][data-target="${two}"]`).waitFor({ state: 'attached' });
    // The accessibility tree names the nodes; the version is not announced.
    const snapshot = await a.locator('#canvas').ariaSnapshot();
    assert.match(snapshot, /button "Node Typed name/);
    assert.equal(await a.locator('#conn [role="status"]').textContent(), 'Live');
    // Text against what is behind it: at least 4.5:1, for every user colour too.
    const worst = await a.evaluate(() => {
      const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => {
        const [r, g, b] = rgb(c).map((v) => { const s = v / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const contrast = (x, y) => (Math.max(lum(x), lum(y)) + 0.05) / (Math.min(lum(x), lum(y)) + 0.05);
      const probe = document.createElement('span');
      document.body.append(probe);
      const checks = [];
      for (let i = 0; i < 300; i += 1) {
        // User colours as the editor gives them, behind white text.
        probe.style.color = window.graphqEditor.colorOf(`user${i}`);
        checks.push([`user${i}`, contrast(getComputedStyle(probe).color, 'rgb(255, 255, 255)')]);
      }
      probe.remove();
      for (const sel of ['.graph-name', '#conn .conn-text', '.hint', '#people .avatar']) {
        const e = document.querySelector(sel);
        let bg = e;
        while (getComputedStyle(bg).backgroundColor === 'rgba(0, 0, 0, 0)') bg = bg.parentElement;
        checks.push([sel, contrast(getComputedStyle(e).color, getComputedStyle(bg).backgroundColor)]);
      }
      return checks.sort((x, y) => x[1] - y[1])[0];
    });
    assert.ok(worst[1] >= 4.5, `contrast of ${worst[0]}: ${worst[1].toFixed(2)}`);
    await close();
  });

  test('at 390 px wide the toolbar fits without sideways scrolling', { timeout: TEST_TIMEOUT }, async () => {
    const page = await world.bob.newPage({ viewport: { width: 390, height: 740 } });
    await page.setViewportSize({ width: 390, height: 740 });
    await page.goto(`${world.graphq.base}/?graph=narrow&token=${world.tokens.bob}`);
    await page.locator('#conn[data-status="online"]').waitFor();
    const sizes = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, bar: document.querySelector('.bar').scrollWidth }));
    assert.ok(sizes.scroll <= 390 && sizes.bar <= 390, JSON.stringify(sizes));
    for (const id of ['add-node', 'undo', 'redo', 'delete', 'zoom-in', 'zoom-out']) {
      const box = await page.locator(`#${id}`).boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= 390, `#${id} is on screen`);
    }
    await world.screenshots('7-narrow', { bob: page });
    await page.close();
  });

  test('leaving with edits neither sent nor saved on the device asks first', { timeout: TEST_TIMEOUT }, async (t) => {
    const { a, b, close } = await world.openPair('leaving', { aliceQuery: '&device=off' });
    world.proxy.cut();
    t.after(() => world.proxy.restore());
    await a.locator('#conn[data-status="offline"]').waitFor();
    await addNodeAt(a, 300, 200);
    const asked = new Promise((resolve) => a.once('dialog', async (d) => {
      resolve(d.type());
      await d.dismiss();
    }));
    await a.close({ runBeforeUnload: true });
    assert.equal(await asked, 'beforeunload');
    world.proxy.restore();
    await b.close();
    void close;
  });
});
