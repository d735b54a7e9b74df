// Server-Sent Events in Debian's Chromium, against a real `graphq gateway`,
// `graphq worker` and redis-server started here: the JavaScript client with
// WebSockets blocked falls back to SSE (EventSource for events, fetch for
// commands) and edits with another window that uses a WebSocket; and the
// Datastar example page, with Datastar's own client script from its npm
// package, shows a graph from its signals and posts commands.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from '../testing/pages.mjs';

const WAIT = 10_000;

let redis;
let graphq;
let browser;
let stack;

before(async () => {
  stack = await startStack({ prefix: `ssetest${process.pid}` });
  ({ redis, graphq, browser } = stack);
}, { timeout: 60_000 });

after(async () => {
  await stack?.stop();
}, { timeout: 20_000 });

/** A page whose WebSockets never connect, as behind a proxy that breaks them. */
async function withoutWebSockets(page) {
  await page.addInitScript(() => {
    window.WebSocket = class {
      constructor() {
        this.readyState = 0;
        setTimeout(() => {
          this.readyState = 3;
          this.onerror?.({});
          this.onclose?.({ code: 1006 });
        }, 10);
      }
      send() { throw new Error('not open'); }
      close() {}
    };
  });
}

test('with WebSockets blocked the client falls back to SSE and edits with a WebSocket client', { timeout: 60_000 }, async () => {
  const graph = 'sse1';
  const a = await browser.newPage();
  const b = await browser.newPage();
  for (const page of [a, b]) page.setDefaultTimeout(WAIT);
  await withoutWebSockets(a);
  const requests = [];
  a.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  const errors = [];
  a.on('pageerror', (e) => errors.push(e.message));

  await a.goto(`${graphq.base}/example.html?graph=${graph}&token=${graphq.token('alice')}`);
  await b.goto(`${graphq.base}/example.html?graph=${graph}&token=${graphq.token('bob')}`);
  for (const page of [a, b]) await page.locator('#status', { hasText: 'online' }).waitFor();
  assert.ok(requests.includes(`GET /api/v2/graphs/${graph}/events`), requests.join('\n'));

  // Nothing of alice's to undo: the REVERT reaches her over the stream.
  await a.click('#undo');
  await a.locator('#log', { hasText: 'rolled back UNDO' }).waitFor();

  // Alice's edit shows at once (optimistic), goes out over HTTP, and
  // reaches Bob's WebSocket; Bob's reaches her stream.
  await a.fill('#label', 'from sse');
  await a.press('#label', 'Enter');
  await a.locator('#nodes li', { hasText: 'from sse' }).waitFor();
  await b.locator('#nodes li', { hasText: 'from sse' }).waitFor();
  await a.locator('#nodes li.pending').waitFor({ state: 'detached' });
  assert.ok(requests.includes(`POST /api/v2/graphs/${graph}/command`));
  await b.fill('#label', 'from ws');
  await b.press('#label', 'Enter');
  await a.locator('#nodes li', { hasText: 'from ws' }).waitFor();
  for (const page of [a, b]) await page.locator('#version', { hasText: '2' }).waitFor();

  // Both show the same graph, and it is the server's.
  const state = await (await fetch(`${graphq.base}/api/v2/graphs/${graph}/state`, {
    headers: { authorization: `Bearer ${graphq.token('alice')}` },
  })).json();
  const labels = state.nodes.map((n) => n.data.label).sort();
  assert.deepEqual(labels, ['from sse', 'from ws']);
  for (const page of [a, b]) {
    const shown = (await page.locator('#nodes li').allTextContents()).map((t) => t.replace(/ \(.*$/, '')).sort();
    assert.deepEqual(shown, labels);
  }
  assert.deepEqual(errors, []);
  await Promise.all([a.close(), b.close()]);
});

async function api(method, path, token, body) {
  const res = await fetch(`${graphq.base}${path}`, {
    method, headers: { authorization: `Bearer ${token}` }, body: body && JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** The page's node lines as GET state would draw them. */
function lines(state) {
  return state.nodes.map((n) => `${n.id} ${n.data?.label ?? ''} @ ${n.position.x},${n.position.y}`).sort().join('\n');
}

test('the Datastar page shows the graph from its signals and posts commands with Datastar actions', { timeout: 60_000 }, async () => {
  const alice = graphq.token('alice');
  const bob = graphq.token('bob');
  const graph = 'ds1';
  const seeded = await api('POST', `/api/v2/graphs/${graph}/command?wait=5000`, bob,
    { operationId: 'b1', type: 'CREATE_NODE', payload: { node: { id: 'seed', position: { x: 1, y: 2 }, data: { label: 'from bob' } } } });
  assert.equal(seeded.body.outcome.status, 'applied');

  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The client script is Datastar's, from the npm package, served by graphq.
  const script = await fetch(`${graphq.base}/datastar.js`);
  assert.equal(script.status, 200);
  assert.match(await script.text(), /Datastar v1\.0\.0-beta\.11/);

  await page.goto(`${graphq.base}/datastar.html?graph=${graph}&token=${alice}`);
  await page.locator('#nodes', { hasText: 'seed from bob @ 1,2' }).waitFor();
  assert.equal(await page.locator('#version').textContent(), '1');

  // A command posted from the page with @post.
  await page.fill('#label', 'hello');
  await page.click('#add');
  await page.locator('#version', { hasText: '2' }).waitFor();
  await page.locator('#outcome', { hasText: /^accepted [0-9a-f-]{36}$/ }).waitFor();
  let state = (await api('GET', `/api/v2/graphs/${graph}/state`, alice)).body;
  assert.equal(state.version, 2);
  assert.equal(await page.locator('#nodes').textContent(), lines(state));
  assert.match(lines(state), /hello @ 40,40/);

  // Someone else's change arrives as a patch; a delete takes the node away.
  await api('POST', `/api/v2/graphs/${graph}/command?wait=5000`, bob,
    { operationId: 'b2', type: 'UPDATE_NODE', payload: { id: 'seed', patch: { position: { x: 7, y: 8 }, data: { label: 'moved' } } } });
  await page.locator('#nodes', { hasText: 'seed moved @ 7,8' }).waitFor();
  await page.click('#undo'); // alice's last change: her node goes
  await page.locator('#version', { hasText: '4' }).waitFor();
  state = (await api('GET', `/api/v2/graphs/${graph}/state`, alice)).body;
  assert.equal(state.nodes.length, 1);
  assert.equal(await page.locator('#nodes').textContent(), lines(state));

  // A refused command says why, in the outcome signal, and changes nothing.
  await page.fill('#label', 'x'.repeat(70_000));
  await page.click('#add');
  await page.locator('#outcome', { hasText: 'refused: TOO_LARGE' }).waitFor();
  assert.equal((await api('GET', `/api/v2/graphs/${graph}/state`, alice)).body.version, 4);
  assert.deepEqual(errors, []);
  await page.close();
});
