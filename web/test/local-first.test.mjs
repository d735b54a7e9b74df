// The local-first client in a real browser: Chromium (headless, through
// playwright-core) against a real `graphq gateway`, `graphq worker` and
// redis-server started here. Alice's windows talk through a TCP proxy, so
// the test can cut her network (the page then comes from the service
// worker, the graph from IndexedDB); Bob's talk to the gateway directly.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { addNodeAt, node, rename, startTwoUsers } from '../testing/pages.mjs';
import { repoRoot } from '../testing/servers.mjs';

const OUTPUT = path.join(repoRoot, 'web', 'test-output');
const PREFIX = `localtest${process.pid}`;
const WAIT = 15_000;
const TEST_TIMEOUT = 120_000;
const BIG = 2000;

/** graphq, the proxy, the browser contexts `alice` and `bob`, their `tokens`. */
let world;

before(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  world = await startTwoUsers({ prefix: PREFIX, wait: WAIT });
}, { timeout: 60_000 });

after(() => world?.stop(), { timeout: 20_000 });

const aliceUrl = (graph) => `http://127.0.0.1:${world.proxy.port}/?graph=${graph}&token=${world.tokens.alice}`;
const bobUrl = (graph) => `${world.graphq.base}/?graph=${graph}&token=${world.tokens.bob}`;

/**
 * A page of Alice's that records the operation ids of every COMMAND it
 * sends, across reloads, into `sent`.
 */
async function alicePage(sent) {
  const page = await world.alice.newPage();
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => {
    try {
      const msg = JSON.parse(String(payload));
      if (msg.type === 'COMMAND') sent.push(msg.command.operationId);
    } catch {
      // not JSON: not a command
    }
  }));
  return page;
}

async function online(page) {
  await page.locator('#conn[data-status="online"]').waitFor();
}

/** Until the page's service worker controls it, so a reload works without the network. */
async function offlineReady(page) {
  // A plain condition: waitForFunction does not wait for a promise the
  // predicate returns (a promise is truthy, so it would pass at once).
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
}

/** Whether the device holds the confirmed graph at `version` (read from IndexedDB). */
function holdsVersion(version) {
  return new Promise((resolve) => {
    const open = indexedDB.open('graphq');
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction('graphs', 'readonly');
      const req = tx.objectStore('graphs').getAll();
      req.onsuccess = () => resolve(req.result.some((s) => s.version === version));
      req.onerror = () => resolve(false);
      tx.oncomplete = () => db.close();
    };
    open.onerror = () => resolve(false);
  });
}

/**
 * Until the device holds the confirmed graph at `version`. Each read is
 * awaited by page.evaluate (waitForFunction would take the pending read's
 * promise for a true answer).
 */
async function storedVersion(page, version) {
  const deadline = Date.now() + WAIT;
  while (!(await page.evaluate(holdsVersion, version))) {
    if (Date.now() > deadline) throw new Error(`the device never held version ${version}`);
    await sleep(100);
  }
}

function api(pathname, token = world.tokens.bob) {
  return fetch(`${world.graphq.base}${pathname}`, { headers: { Authorization: `Bearer ${token}` } }).then(async (res) => {
    assert.equal(res.status, 200, `${pathname}: ${res.status}`);
    return res.json();
  });
}

/** Every applied operation id of the graph, oldest first. */
async function appliedIds(graph) {
  const { changes } = await api(`/api/v2/graphs/${graph}/changes?since=0&limit=1000`);
  return changes.map((c) => c.operationId);
}

/** Until the page is online, at `version`, with nothing pending (after a cut: reconnect backoff is up to 10 s). */
async function settled(page, version) {
  try {
    await page.waitForFunction((v) => {
      const c = window.graphqEditor.client;
      return c.status === 'online' && c.pending.length === 0 && c.version === v;
    }, version, { timeout: 30_000 });
  } catch (err) {
    throw new Error(`${err.message}: the page is at ${await clientState(page)}, not settled at version ${version}`);
  }
}

/** What the page's client holds, for failure messages. */
function clientState(page) {
  return page.evaluate(() => {
    const c = window.graphqEditor.client;
    return JSON.stringify({
      status: c.status, version: c.version, epoch: c.epoch, storage: c.storage, confirmed: [...c.confirmed.nodes.keys()],
      shown: [...c.view.nodes.keys()], pending: c.pending.map((p) => p.type),
    });
  });
}

async function label(page, id) {
  try {
    return await page.locator(`#nodes .node[data-id="${id}"] .node-label`).textContent();
  } catch (err) {
    throw new Error(`${err.message}: the page's client holds ${await clientState(page)}`);
  }
}

