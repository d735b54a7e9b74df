// The browser-test world of testing/pages.mjs (Redis, gateway, worker,
// Chromium, Alice behind a proxy and Bob), with what the editor tests do
// with it: open both windows on a graph, take screenshots, read the
// server's state, seed big graphs, and time a pan.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { startTwoUsers } from './pages.mjs';
import { repoRoot } from './servers.mjs';

export {
  addNodeAt, centre, connect, drag, node, nodeAt, nodeIds, rename, shown,
} from './pages.mjs';

export const OUTPUT = path.join(repoRoot, 'web', 'test-output');
/** Longest wait for one thing to show; a whole test gets a minute. */
export const WAIT = 10_000;
export const TEST_TIMEOUT = 60_000;

/** Starts everything; `prefix` keeps this run's Redis keys apart. */
export async function startWorld(prefix) {
  mkdirSync(OUTPUT, { recursive: true });
  const world = await startTwoUsers({ prefix, wait: WAIT });
  const { graphq, proxy, tokens, browser, alice, bob } = world;
  return {
    ...world,

    /** Alice's and Bob's windows on a fresh graph, both live (`query`: more URL parameters). */
    async openPair(graph, { aliceQuery = '', bobQuery = '' } = {}) {
      const a = await alice.newPage();
      const b = await bob.newPage();
      await a.goto(`http://127.0.0.1:${proxy.port}/?graph=${graph}&token=${tokens.alice}${aliceQuery}`);
      await b.goto(`${graphq.base}/?graph=${graph}&token=${tokens.bob}${bobQuery}`);
      for (const page of [a, b]) await page.locator('#conn[data-status="online"]').waitFor();
      return { a, b, close: () => Promise.all([a.close(), b.close()]) };
    },

    /** One PNG per window, and both side by side as a person would see them. */
    async screenshots(name, pages) {
      const shots = [];
      for (const [who, page] of Object.entries(pages)) {
        const png = await page.screenshot({ path: path.join(OUTPUT, `${name}-${who}.png`), animations: 'disabled' });
        shots.push(`<figure><figcaption>${who}</figcaption><img src="data:image/png;base64,${png.toString('base64')}"></figure>`);
      }
      const board = await browser.newPage({ viewport: { width: 1800, height: 600 } });
      await board.setContent(`<style>body{margin:0;display:flex;gap:16px;padding:16px;background:#2a3040;width:max-content}
        figure{margin:0}figcaption{color:#e8ebf2;font:600 14px system-ui;margin:0 0 6px}
        img{display:block;border-radius:6px}</style>${shots.join('')}`);
      await board.screenshot({ path: path.join(OUTPUT, `${name}-side-by-side.png`), fullPage: true });
      await board.close();
    },

    /** The graph as `GET /api/v2/graphs/{id}/state` has it, in the shape of shown(). */
    async serverState(graph) {
      const res = await fetch(`${graphq.base}/api/v2/graphs/${graph}/state`, {
        headers: { Authorization: `Bearer ${tokens.bob}` },
      });
      assert.equal(res.status, 200);
      const state = await res.json();
      return {
        version: state.version,
        nodes: Object.fromEntries(state.nodes.map((n) => [
          n.id, { label: n.data.label ?? n.id, x: Math.round(n.position.x), y: Math.round(n.position.y) },
        ])),
        edges: Object.fromEntries(state.edges.map((e) => [e.id, `${e.source}->${e.target}`])),
      };
    },
  };
}

/** Until the window has nothing pending and shows the version `version`. */
export async function settled(page, version) {
  await page.waitForFunction((v) => {
    const c = window.graphqEditor.client;
    return c.status === 'online' && c.pending.length === 0 && c.version === v;
  }, version);
}


/** Seeds so far: each batch gets an operation id of its own. */
let seeds = 0;

/** Posts commands to the graph as Bob, in atomic batches of 500. */
export async function seed(world, graph, commands) {
  seeds += 1;
  for (let i = 0; i < commands.length; i += 500) {
    const res = await fetch(`${world.graphq.base}/api/v2/graphs/${graph}/batch?wait=20000`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${world.tokens.bob}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ operationId: `seed-${graph}-${seeds}-${i}`, operations: commands.slice(i, i + 500) }),
    });
    assert.equal(res.status, 200, await res.text());
  }
}

/**
 * `n` nodes `b0`… in rows of 50 (180 × 90 apart), and `n` edges, node i to
 * node 7i + 1: long edges criss-cross the whole graph.
 */
export async function seedGrid(world, graph, n) {
  const commands = [];
  for (let i = 0; i < n; i += 1) {
    commands.push({ type: 'CREATE_NODE', payload: { node: { id: `b${i}`, position: { x: (i % 50) * 180, y: Math.floor(i / 50) * 90 }, data: { label: `Big ${i}` } } } });
  }
  for (let i = 0; i < n; i += 1) {
    commands.push({ type: 'CREATE_EDGE', payload: { edge: { id: `be${i}`, source: `b${i}`, target: `b${(i * 7 + 1) % n}` } } });
  }
  await seed(world, graph, commands);
}

/**
 * Pans the page's canvas with the mouse (60 moves up and to the left) and
 * times it: every animation frame's interval, and every render's duration
 * (`editor.renderNow`). Returns the medians in ms.
 */
export async function panFrames(page) {
  await page.evaluate(() => {
    const editor = window.graphqEditor;
    const probe = (window.panProbe = { frames: [], renders: [] });
    if (!editor.timedRender) {
      const render = editor.renderNow.bind(editor);
      editor.renderNow = () => {
        const t = performance.now();
        render();
        window.panProbe.renders.push(performance.now() - t);
      };
      editor.timedRender = true;
    }
    let last = performance.now();
    const tick = (now) => {
      probe.frames.push(now - last);
      last = now;
      if (probe.frames.length < 600) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  // From a spot on the background (no node, edge or minimap there).
  const start = await page.evaluate(() => {
    for (let y = 560; y > 300; y -= 3) {
      for (let x = 620; x < 680; x += 3) if (document.elementFromPoint(x, y)?.classList.contains('grid')) return { x, y };
    }
    // A dense graph fitted on screen: anywhere that is background.
    for (let y = 560; y > 300; y -= 2) {
      for (let x = 500; x < 690; x += 2) if (document.elementFromPoint(x, y)?.classList.contains('grid')) return { x, y };
    }
    return null;
  });
  assert.ok(start, 'a bare spot of background to pan from');
  await page.mouse.move(start.x, start.y);
  await page.mouse.down();
  for (let i = 1; i <= 60; i += 1) await page.mouse.move(start.x - i * 8, start.y - i * 5);
  await page.mouse.up();
  const { frames, renders } = await page.evaluate(() => window.panProbe);
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return { median: median(frames.slice(1)), renderMedian: median(renders), frames: frames.length - 1, renders: renders.length };
}

/**
 * Two fingers on the touch screen, `from` px apart vertically around
 * `at` (page coordinates), moved apart (or together) to `to` px in `steps`,
 * then lifted: a pinch as Chromium gets it from a touch screen.
 */
export async function pinch(page, at, from, to, steps = 8) {
  const cdp = await page.context().newCDPSession(page);
  const fingers = (d) => [{ x: at.x, y: at.y - d / 2, id: 1 }, { x: at.x, y: at.y + d / 2, id: 2 }];
  try {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: fingers(from) });
    for (let i = 1; i <= steps; i += 1) {
      await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: fingers(from + ((to - from) * i) / steps) });
    }
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  } finally {
    await cdp.detach();
  }
}
