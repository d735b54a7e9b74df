// Measures panning in headless Chromium on big graphs: for each size given
// (default 2000 and 10000), a grid of N nodes and N criss-crossing edges,
// one window, one second of mouse panning at 100% (three times), then
// again with the whole graph fitted on screen; then the time from Bob's move
// of a node to the frame Alice's window draws it in (7 moves). Prints the median frame interval
// and the median render time (ms). Recorded in BENCHMARKS.md.
//
//   cd web && GRAPHQ_BIN=../target/debug/graphq node testing/pan-bench.mjs 2000 10000
import { panFrames, seedGrid, startWorld } from './editor.mjs';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const world = await startWorld(`panbench${process.pid}`);
try {
  for (const n of sizes.length ? sizes : [2000, 10000]) {
    const graph = `pan-${n}`;
    await seedGrid(world, graph, n);
    const page = await world.alice.newPage();
    const loadStart = Date.now();
    await page.goto(`${world.graphq.base}/?graph=${graph}&token=${world.tokens.alice}`);
    await page.waitForFunction((size) => window.graphqEditor?.client.view.nodes.size === size, n, { timeout: 60_000 });
    const loadMs = Date.now() - loadStart;
    const runs = [];
    for (let i = 0; i < 3; i += 1) runs.push(await panFrames(page));
    const drawn = await page.evaluate(() => document.querySelectorAll('#nodes .node').length);
    // Everything on screen at once: fit the graph, then pan again.
    await page.locator('#fit').click();
    const fitted = await panFrames(page);
    const fittedDrawn = await page.evaluate(() => document.querySelectorAll('#nodes .node').length);
    // Bob moves a node; how long until Alice's window has drawn the frame with it.
    const other = await world.bob.newPage();
    await other.goto(`${world.graphq.base}/?graph=${graph}&token=${world.tokens.bob}`);
    await other.waitForFunction((size) => window.graphqEditor?.client.status === 'online' && window.graphqEditor.client.view.nodes.size === size, n, { timeout: 60_000 });
    const latencies = [];
    for (let i = 1; i <= 7; i += 1) {
      const x = 360 + i * 7;
      const seen = page.evaluate((x) => new Promise((resolve) => {
        const { client } = window.graphqEditor;
        const stop = client.on('change', ({ view }) => {
          if (view.nodes.get('b52')?.position.x !== x) return;
          stop();
          requestAnimationFrame(() => resolve(Date.now()));
        });
      }), x);
      const sent = await other.evaluate((x) => {
        window.graphqEditor.client.moveNode('b52', { x, y: 90 });
        return Date.now();
      }, x);
      latencies.push((await seen) - sent);
    }
    await other.close();
    const latencyMedian = [...latencies].sort((p, q) => p - q)[3];
    console.log(JSON.stringify({ nodes: n, edges: n, loadMs, drawnNodes: drawn, runs, fitted: { drawnNodes: fittedDrawn, ...fitted }, latencies, latencyMedian }));
    await page.close();
  }
} finally {
  await world.stop();
}