describe('local-first editing in Chromium', () => {
  test('offline edits survive a reload, apply once when the socket is back, and a later tab sends nothing twice', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'survive';
    const sent = [];
    const a = await alicePage(sent);
    await a.goto(aliceUrl(graph));
    await online(a);
    await offlineReady(a);
    const first = await addNodeAt(a, 160, 140);
    await settled(a, 1);
    // The device holds the graph Alice saw before the network goes.
    await storedVersion(a, 1);

    world.proxy.cut();
    t.after(() => world.proxy.restore());
    await a.locator('#conn[data-status="offline"]').waitFor();
    const sentBefore = sent.length;

    // Offline: shown at once, and kept on the device.
    const two = await addNodeAt(a, 420, 300);
    const three = await addNodeAt(a, 650, 160);
    await rename(a, first, 'Renamed offline');
    const offlineOps = await a.evaluate(() => window.graphqEditor.client.pending.map((c) => c.operationId));
    assert.equal(offlineOps.length, 3);
    const note = a.locator('#device-note');
    await note.filter({ hasText: '3 edits saved on this device, sending when online' }).waitFor();

    // A reload with the network still cut: the page from the service worker,
    // the graph and the three edits from IndexedDB.
    await a.reload();
    await node(a, two).waitFor();
    await node(a, three).waitFor();
    assert.equal(await label(a, first), 'Renamed offline');
    await note.filter({ hasText: '3 edits saved on this device, sending when online' }).waitFor();
    assert.notEqual(await a.evaluate(() => window.graphqEditor.client.status), 'online');
    assert.deepEqual(await a.evaluate(() => window.graphqEditor.client.pending.map((c) => c.operationId)), offlineOps,
      'the same commands, same operation ids, same order');
    await a.screenshot({ path: path.join(OUTPUT, 'local-1-reloaded-offline.png') });

    // A second tab, opened still offline, shows the same state.
    const a2 = await alicePage(sent);
    await a2.goto(aliceUrl(graph));
    await node(a2, three).waitFor();
    assert.equal(await label(a2, first), 'Renamed offline');

    const b = await world.bob.newPage();
    await b.goto(bobUrl(graph));
    await online(b);
    assert.equal(await node(b, two).count(), 0, 'Bob sees nothing of what Alice did offline');

    world.proxy.restore();
    await settled(a, 4);
    await settled(a2, 4);
    await settled(b, 4);
    await node(b, two).waitFor();
    await node(b, three).waitFor();
    assert.equal(await label(b, first), 'Renamed offline');

    const ids = await appliedIds(graph);
    assert.equal(ids.length, 4);
    assert.deepEqual(ids.slice(1), offlineOps, 'each offline edit applied once, in order');
    const after = sent.slice(sentBefore);
    assert.deepEqual([...after].sort(), [...offlineOps].sort(), 'each offline edit sent once, by one tab');

    // A third tab opened later shows everything and sends nothing.
    const sentBeforeThird = sent.length;
    const a3 = await alicePage(sent);
    await a3.goto(aliceUrl(graph));
    await settled(a3, 4);
    await node(a3, three).waitFor();
    assert.equal(sent.length, sentBeforeThird, 'the third tab sent no command');
    assert.equal(await note.isHidden(), true, 'nothing left unconfirmed');

    // Signing out forgets the device state.
    await storedVersion(a3, 4);
    await a3.evaluate(() => window.graphqEditor.client.forget());
    const left = await a3.evaluate(() => new Promise((resolve) => {
      const open = indexedDB.open('graphq');
      open.onsuccess = () => {
        const tx = open.result.transaction(['graphs', 'pending'], 'readonly');
        const graphs = tx.objectStore('graphs').count();
        const pending = tx.objectStore('pending').count();
        tx.oncomplete = () => resolve(graphs.result + pending.result);
      };
    }));
    assert.equal(left, 0, 'nothing kept on the device after forget()');
    await Promise.all([a.close(), a2.close(), a3.close(), b.close()]);
  });

  test('a tab closed right after an edit leaves the edit and the graph it was made on, and the edit applies once', { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'closed';
    // The confirmed graph waits 10 minutes to be written: only the page
    // going away can write it in time.
    const url = `${aliceUrl(graph)}&snapshotDelay=600000`;
    const a = await alicePage([]);
    await a.goto(url);
    await online(a);
    await offlineReady(a);
    const first = await addNodeAt(a, 160, 140);
    await settled(a, 1);
    const [firstOp] = await appliedIds(graph);
    assert.equal(await a.evaluate(holdsVersion, 1), false, 'the write of the confirmed graph is still waiting');

    // What the server says to Alice waits in the proxy: her next edit goes
    // out, but she hears nothing back, and closes the tab.
    world.proxy.hold();
    t.after(() => world.proxy.restore());
    const second = await addNodeAt(a, 420, 300);
    const pendingOps = await a.evaluate(() => window.graphqEditor.client.pending.map((c) => c.operationId));
    assert.equal(pendingOps.length, 1);
    await a.close();
    world.proxy.cut();
    world.proxy.release();

    // Opened again with the network cut: both edits from the device.
    const b = await alicePage([]);
    await b.goto(url);
    await node(b, first).waitFor();
    await node(b, second).waitFor();
    assert.notEqual(await b.evaluate(() => window.graphqEditor.client.status), 'online');
    assert.deepEqual(await b.evaluate(() => window.graphqEditor.client.pending.map((c) => c.operationId)), pendingOps,
      'the edit is pending with its operation id');

    world.proxy.restore();
    await settled(b, 2);
    assert.deepEqual(await appliedIds(graph), [firstOp, ...pendingOps], 'applied once');
    await b.close();
  });

  test(`a reload paints the last known ${BIG}-node graph from the device before the server answers`, { timeout: TEST_TIMEOUT }, async (t) => {
    const graph = 'big';
    await seed(graph, BIG);
    const a = await alicePage([]);
    const paintTimer = () => {
      // Runs before the page's scripts: the moment the whole graph is in
      // the view and what is on screen of it is drawn, in ms since
      // navigation started, and whether the server had answered.
      const want = Number(new URLSearchParams(location.search).get('expect'));
      const tick = () => {
        if (window.graphqEditor?.client.view.nodes.size >= want && document.querySelector('#nodes .node')) {
          window.painted = { ms: performance.now(), status: window.graphqEditor?.client.status };
        } else requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    };
    await a.addInitScript(paintTimer);
    const url = `${aliceUrl(graph)}&expect=${BIG}`;
    await a.goto(url);
    await online(a);
    await a.waitForFunction(() => window.painted);
    const fromNetwork = await a.evaluate(() => window.painted.ms);
    await offlineReady(a);
    const { version } = await api(`/api/v2/graphs/${graph}/state`);
    await storedVersion(a, version);

    world.proxy.cut();
    t.after(() => world.proxy.restore());
    await a.reload();
    await a.waitForFunction(() => window.painted, null, { timeout: WAIT });
    const painted = await a.evaluate(() => window.painted);
    assert.notEqual(painted.status, 'online', 'painted before any answer from the server');
    assert.equal(await a.evaluate(() => window.graphqEditor.client.view.nodes.size), BIG);
    assert.ok(await a.locator('#nodes .node').count() > 0, 'what is on screen is drawn');
    t.diagnostic(`first paint of ${BIG} nodes: ${Math.round(fromNetwork)} ms from the network, `
      + `${Math.round(painted.ms)} ms from the device after a reload (ms since navigation)`);
    await a.screenshot({ path: path.join(OUTPUT, 'local-2-big-from-device.png') });

    world.proxy.restore();
    await settled(a, version);
    await a.close();
  });

  test('without IndexedDB the editor works in memory and says unsent edits are not kept', { timeout: TEST_TIMEOUT }, async (t) => {
    const page = await alicePage([]);
    await page.addInitScript(() => Object.defineProperty(window, 'indexedDB', { value: undefined }));
    await page.goto(aliceUrl('memory'));
    await online(page);
    assert.deepEqual(await page.evaluate(() => window.graphqEditor.client.storage),
      { kind: 'memory', reason: 'this browser offers no IndexedDB' });
    world.proxy.cut();
    t.after(() => world.proxy.restore());
    await page.locator('#conn[data-status="offline"]').waitFor();
    await addNodeAt(page, 200, 200);
    await page.locator('#device-note', { hasText: '1 edit not saved on this device: this browser offers no IndexedDB' }).waitFor();
    world.proxy.restore();
    await page.waitForFunction(() => window.graphqEditor.client.pending.length === 0);
    assert.equal(await page.locator('#device-note').isHidden(), true);
    await page.close();
  });
});

/** Fills `graph` with `count` nodes in a grid, 400 per BATCH_UPDATE, as Bob. */
async function seed(graph, count) {
  for (let start = 0; start < count; start += 400) {
    const operations = [];
    for (let i = start; i < Math.min(count, start + 400); i += 1) {
      operations.push({ type: 'CREATE_NODE', payload: { node: {
        id: `n${i}`, type: 'default', position: { x: 40 + (i % 50) * 110, y: 40 + Math.floor(i / 50) * 60 }, data: { label: `Node ${i}` },
      } } });
    }
    const command = { operationId: `seed-${graph}-${start}`, type: 'BATCH_UPDATE', payload: { operations }, baseVersion: 0, timestamp: 0 };
    const res = await fetch(`${world.graphq.base}/api/v2/graphs/${graph}/command?wait=10000`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${world.tokens.bob}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(command),
    });
    const body = await res.json();
    assert.equal(body.outcome?.status, 'applied', `seeding: ${JSON.stringify(body)}`);
  }
}
