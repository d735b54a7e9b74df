// The demo editor tells a user who comes back of the MANUAL conflicts they
// left open (docs/client.md, The demo editor): Debian's Chromium, driven
// headless by playwright-core, against a real `graphq gateway`,
// `graphq worker` (with `node.data.title` under MANUAL) and redis-server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { startStack } from '../testing/pages.mjs';

const PREFIX = `webconflicts${process.pid}`;

let redis;
let graphq;
let browser;
let stack;

before(async () => {
  stack = await startStack({ prefix: PREFIX, config: '[graph.conflicts]\n"node.data.title" = "MANUAL"\n' });
  ({ redis, graphq, browser } = stack);
}, { timeout: 60_000 });

after(async () => {
  await stack?.stop();
}, { timeout: 20_000 });

/** Sends a command as the token's user and returns its outcome. */
async function send(token, command) {
  const res = await fetch(`${graphq.base}/api/v2/graphs/left/command?wait=10000`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(command),
  });
  assert.equal(res.status, 200);
  return (await res.json()).outcome;
}

const title = (operationId, baseVersion, value) =>
  ({ operationId, type: 'UPDATE_NODE', baseVersion, payload: { id: 'n1', patch: { data: { title: value } } } });

test('a user who opens the editor sees the MANUAL conflicts they left open, and only theirs', { timeout: 60_000 }, async () => {
  const alice = graphq.token('alice');
  const bob = graphq.token('bob');
  await send(alice, { operationId: 'c1', type: 'CREATE_NODE', payload: { node: { id: 'n1', position: { x: 80, y: 80 }, data: { title: 'first' } } } });
  await send(alice, title('a1', 1, 'Alpha'));
  // Bob, editing from version 1 while offline, loses to alice: open.
  assert.equal((await send(bob, title('b1', 1, 'Bravo'))).code, 'CONFLICT');

  const context = await browser.newContext({ viewport: { width: 880, height: 600 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  await page.goto(`${graphq.base}/?graph=left&token=${bob}`);
  const toast = page.locator('.toast', { hasText: 'Open conflict' });
  await toast.waitFor();
  assert.match(await toast.textContent(), /Open conflict on \/nodes\/n1\/data\/title.*alice set .*Alpha.*you wanted .*Bravo/);

  // Alice has none of her own: her window shows no such toast once live.
  const hers = await context.newPage();
  await hers.goto(`${graphq.base}/?graph=left&token=${alice}`);
  await hers.locator('#conn[data-status="online"]').waitFor();
  await hers.waitForLoadState('networkidle');
  assert.equal(await hers.locator('.toast', { hasText: 'Open conflict' }).count(), 0);
  await context.close();
});
