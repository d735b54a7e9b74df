// Scripted stand-ins for the client's surroundings: a socket the test plays
// the server on, a clock the test moves by hand, and a token.

/** A WebSocket whose server side is the test. */
export class FakeSocket {
  /** Every socket the client opened, oldest first. */
  static opened = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** Parsed messages the client sent. */
    this.sent = [];
    FakeSocket.opened.push(this);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(text));
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code: 1000 });
  }

  // --- the server's side

  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(message) {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
  }

  /** The connection breaks (no closing handshake). */
  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }

  /** The server closes the socket with `code` (4003: the token expired). */
  closeWith(code) {
    this.readyState = 3;
    this.onclose?.({ code });
  }

  /** Messages sent since the last call, by type when given. */
  take(type) {
    const all = this.sent;
    this.sent = [];
    return type ? all.filter((m) => m.type === type) : all;
  }
}

/** Timers that run only when the test says time passed. */
export class FakeClock {
  constructor() {
    this.time = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
    this.randomValue = 0.5;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + ms, fn });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.time;
    this.random = () => this.randomValue;
  }

  /** Moves time forward, running each timer that falls due, in order. */
  tick(ms) {
    const end = this.time + ms;
    for (;;) {
      let due = null;
      for (const [id, t] of this.timers) if (t.at <= end && (!due || t.at < due[1].at)) due = [id, t];
      if (!due) break;
      this.timers.delete(due[0]);
      this.time = Math.max(this.time, due[1].at);
      due[1].fn();
    }
    this.time = end;
  }
}

/**
 * An unsigned JWT naming `user` (the client only reads `sub` and `exp`),
 * expiring at `exp` (Unix seconds) when given.
 */
export function fakeToken(user, { exp } = {}) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const claims = { sub: user, graphs: '*', role: 'editor', ...(exp === undefined ? {} : { exp }) };
  return `${part({ alg: 'HS256' })}.${part(claims)}.sig`;
}

/**
 * What a device keeps for one (graph, user), shared by the FakeDevice
 * stores of several clients (tabs): the stored state, a channel between
 * them, and the sending lock (the first tab to ask holds it until it closes).
 */
export class FakeDeviceHub {
  constructor({ snapshot = null, pending = [] } = {}) {
    this.snapshot = snapshot;
    /** operationId → {seq, command} */
    this.pending = new Map(pending.map((p) => [p.command.operationId, p]));
    this.tabs = [];
    this.lockQueue = [];
    this.writes = 0;
    this.failWrites = false;
  }

  /** A store for one more tab. */
  store() {
    const hub = this;
    const tab = {
      listener: null,
      closed: false,
      kind: 'indexeddb',
      reason: null,
      async load() {
        return { snapshot: structuredClone(hub.snapshot), pending: [...hub.pending.values()].sort((a, b) => a.seq - b.seq) };
      },
      async saveSnapshot(snapshot) {
        hub.write();
        hub.snapshot = structuredClone(snapshot);
      },
      async addPending(entry) {
        hub.write();
        hub.pending.set(entry.command.operationId, structuredClone(entry));
      },
      async removePending(operationId) {
        hub.write();
        hub.pending.delete(operationId);
      },
      async clear() {
        hub.snapshot = null;
        hub.pending.clear();
      },
      post(message) {
        const copy = structuredClone(message);
        for (const other of hub.tabs) if (other !== tab && !other.closed) other.listener?.(copy);
      },
      onMessage(listener) {
        tab.listener = listener;
      },
      elect(onLeader) {
        hub.lockQueue.push({ tab, onLeader });
        if (hub.lockQueue.length === 1) onLeader();
      },
      close() {
        tab.closed = true;
        const holder = hub.lockQueue[0]?.tab === tab;
        hub.lockQueue = hub.lockQueue.filter((w) => w.tab !== tab);
        if (holder) hub.lockQueue[0]?.onLeader();
      },
    };
    this.tabs.push(tab);
    return tab;
  }

  write() {
    this.writes += 1;
    if (this.failWrites) throw new Error('QuotaExceededError');
  }
}
