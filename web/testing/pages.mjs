// The demo editor as a person uses it, for the browser tests: Chromium
// launched headless, and gestures and readings on an editor page.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { startGraphq, startProxy, startRedis } from './servers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Debian's Chromium (or $CHROMIUM_PATH), headless. */
export function launchChromium() {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: run scripts/ensure-deps (or set CHROMIUM_PATH)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
}

/**
 * Redis, `graphq gateway` and `graphq worker` (with `config`, the text of a
 * settings file, when given) and Chromium, for one test file. `stop()` ends
 * all of it.
 */
export async function startStack({ prefix, config }) {
  const world = {};
  let file;
  if (config !== undefined) {
    world.dir = mkdtempSync(path.join(os.tmpdir(), 'graphq-test-'));
    file = path.join(world.dir, 'graphq.toml');
    writeFileSync(file, config);
  }
  world.redis = await startRedis();
  world.graphq = await startGraphq({ redisUrl: world.redis.url, prefix, config: file });
  world.browser = await launchChromium();
  world.stop = async () => {
    await world.browser.close().catch(() => {});
    await world.graphq.stop();
    await world.redis.stop();
    if (world.dir) rmSync(world.dir, { recursive: true, force: true });
  };
  return world;
}

/**
 * Redis, `graphq gateway` and `graphq worker`, Chromium, and two users:
 * Alice's browser context talks through a TCP proxy (so her network can be
 * cut), Bob's to the gateway directly. `wait`: the longest wait for one
 * thing to show. `stop()` ends all of it.
 */
export async function startTwoUsers({ prefix, wait }) {
  const world = {};
  world.redis = await startRedis();
  world.graphq = await startGraphq({ redisUrl: world.redis.url, prefix });
  world.proxy = await startProxy(world.graphq.port);
  world.tokens = { alice: world.graphq.token('alice'), bob: world.graphq.token('bob') };
  world.browser = await launchChromium();
  const window = { viewport: { width: 880, height: 600 } };
  world.alice = await world.browser.newContext(window);
  world.bob = await world.browser.newContext(window);
  for (const context of [world.alice, world.bob]) context.setDefaultTimeout(wait);
  world.stop = async () => {
    await world.browser.close().catch(() => {});
    await world.proxy.close();
    await world.graphq.stop();
    await world.redis.stop();
  };
  return world;
}

/** Double-clicks the canvas at graph point (x, y) and returns the new node's id. */
export async function addNodeAt(page, x, y) {
  const before = await nodeIds(page);
  const box = await page.locator('#canvas').boundingBox();
  await page.mouse.dblclick(box.x + x, box.y + y);
  // The editor selects the node it just added.
  const handle = await page.waitForFunction((known) => {
    const selected = window.graphqEditor.selection;
    return selected?.kind === 'node' && !known.includes(selected.id) && selected.id;
  }, before);
  return handle.jsonValue();
}

export function nodeIds(page) {
  return page.$$eval('#nodes .node', (gs) => gs.map((g) => g.dataset.id));
}

export function node(page, id) {
  return page.locator(`#nodes .node[data-id="${id}"]`);
}

/** Centre of a node on screen. */
export async function centre(page, id) {
  const box = await node(page, id).locator('.node-body').boundingBox();
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

export async function drag(page, from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 12 });
  await page.mouse.up();
}

/** Drags from `source`'s connector dot onto `target`. */
export async function connect(page, source, target) {
  const dot = await node(page, source).locator('.node-handle').boundingBox();
  await drag(page, { x: dot.x + dot.width / 2, y: dot.y + dot.height / 2 }, await centre(page, target));
}

export async function rename(page, id, label) {
  const c = await centre(page, id);
  await page.mouse.dblclick(c.x, c.y);
  await page.locator('#rename').fill(label);
  await page.locator('#rename').press('Enter');
}

/** Waits until the node is drawn at (x, y) (±1 px) on that page. */
export async function nodeAt(page, id, x, y) {
  await page.waitForFunction(([id, x, y]) => {
    const g = document.querySelector(`#nodes .node[data-id="${id}"]`);
    return g && Math.abs(g.dataset.x - x) <= 1 && Math.abs(g.dataset.y - y) <= 1;
  }, [id, x, y]);
}

/** What a window shows: nodes (label, position) and edges, keyed by id. */
export function shown(page) {
  return page.evaluate(() => ({
    nodes: Object.fromEntries([...document.querySelectorAll('#nodes .node')].map((g) => [
      g.dataset.id, { label: g.querySelector('.node-label').textContent, x: Number(g.dataset.x), y: Number(g.dataset.y) },
    ])),
    edges: Object.fromEntries([...document.querySelectorAll('#edges .edge')].map((g) => [
      g.dataset.id, `${g.dataset.source}->${g.dataset.target}`,
    ])),
  }));
}
