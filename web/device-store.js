/**
 * What the graphq client keeps on the device, per graph and user: the
 * confirmed graph with its `(epoch, version)`, and the pending commands in
 * the order they were made. Backed by IndexedDB; where there is none (some
 * private modes, Node.js) or it fails (quota, a blocked database), the
 * same interface keeps everything in memory and says why in `reason`.
 *
 * It also ties the tabs of one user on one graph together: a
 * BroadcastChannel tells every tab what the others queued or settled, and a
 * Web Lock elects the one tab that sends (docs/client.md, Device storage).
 *
 * @module device-store
 */

/**
 * @typedef {{epoch: string, version: number, nodes: Object[], edges: Object[], viewport: ?Object}} Snapshot
 *   The confirmed graph as stored: the shape of a `state` object.
 * @typedef {{seq: number, command: import('./graphq-client.js').Command}} StoredCommand
 *   A pending command and its place in the queue (`seq` grows with time).
 * @typedef {{snapshot: ?Snapshot, pending: StoredCommand[]}} DeviceState
 */

const DB_NAME = 'graphq';
const DB_VERSION = 1;
const GRAPHS = 'graphs';
const PENDING = 'pending';

/**
 * The device storage of one (graph, user).
 *
 * @typedef {Object} DeviceStore
 * @property {'indexeddb'|'memory'} kind  Where the state lives.
 * @property {?string} reason  Why it is `memory`, or `null`.
 * @property {() => Promise<DeviceState>} load  What a previous session left.
 * @property {(snapshot: Snapshot, options?: {blind?: boolean}) => Promise<void>} saveSnapshot  Replaces the confirmed graph,
 *   unless the store holds a later version of the same epoch (a tab ahead of this one wrote it).
 *   `blind`: without that check, in one request, for a page going away (it would run no callback of a read).
 * @property {(entry: StoredCommand) => Promise<void>} addPending  Keeps one more pending command.
 * @property {(operationId: string) => Promise<void>} removePending  Drops a settled command.
 * @property {() => Promise<void>} clear  Forgets everything kept for this graph and user.
 * @property {(message: Object) => void} post  Tells the other tabs.
 * @property {(listener: (message: Object) => void) => void} onMessage  Hears the other tabs.
 * @property {(onLeader: () => void) => void} elect  Calls `onLeader` once this tab is the one that sends.
 * @property {() => void} close  Releases the lock and the channel.
 */

/**
 * The device store for `graphId` as `userId`: IndexedDB when the runtime
 * has it and it opens, else memory (with the reason). Never rejects.
 * @param {{graphId: string, userId: ?string, indexedDB?: ?IDBFactory}} options
 * @returns {Promise<DeviceStore>}
 */
export async function openDeviceStore({ graphId, userId, indexedDB = globalThis.indexedDB }) {
  const key = `${userId ?? ''}\u0000${graphId}`;
  if (!indexedDB) return memoryDeviceStore('this browser offers no IndexedDB');
  let db;
  try {
    db = await openDatabase(indexedDB);
  } catch (err) {
    return memoryDeviceStore(`IndexedDB could not be opened (${err?.message ?? err})`);
  }
  return idbStore(db, key, tabLink(key));
}

/**
 * A store that keeps nothing beyond this page. Its tab is on its own: it
 * sends its own commands and shares nothing with other tabs.
 * @param {string} reason  Why (shown to the user).
 * @returns {DeviceStore}
 */
export function memoryDeviceStore(reason) {
  return {
    kind: 'memory',
    reason,
    load: async () => ({ snapshot: null, pending: [] }),
    saveSnapshot: async () => {},
    addPending: async () => {},
    removePending: async () => {},
    clear: async () => {},
    ...tabLink(null),
  };
}

function openDatabase(indexedDB) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(GRAPHS)) db.createObjectStore(GRAPHS);
      if (!db.objectStoreNames.contains(PENDING)) {
        db.createObjectStore(PENDING, { keyPath: ['key', 'operationId'] }).createIndex('key', 'key');
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error('the database is blocked by another tab'));
  });
}

