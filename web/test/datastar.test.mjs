// The Datastar example page (web/datastar.html) in Debian's Chromium, with
// Datastar's own client script from its npm package, served by a real
// `graphq gateway` and `graphq worker` on a redis-server started here.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { startGraphq, startRedis } from '../testing/servers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const WAIT = 10_000;

let redis;
let graphq;
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: run scripts/ensure-deps (or set CHROMIUM_PATH)`);
  redis = await startRedis();
  graphq = await startGraphq({ redisUrl: redis.url, prefix: `dstest${process.pid}` });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 30_000,
  });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close().catch(() => {});
  await graphq?.stop();
  await redis?.stop();
}, { timeout: 20_000 });

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
