// How the demo editor feels, in a real browser against a real gateway,
// worker and Redis, two users: one gesture is one change, selecting and
// duplicating, long labels, the status tells the truth offline and on a
// network that dies silently, zoom (wheel, Ctrl+wheel, pinch, minimap),
// toasts that do not pile up, who is here, where new nodes go, and a
// 2,000-node graph drawn only where it is seen.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  OUTPUT, TEST_TIMEOUT, addNodeAt, centre, node, nodeAt, panFrames, pinch, rename, seed, seedGrid, settled, startWorld,
} from '../testing/editor.mjs';

let world;

before(async () => {
  world = await startWorld(`webfeel${process.pid}`);
}, { timeout: 60_000 });

after(() => world?.stop(), { timeout: 20_000 });

/** Nodes to seed: `[id, x, y, label]` each. */
const nodes = (...list) => list.map(([id, x, y, label]) => ({
  type: 'CREATE_NODE', payload: { node: { id, position: { x, y }, data: { label } } },
}));

/** Until the page has drawn what was asked of it before (its next animation frame). */
const frame = (page) => page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve())));

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
  test('Shift-drag on the canvas selects the nodes inside; Ctrl+D duplicates them with their connection; Ctrl+A selects all, also off screen', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'marquee';
    await seed(world, graph, [
      ...nodes(['one', 150, 150, 'One'], ['two', 350, 150, 'Two'], ['three', 300, 400, 'Three'], ['away', 2400, 1800, 'Away']),
      { type: 'CREATE_EDGE', payload: { edge: { id: 'one-two', source: 'one', target: 'two' } } },
    ]);
    const { a, b, close } = await world.openPair(graph);
    const start = await allAt(graph, [a, b]);
    const selected = () => a.evaluate(() => [...window.graphqEditor.selNodes].sort());
    const canvas = await a.locator('#canvas').boundingBox();

    await a.keyboard.down('Shift');
    await a.mouse.move(canvas.x + 60, canvas.y + 110);
    await a.mouse.down();
    await a.mouse.move(canvas.x + 450, canvas.y + 200, { steps: 8 });
    assert.equal(await a.locator('#marquee').getAttribute('visibility'), 'visible', 'the marquee shows while dragging');
    await a.mouse.up();
    await a.keyboard.up('Shift');
    assert.deepEqual(await selected(), ['one', 'two'], 'the two inside, not the one below');
    assert.equal(await a.locator('#marquee').getAttribute('visibility'), 'hidden');
    assert.equal((await world.serverState(graph)).version, start.version, 'selecting is not a command');
    await b.locator('#nodes .node[data-id="one"] .node-remote-tag', { hasText: 'alice' }).waitFor();

    await a.keyboard.press('Control+d');
    await b.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 5);
    const copied = await allAt(graph, [a, b]);
    assert.equal(copied.version, start.version + 1, 'the duplicate is one version');
    const copies = (await selected()).filter((id) => !['one', 'two'].includes(id));
    assert.equal(copies.length, 2, 'the copies are selected');
    assert.deepEqual(copies.map((id) => copied.nodes[id]).sort((p, q) => p.x - q.x),
      [{ label: 'One', x: 190, y: 190 }, { label: 'Two', x: 390, y: 190 }], '40 px further');
    assert.deepEqual(Object.values(copied.edges).filter((e) => e !== 'one->two'),
      [`${copies.find((id) => copied.nodes[id].label === 'One')}->${copies.find((id) => copied.nodes[id].label === 'Two')}`],
      'with the connection between them');

    await a.keyboard.press('Control+a');
    assert.deepEqual(await selected(), Object.keys(copied.nodes).sort(), 'every node, the one off screen too');
    assert.equal(await node(a, 'away').count(), 0, '"away" is not drawn');
    await a.keyboard.press('Delete');
    await b.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 0);
    const empty = await allAt(graph, [a, b]);
    assert.equal(empty.version, copied.version + 1, 'deleting everything is one version');
    assert.deepEqual(empty.nodes, {});
    await a.keyboard.press('Control+z');
    await b.waitForFunction(() => document.querySelectorAll('#nodes .node').length === 5);
    assert.deepEqual((await allAt(graph, [a, b])).nodes, copied.nodes, 'one Ctrl+Z brings all of it back');
    await close();
  });

  test('a long label is cut on its node and shown whole while the node is pointed at, focused or selected', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'labels';
    const long = 'Quarterly revenue reconciliation for the northern region, including late invoices and the disputed credit notes from March';
    await seed(world, graph, nodes(['long', 300, 200, long], ['short', 300, 350, 'Short']));
    const { a, close } = await world.openPair(graph);
    const drawn = await node(a, 'long').locator('.node-label').textContent();
    assert.ok(drawn.length < long.length && drawn.endsWith('…'), `cut on the canvas: ${drawn}`);
    const body = await node(a, 'long').locator('.node-body').boundingBox();
    const text = await node(a, 'long').locator('.node-label').boundingBox();
    assert.ok(text.x >= body.x && text.x + text.width <= body.x + body.width, 'the cut label fits its node');
    const whole = a.locator('#label-full');
    /** The whole label is on screen, not clipped, and does not hide its node. */
    const readable = async () => {
      await whole.waitFor();
      assert.equal(await whole.textContent(), long);
      const box = await whole.boundingBox();
      const view = a.viewportSize();
      assert.ok(box.x >= 0 && box.y >= 0 && box.x + box.width <= view.width && box.y + box.height <= view.height, JSON.stringify(box));
      assert.ok(await whole.evaluate((e) => e.scrollHeight <= e.clientHeight && e.scrollWidth <= e.clientWidth), 'nothing clipped');
      const n = await node(a, 'long').locator('.node-body').boundingBox();
      assert.ok(box.y + box.height <= n.y || box.y >= n.y + n.height, 'beside its node, not over it');
    };

    const c = await centre(a, 'long');
    await a.mouse.move(c.x, c.y);
    await readable();
    const s = await centre(a, 'short');
    await a.mouse.move(s.x, s.y);
    await whole.waitFor({ state: 'hidden' });
    await a.mouse.move(5, 5);
    await node(a, 'long').focus();
    await readable();
    await node(a, 'short').focus();
    await whole.waitFor({ state: 'hidden' });
    await node(a, 'long').click();
    await a.mouse.move(5, 5);
    await readable();
    assert.match(await node(a, 'long').getAttribute('aria-label'), new RegExp(long), 'screen readers get it whole');
    await world.screenshots('9-long-label', { alice: a });
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

  test('a network that dies silently: "Live" goes within 3 s of an edit (8 s idle), waiting edits are counted, and each is applied once when it is back', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'silent';
    const { a, b, close } = await world.openPair(graph);
    t.after(() => world.proxy.speak());
    const id = await addNodeAt(a, 300, 200);
    const start = await allAt(graph, [a, b]);
    const live = a.locator('#conn[data-status="online"]');
    await a.evaluate(() => {
      window.statuses = [];
      window.graphqEditor.client.on('status', ({ status }) => window.statuses.push(status));
    });
    // Idle on a working path: the quiet socket is asked, answers, and stays.
    await a.waitForTimeout(8_500);
    assert.deepEqual(await a.evaluate(() => window.statuses), [], 'the server answers HEARTBEAT');

    // Idle when the path goes silent (the socket stays open, no offline event).
    world.proxy.silence();
    let silentAt = Date.now();
    await live.waitFor({ state: 'detached', timeout: 8_000 + 1_500 });
    const idleMs = Date.now() - silentAt;
    await node(a, id).focus();
    await a.keyboard.press('ArrowRight');
    await a.keyboard.press('ArrowRight');
    await a.locator('#conn', { hasText: '2 edits waiting' }).waitFor();
    world.proxy.speak();
    await live.waitFor({ timeout: 20_000 });
    await nodeAt(b, id, 320, 200);
    const back = await allAt(graph, [a, b]);
    assert.equal(back.version, start.version + 2, 'two edits, two versions');

    // An edit on a silent path: its missing answer tells within 3 s.
    world.proxy.silence();
    silentAt = Date.now();
    await a.keyboard.press('ArrowDown');
    await live.waitFor({ state: 'detached', timeout: 3_000 + 1_000 });
    const editMs = Date.now() - silentAt;
    await a.keyboard.press('ArrowDown');
    await a.locator('#conn', { hasText: '2 edits waiting' }).waitFor();
    await world.screenshots('5-silent-network', { alice: a });
    // The first edit went out on the dead socket: it arrives late, and again on the new one.
    world.proxy.speak();
    await live.waitFor({ timeout: 20_000 });
    await nodeAt(b, id, 320, 220);
    const after = await allAt(graph, [a, b]);
    assert.equal(after.version, back.version + 2, 'each edit applied exactly once');
    assert.deepEqual(after.nodes[id], { label: 'Node 1', x: 320, y: 220 });
    assert.equal(await a.locator('.toast').count(), 0, 'nothing was rolled back');
    writeFileSync(path.join(OUTPUT, 'silent-network.json'), JSON.stringify({ idleMs, editMs }));
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
    // Where the toast rests: it slides in from 8 px higher (`toast-in`),
    // and the three outcomes can all arrive before that ends.
    await toast.evaluate((e) => Promise.all(e.getAnimations().map((an) => an.finished)));
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

  test('Ctrl+wheel and a two-finger pinch zoom around the pointer and the pinch; neither is a command', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'pinch';
    await seed(world, graph, nodes(['p', 400, 250, 'Pinched']));
    const { a, b, close } = await world.openPair(graph);
    const before = await world.serverState(graph);
    const zoom = () => a.evaluate(() => window.graphqEditor.camera.zoom);
    const c = await centre(a, 'p');

    // Ctrl+wheel (also what a trackpad pinch sends).
    await a.mouse.move(c.x, c.y);
    await a.keyboard.down('Control');
    await a.mouse.wheel(0, -100);
    await a.keyboard.up('Control');
    await a.waitForFunction(() => window.graphqEditor.camera.zoom > 2);
    await frame(a);
    let at = await centre(a, 'p');
    assert.ok(Math.abs(at.x - c.x) < 1.5 && Math.abs(at.y - c.y) < 1.5, `Ctrl+wheel kept the point under the pointer: ${JSON.stringify([c, at])}`);
    await a.locator('#zoom-level').click();
    assert.equal(await zoom(), 1, 'back to 100%');
    await frame(a);

    // Two fingers on a touch screen, above and below the node, spread from 120 to 240 px apart.
    const d = await centre(a, 'p');
    await pinch(a, d, 120, 240);
    assert.ok(Math.abs(await zoom() - 2) < 0.01, `twice as far apart, twice the zoom: ${await zoom()}`);
    await frame(a);
    at = await centre(a, 'p');
    assert.ok(Math.abs(at.x - d.x) < 1.5 && Math.abs(at.y - d.y) < 1.5, `the pinch centre stayed put: ${JSON.stringify([d, at])}`);
    await pinch(a, d, 240, 80);
    assert.ok(Math.abs(await zoom() - 2 / 3) < 0.01, `and closer, smaller: ${await zoom()}`);
    await frame(a);
    at = await centre(a, 'p');
    assert.ok(Math.abs(at.x - d.x) < 1.5 && Math.abs(at.y - d.y) < 1.5, 'the pinch centre stayed put again');

    assert.deepEqual(await a.evaluate(() => [...window.graphqEditor.selNodes]), [], 'no finger selected or moved the node');
    assert.deepEqual(await world.serverState(graph), before, 'zooming is not a command');
    assert.equal(await b.evaluate(() => window.graphqEditor.camera.zoom), 1, "Bob's view is his own");
    await close();
  });

  test('the minimap shows the graph as it changes; a click or a drag on it moves the view there', { timeout: TEST_TIMEOUT }, async () => {
    const graph = 'minimap';
    await seed(world, graph, nodes(['near', 100, 100, 'Near'], ['far', 1600, 1200, 'Far']));
    const { a, b, close } = await world.openPair(graph);
    await frame(a);
    /**
     * The node-coloured spots of the minimap, by quadrant (top-left, top-right,
     * bottom-left, bottom-right): their centres in page coordinates, or null.
     */
    const spots = () => a.evaluate(() => {
      const canvas = document.getElementById('minimap');
      const { width, height } = canvas;
      const pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
      const sums = [0, 1, 2, 3].map(() => ({ x: 0, y: 0, n: 0 }));
      for (let y = 0; y < height; y += 1) {
        for (let x = 0; x < width; x += 1) {
          const i = (y * width + x) * 4;
          const [r, g, bl, alpha] = pixels.slice(i, i + 4);
          if (alpha < 200 || Math.abs(r - 143) > 6 || Math.abs(g - 152) > 6 || Math.abs(bl - 171) > 6) continue;
          const s = sums[(y < height / 2 ? 0 : 2) + (x < width / 2 ? 0 : 1)];
          s.x += x;
          s.y += y;
          s.n += 1;
        }
      }
      const box = canvas.getBoundingClientRect();
      const scale = width / canvas.clientWidth;
      return sums.map((s) => (s.n === 0 ? null : {
        x: box.left + canvas.clientLeft + s.x / s.n / scale, y: box.top + canvas.clientTop + s.y / s.n / scale,
      }));
    });
    let [topLeft, topRight, bottomLeft, bottomRight] = await spots();
    assert.ok(topLeft && bottomRight && !topRight && !bottomLeft, 'two nodes, in opposite corners');

    // Bob adds a node: Alice's minimap shows it.
    await seed(world, graph, nodes(['new', 100, 1200, 'New']));
    await a.waitForFunction(() => window.graphqEditor.client.view.nodes.has('new'));
    await frame(a);
    [topLeft, topRight, bottomLeft, bottomRight] = await spots();
    assert.ok(topLeft && bottomLeft && bottomRight && !topRight, 'the new node is on the minimap');

    /** How far the node is from the middle of the canvas, in screen pixels. */
    const offCentre = async (id) => {
      await frame(a);
      const canvas = await a.locator('#canvas').boundingBox();
      const n = await centre(a, id);
      return Math.hypot(n.x - (canvas.x + canvas.width / 2), n.y - (canvas.y + canvas.height / 2));
    };
    assert.equal(await node(a, 'far').count(), 0, 'the far node is off screen');
    await a.mouse.click(bottomRight.x, bottomRight.y);
    assert.ok(await offCentre('far') < 25, 'a click on the far node centres the view on it');

    // Dragging on the minimap moves the view along with the pointer.
    await a.mouse.move(bottomRight.x, bottomRight.y);
    await a.mouse.down();
    await a.mouse.move((bottomRight.x + topLeft.x) / 2, (bottomRight.y + topLeft.y) / 2, { steps: 5 });
    const halfway = await a.evaluate(() => window.graphqEditor.visibleArea());
    const middle = { x: (halfway.x0 + halfway.x1) / 2, y: (halfway.y0 + halfway.y1) / 2 };
    assert.ok(Math.abs(middle.x - 850) < 60 && Math.abs(middle.y - 650) < 60, `half way: ${JSON.stringify(middle)}`);
    await a.mouse.move(topLeft.x, topLeft.y, { steps: 5 });
    await a.mouse.up();
    assert.ok(await offCentre('near') < 25, 'the drag ends on the near node');
    await world.screenshots('8-minimap', { alice: a });
    assert.equal(await b.evaluate(() => window.graphqEditor.camera.x), 0, "Bob's view did not move");
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