/**
 * Runs `fn(stores)` in one transaction; resolves with its result once
 * committed. `commit`: `fn` makes every request of the transaction, which
 * commits without waiting for this page to run again (it may be closing).
 */
function transact(db, names, mode, fn, { commit = false } = {}) {
  return new Promise((resolve, reject) => {
    let result;
    let tx;
    try {
      tx = db.transaction(names, mode);
      result = fn(names.map((n) => tx.objectStore(n)));
      if (commit) tx.commit?.();
    } catch (err) {
      reject(err);
      return;
    }
    tx.oncomplete = () => resolve(typeof result === 'function' ? result() : result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('transaction aborted'));
  });
}

function idbStore(db, key, tabs) {
  const store = {
    kind: 'indexeddb',
    reason: null,
    async load() {
      return transact(db, [GRAPHS, PENDING], 'readonly', ([graphs, pending]) => {
        const snapshot = graphs.get(key);
        const entries = pending.index('key').getAll(key);
        return () => ({
          snapshot: snapshot.result ?? null,
          pending: entries.result.map(({ seq, command }) => ({ seq, command })).sort((a, b) => a.seq - b.seq),
        });
      });
    },
    saveSnapshot(snapshot, { blind = false } = {}) {
      if (blind) return transact(db, [GRAPHS], 'readwrite', ([graphs]) => void graphs.put(snapshot, key), { commit: true });
      return transact(db, [GRAPHS], 'readwrite', ([graphs]) => {
        // A tab that is behind does not replace what a tab ahead of it wrote.
        const stored = graphs.get(key);
        stored.onsuccess = () => {
          const kept = stored.result;
          if (kept?.epoch === snapshot.epoch && kept.version > snapshot.version) return;
          graphs.put(snapshot, key);
        };
      });
    },
    addPending({ seq, command }) {
      return transact(db, [PENDING], 'readwrite', ([pending]) => {
        pending.put({ key, operationId: command.operationId, seq, command });
      }, { commit: true });
    },
    removePending(operationId) {
      return transact(db, [PENDING], 'readwrite', ([pending]) => {
        pending.delete([key, operationId]);
      }, { commit: true });
    },
    clear() {
      return transact(db, [GRAPHS, PENDING], 'readwrite', ([graphs, pending]) => {
        graphs.delete(key);
        pending.delete(IDBKeyRange.bound([key, ''], [key, '\uffff']));
      });
    },
    ...tabs,
    close() {
      tabs.close();
      db.close();
    },
  };
  return store;
}

/**
 * The tabs of one (graph, user): a BroadcastChannel to tell each other, a
 * Web Lock to elect the sender. Without either (Node.js, old browsers),
 * each tab stands alone and sends its own commands (the server applies an
 * operation id once, so a command sent from two tabs still applies once).
 * @param {?string} key  `null`: no sharing.
 */
function tabLink(key) {
  const name = key === null ? null : `graphq:${encodeURIComponent(key)}`;
  const channel = name !== null && typeof globalThis.BroadcastChannel === 'function' ? new BroadcastChannel(name) : null;
  const locks = globalThis.navigator?.locks;
  let release = null;
  let closed = false;
  return {
    post(message) {
      try {
        channel?.postMessage(message);
      } catch {
        // A message that cannot be cloned is not worth breaking the caller.
      }
    },
    onMessage(listener) {
      if (channel) channel.onmessage = (event) => listener(event.data);
    },
    elect(onLeader) {
      if (name === null || typeof locks?.request !== 'function') {
        onLeader();
        return;
      }
      // Granted to one tab at a time and held until it closes (or forgets).
      locks.request(name, () => {
        if (closed) return undefined;
        onLeader();
        return new Promise((resolve) => {
          release = resolve;
        });
      }).catch(() => {});
    },
    close() {
      closed = true;
      release?.();
      release = null;
      channel?.close();
    },
  };
}
