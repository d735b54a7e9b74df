// Edits over the rate limit apply in the order made, over a WebSocket and
// over Server-Sent Events: Debian's Chromium, driven headless by
// playwright-core, against a real `graphq gateway` (a user may send three
// commands at once, then one per 100 ms), `graphq worker` and redis-server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from '../testing/pages.mjs';

const PREFIX = `webratelimit${process.pid}`;
const EDITS = 20;

let redis;
let graphq;
let browser;
let stack;

before(async () => {
  stack = await startStack({ prefix: PREFIX, config: '[gateway]\nuser_rate_limit = { max = 3, duration_ms = 300 }\n' });
  ({ redis, graphq, browser } = stack);
}, { timeout: 60_000 });

after(async () => {
  await stack?.stop();
}, { timeout: 20_000 });

/** Every applied operation id of the graph, oldest first. */
async function appliedIds(graph, token) {
  const res = await fetch(`${graphq.base}/api/v2/graphs/${graph}/changes?since=0&limit=1000`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200);
  return (await res.json()).changes.map((c) => c.operationId);
}

for (const transport of ['websocket', 'sse']) {
  test(`edits over the rate limit apply in the order made (${transport})`, { timeout: 60_000 }, async () => {
    const graph = `limited-${transport}`;
    const token = graphq.token('alice');
    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    let refusals = 0;
    page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => {
      if (String(payload).includes('"RATE_LIMITED"')) refusals += 1;
    }));
    page.on('response', (res) => {
      if (res.status() === 429) refusals += 1;
    });
    await page.goto(`${graphq.base}/?graph=${graph}&token=${token}&transport=${transport}`);
    await page.locator('#conn[data-status="online"]').waitFor();
    assert.equal(await page.evaluate(() => window.graphqEditor.client.transport), transport);

    // One edit every 15 ms from a busy page (it runs nothing else meanwhile,
    // as during a long render): the refusals come back while later edits
    // are already on their way, and the limiter refills meanwhile.
    const ops = await page.evaluate((count) => {
      const { client } = window.graphqEditor;
      const made = [];
      for (let i = 0; i < count; i += 1) {
        made.push(client.submit('CREATE_NODE', { node: { id: `n${i}`, position: { x: 40 * i, y: 40 } } }));
        const until = performance.now() + 15;
        while (performance.now() < until) { /* busy */ }
      }
      return made;
    }, EDITS);
    await page.waitForFunction(() => window.graphqEditor.client.pending.length === 0, null, { timeout: 30_000 });
    assert.ok(refusals > 0, 'the edits went over the rate limit');
    assert.deepEqual(await appliedIds(graph, token), ops, 'each applied once, in the order made');
    await page.close();
  });
}
