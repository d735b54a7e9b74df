// Real servers for the browser tests: a private redis-server, graphq
// processes, and a TCP proxy that can cut or hold one browser's connection.
// Every process started here is remembered and killed by PID, also when the
// test run dies.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The graphq binary under test: $GRAPHQ_BIN, else the debug build. */
export const graphqBin = path.resolve(repoRoot, process.env.GRAPHQ_BIN ?? 'target/debug/graphq');

const children = new Set();
const killAll = () => {
  for (const child of children) child.kill('SIGKILL');
};
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killAll();
    process.exit(1);
  });
}

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function until(what, deadlineMs, probe) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `command`; its output is kept for the error message if it dies early. */
function start(name, command, args, env = {}) {
  const child = spawn(command, args, {
    cwd: repoRoot,
    env: { ...process.env, GRAPHQ_LOG_FORMAT: 'human', RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const keep = (d) => {
    output = (output + d).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', () => children.delete(child));
  return {
    name,
    child,
    output: () => output,
    /** SIGTERM, then SIGKILL if it has not gone within 3 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(timer);
    },
  };
}

function alive(proc) {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
    throw new Error(`${proc.name} exited early:\n${proc.output()}`);
  }
}

/** redis-server on a free port, no persistence. */
export async function startRedis() {
  const port = await freePort();
  const proc = start('redis-server', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
  ]);
  await until('redis-server', 10_000, () => new Promise((resolve) => {
    alive(proc);
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => resolve(false));
    s.on('data', (d) => {
      s.destroy();
      resolve(String(d).startsWith('+PONG'));
    });
    s.write('PING\r\n');
  }));
  return { ...proc, url: `redis://127.0.0.1:${port}` };
}

async function untilReady(proc, base) {
  await until(`${proc.name} at ${base}`, 20_000, async () => {
    alive(proc);
    const res = await fetch(`${base}/readyz`);
    return res.ok;
  });
}

/**
 * `graphq gateway` and `graphq worker` as two processes on one Redis
 * (`config`: a settings file both are started with).
 * @returns {Promise<{base: string, port: number, token: (user: string) => string, stop: () => Promise<void>}>}
 */
export async function startGraphq({ redisUrl, prefix, config }) {
  if (!existsSync(graphqBin)) throw new Error(`no graphq binary at ${graphqBin}: run cargo build (or set GRAPHQ_BIN)`);
  const secret = `browser-test-secret-${prefix}`;
  const env = { GRAPHQ_AUTH_SECRET: secret, GRAPHQ_REDIS_URL: redisUrl, GRAPHQ_PREFIX: prefix };
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const settings = config ? ['--config', config] : [];
  const worker = start('graphq worker', graphqBin, [...settings, 'worker'], env);
  const gateway = start('graphq gateway', graphqBin, [...settings, 'gateway', '--bind', `127.0.0.1:${port}`], env);
  await untilReady(gateway, base);
  return {
    base,
    port,
    token(user) {
      const r = spawnSync(graphqBin, ['token', '--user', user, '--graph', '*', '--ttl', '1h'], {
        cwd: repoRoot, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10_000,
      });
      if (r.status !== 0) throw new Error(`graphq token failed: ${r.stderr}`);
      return r.stdout.trim();
    },
    async stop() {
      await Promise.all([gateway.stop(), worker.stop()]);
    },
  };
}

/** `graphq dev` (gateway and workers in one process) on an existing Redis. */
export async function startGraphqDev({ redisUrl, prefix }) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dev = start('graphq dev', graphqBin, ['dev', '--bind', `127.0.0.1:${port}`, '--redis', redisUrl, '--prefix', prefix]);
  await untilReady(dev, base);
  return { base, port, stop: () => dev.stop() };
}

/**
 * A TCP proxy in front of `targetPort` through which one browser talks to
 * the gateway, so the test can break that browser's connection alone: cut
 * it (the browser sees the connection close), hold what the server sends,
 * or make the path silent (nothing gets through either way and nothing
 * closes, as when a network dies without telling anyone).
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  let refusing = false;
  /** While holding, what the server sends waits here, in order. */
  let held = null;
  /** While silent, nothing is forwarded and no close is passed on. */
  let silent = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    /** `waiting`: what came in while silent, in order; `gone`: a side closed then. */
    const pair = { client, upstream, waiting: [], gone: false };
    pairs.add(pair);
    pair.close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    pair.toClient = (d) => (held ? held.push([client, d]) : client.write(d));
    client.on('data', (d) => (silent ? pair.waiting.push([upstream, d]) : upstream.write(d)));
    upstream.on('data', (d) => (silent ? pair.waiting.push([client, d]) : pair.toClient(d)));
    const ended = () => {
      if (silent) pair.gone = true;
      else pair.close();
    };
    for (const s of [client, upstream]) {
      s.on('close', ended);
      s.on('error', ended);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    /** Breaks every connection and refuses new ones until restore(). */
    cut() {
      refusing = true;
      for (const pair of pairs) pair.close();
      pairs.clear();
    },
    restore() {
      refusing = false;
    },
    /** Holds back everything the server sends until release(). */
    hold() {
      held ??= [];
    },
    release() {
      const frames = held ?? [];
      held = null;
      for (const [client, d] of frames) if (!client.destroyed) client.write(d);
    },
    /**
     * From now on nothing gets through, either way, and the connections
     * stay open: new ones are accepted and go silent too. Like a dead
     * network, it tells neither side.
     */
    silence() {
      silent = true;
    },
    /**
     * The path works again: what waited is delivered, late, as TCP would
     * deliver it, and a side that closed meanwhile closes the other.
     */
    speak() {
      silent = false;
      for (const pair of [...pairs]) {
        for (const [to, d] of pair.waiting) {
          if (to.destroyed) continue;
          if (to === pair.client) pair.toClient(d);
          else to.write(d);
        }
        pair.waiting = [];
        if (pair.gone) {
          // end() sends what was written first; the close that follows ends the pair.
          pair.client.end();
          pair.upstream.end();
          if (pair.client.destroyed && pair.upstream.destroyed) pair.close();
        }
      }
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
