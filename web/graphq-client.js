/**
 * The graphq JavaScript client: one WebSocket, one graph, optimistic edits.
 *
 * An ES module with no dependencies and no build step; it runs in any
 * browser and in Node.js (pass a `WebSocket` implementation there when the
 * runtime has none). The API is documented in docs/client.md.
 *
 * The client keeps two things: the *confirmed* graph, exactly as the server
 * announced it up to one `(epoch, version)`, and a queue of *pending*
 * commands this client sent (or will send) whose outcome it has not heard.
 * What it shows, the *view*, is the confirmed graph with every pending
 * command applied on top, in the order they were made. Every message from
 * the server changes the confirmed graph or the queue, and the view is
 * rebuilt from the two, so a remote change lands *under* local edits (they
 * are rebased on it) and a revert simply drops its command.
 *
 * Both are kept on the device (IndexedDB, per graph and user; see
 * device-store.js), so a reload paints the last known graph at once and
 * edits made offline survive reloads and crashes.
 *
 * Protocol: docs/protocol.md.
 *
 * @module graphq-client
 */

import { memoryDeviceStore, openDeviceStore } from './device-store.js';
import { sseTransport } from './graphq-sse.js';

/**
 * @typedef {{x: number, y: number}} Point
 * @typedef {{id: string, type?: string|null, position: Point, data: Object<string, *>,
 *   version?: number, createdBy?: string, updatedBy?: string, updatedAt?: number}} Node
 * @typedef {{id: string, source: string, target: string, type?: string|null,
 *   data: Object<string, *>, version?: number}} Edge
 * @typedef {{nodes: Map<string, Node>, edges: Map<string, Edge>, viewport: ?Object}} Graph
 *   Entities are plain objects; treat them as read-only (the client replaces,
 *   never mutates, an entity that changes).
 * @typedef {{operationId: string, type: string, payload: Object, baseVersion: number,
 *   timestamp: number}} Command  The command object (docs/protocol.md, Commands).
 * @typedef {{kind: 'indexeddb'|'memory', reason: ?string}} StorageInfo  Where the
 *   client keeps its state: `memory` (with the reason) keeps nothing past the page.
 * @typedef {{view: Graph, status: Status, pending: Command[], version: number,
 *   epoch: ?string, storage: ?StorageInfo}} Snapshot  What `getSnapshot()` returns:
 *   one object per state, replaced when anything in it changes.
 * @typedef {'idle'|'connecting'|'syncing'|'online'|'offline'|'closed'} Status
 *   `idle` before connect(); `connecting` while the socket opens; `syncing`
 *   until the first SYNC; `online` when commands flow; `offline` while
 *   waiting to retry; `closed` after close().
 */

/** Ids the server accepts for nodes and edges (docs/protocol.md, Commands). */
const ENTITY_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Error codes after which the same command may succeed later. */
const RETRYABLE = new Set(['RATE_LIMITED', 'UNAVAILABLE']);

/** The close code of a socket whose token expired (docs/protocol.md, Close codes). */
const TOKEN_EXPIRED = 4003;

/** The server keeps this many changes per user on each of the undo and redo stacks. */
const HISTORY_MAX = 100;

// ---------------------------------------------------------------- graph model

/** @returns {Graph} an empty graph. */
export function emptyGraph() {
  return { nodes: new Map(), edges: new Map(), viewport: null };
}

/**
 * A copy that can be changed without touching `graph` (entities are shared:
 * they are replaced, never mutated).
 * @param {Graph} graph
 * @returns {Graph}
 */
export function copyGraph(graph) {
  return { nodes: new Map(graph.nodes), edges: new Map(graph.edges), viewport: graph.viewport };
}

/**
 * The graph of a `state` object (HTTP `GET …/state`, `SYNC reset`). Entries
 * that are not entities are left out rather than trusted.
 * @param {*} state
 * @returns {Graph}
 */
export function graphFromState(state) {
  const graph = emptyGraph();
  if (!isObject(state)) return graph;
  for (const node of arrayOf(state.nodes)) if (isEntity(node)) graph.nodes.set(node.id, node);
  for (const edge of arrayOf(state.edges)) if (isEntity(edge)) graph.edges.set(edge.id, edge);
  graph.viewport = isObject(state.viewport) ? state.viewport : null;
  return graph;
}

/**
 * Applies a server `change` (COMMAND_APPLIED, SYNC `changes`) to `graph` in
 * place: full new values of upserted entities, ids of removed ones.
 * @param {Graph} graph
 * @param {*} change
 */
export function applyChange(graph, change) {
  if (!isObject(change)) return;
  for (const node of arrayOf(change.nodes)) if (isEntity(node)) graph.nodes.set(node.id, node);
  for (const edge of arrayOf(change.edges)) if (isEntity(edge)) graph.edges.set(edge.id, edge);
  for (const id of arrayOf(change.removedEdges)) graph.edges.delete(id);
  for (const id of arrayOf(change.removedNodes)) graph.nodes.delete(id);
  if ('viewport' in change) graph.viewport = isObject(change.viewport) ? change.viewport : null;
}

/**
 * Predicts the effect of a command on `graph`, in place, the way the server
 * would apply it when nothing conflicts. A command the server would reject
 * (an edge to a missing node, an update of a missing node) changes nothing.
 * UNDO and REDO are not handled here: they need the user's history, which
 * the client predicts from the changes it saw (docs/client.md, Undo and redo).
 * @param {Graph} graph
 * @param {{type: string, payload: *}} command
 */
export function applyCommand(graph, command) {
  const p = isObject(command.payload) ? command.payload : {};
  switch (command.type) {
    case 'CREATE_NODE': {
      const n = p.node;
      if (!isEntity(n) || graph.nodes.has(n.id) || !isPoint(n.position)) return;
      graph.nodes.set(n.id, { id: n.id, type: n.type ?? null, position: n.position, data: plainData(n.data) });
      return;
    }
    case 'UPDATE_NODE': {
      const node = graph.nodes.get(p.id);
      if (!node || !isObject(p.patch)) return;
      graph.nodes.set(node.id, patched(node, p.patch));
      return;
    }
    case 'DELETE_NODE':
      if (!graph.nodes.delete(p.id)) return;
      for (const [id, edge] of graph.edges) {
        if (edge.source === p.id || edge.target === p.id) graph.edges.delete(id);
      }
      return;
    case 'CREATE_EDGE': {
      const e = p.edge;
      if (!isEntity(e) || graph.edges.has(e.id)) return;
      if (!graph.nodes.has(e.source) || !graph.nodes.has(e.target)) return;
      graph.edges.set(e.id, {
        id: e.id, source: e.source, target: e.target, type: e.type ?? null, data: plainData(e.data),
      });
      return;
    }
    case 'UPDATE_EDGE': {
      const edge = graph.edges.get(p.id);
      if (!edge || !isObject(p.patch)) return;
      graph.edges.set(edge.id, patched(edge, { type: p.patch.type, data: p.patch.data }));
      return;
    }
    case 'DELETE_EDGE':
      graph.edges.delete(p.id);
      return;
    case 'UPDATE_VIEWPORT':
      graph.viewport = { x: p.x, y: p.y, zoom: p.zoom };
      return;
    case 'BATCH_UPDATE':
      for (const op of arrayOf(p.operations)) if (isObject(op)) applyCommand(graph, op);
      return;
    default:
  }
}

/**
 * Ids of the nodes and edges a command means to change (for "pending"
 * markers in a UI).
 * @param {{type: string, payload: *}} command
 * @returns {string[]}
 */
export function touchedIds(command) {
  const p = isObject(command.payload) ? command.payload : {};
  switch (command.type) {
    case 'CREATE_NODE':
      return isEntity(p.node) ? [p.node.id] : [];
    case 'CREATE_EDGE':
      return isEntity(p.edge) ? [p.edge.id] : [];
    case 'UPDATE_NODE': case 'DELETE_NODE': case 'UPDATE_EDGE': case 'DELETE_EDGE':
      return typeof p.id === 'string' ? [p.id] : [];
    case 'BATCH_UPDATE':
      return arrayOf(p.operations).filter(isObject).flatMap(touchedIds);
    default:
      return [];
  }
}

// ---------------------------------------------------------------- undo and redo

/**
 * @typedef {{nodes: Map<string, ?Node>, edges: Map<string, ?Edge>, viewport?: {value: ?Object}}} Side
 *   Values of the entities a change touched (`null`: absent), and of the
 *   viewport when it touched it.
 * @typedef {{before: Side, after: Side}} HistoryEntry  One change, as UNDO reverts it.
 * @typedef {{items: (?HistoryEntry)[], known: boolean}} Stack  Newest last; a `null`
 *   item is a change this client cannot know; `known`: nothing lies below the items.
 * @typedef {{undo: Stack, redo: Stack}} History  This user's undo and redo stacks,
 *   as the server keeps them (docs/graph.md, Undo and redo).
 */

/** @returns {History} stacks this client knows nothing about (a new client, or after a reset). */
function unknownHistory() {
  return { undo: { items: [], known: false }, redo: { items: [], known: false } };
}

/** @param {History} history @returns {History} */
function copyHistory({ undo, redo }) {
  return { undo: { ...undo, items: [...undo.items] }, redo: { ...redo, items: [...redo.items] } };
}

/**
 * Mirrors the server's stacks after one of this user's changes of `type`:
 * UNDO moves the newest change of the undo stack to the redo stack (as the
 * change that reverted it), REDO the other way, anything else goes on the
 * undo stack and empties the redo stack.
 * @param {History} history
 * @param {?string} type
 * @param {?HistoryEntry} entry  The change; `null` when it cannot be known.
 */
function recordHistory(history, type, entry) {
  const { undo, redo } = history;
  if (type === 'UNDO' || type === 'REDO') {
    const [from, to] = type === 'UNDO' ? [undo, redo] : [redo, undo];
    from.items.pop();
    pushHistory(to, entry);
  } else {
    pushHistory(undo, entry);
    redo.items = [];
    redo.known = true;
  }
}

/** @param {Stack} stack @param {?HistoryEntry} entry */
function pushHistory(stack, entry) {
  stack.items.push(entry);
  if (stack.items.length > HISTORY_MAX) stack.items.shift();
}

/** @returns {Side} */
function emptySide() {
  return { nodes: new Map(), edges: new Map() };
}

/**
 * The history entry of a server change (its `undo` holds the values
 * before); `null` without one.
 * @param {*} change
 * @returns {?HistoryEntry}
 */
function entryOfChange(change) {
  if (!isObject(change) || !isObject(change.undo)) return null;
  const { undo } = change;
  const before = emptySide();
  const after = emptySide();
  for (const kind of /** @type {const} */ (['nodes', 'edges'])) {
    const now = new Map(arrayOf(change[kind]).filter(isEntity).map((e) => [e.id, e]));
    for (const [id, value] of Object.entries(isObject(undo[kind]) ? undo[kind] : {})) {
      before[kind].set(id, isEntity(value) ? value : null);
      after[kind].set(id, now.get(id) ?? null);
    }
  }
  if ('viewport' in undo) {
    before.viewport = { value: isObject(undo.viewport) ? undo.viewport : null };
    after.viewport = { value: isObject(change.viewport) ? change.viewport : null };
  }
  return { before, after };
}

/**
 * What changed from graph `from` to graph `to`, as a history entry
 * (entities are replaced, never mutated, so identity tells).
 * @param {Graph} from
 * @param {Graph} to
 * @returns {HistoryEntry}
 */
function entryOfDiff(from, to) {
  const before = emptySide();
  const after = emptySide();
  for (const kind of /** @type {const} */ (['nodes', 'edges'])) {
    /** @type {Map<string, *>} */
    const was = from[kind];
    /** @type {Map<string, *>} */
    const now = to[kind];
    for (const [id, value] of was) {
      if (now.get(id) === value) continue;
      before[kind].set(id, value);
      after[kind].set(id, now.get(id) ?? null);
    }
    for (const [id, value] of now) {
      if (was.has(id)) continue;
      before[kind].set(id, null);
      after[kind].set(id, value);
    }
  }
  if (from.viewport !== to.viewport) {
    before.viewport = { value: from.viewport };
    after.viewport = { value: to.viewport };
  }
  return { before, after };
}

/**
 * Predicts, in place, the revert of `entry` the way the server makes it
 * (docs/graph.md, Undo and redo): whatever still shows the change goes back
 * to its value before; whatever someone changed since is left alone (the
 * server reports a conflict there).
 * @param {Graph} graph
 * @param {HistoryEntry} entry
 */
function revertEntry(graph, { before, after }) {
  for (const [id, was] of before.nodes) restore(graph.nodes, id, was, after.nodes.get(id) ?? null);
  for (const [id, was] of before.edges) {
    if (was && (!graph.nodes.has(was.source) || !graph.nodes.has(was.target))) continue;
    restore(graph.edges, id, was, after.edges.get(id) ?? null);
  }
  for (const [id, was] of before.edges) if (was === null) unmake(graph.edges, id, after.edges.get(id));
  for (const [id, was] of before.nodes) {
    if (was !== null || !unmake(graph.nodes, id, after.nodes.get(id))) continue;
    for (const [edgeId, edge] of graph.edges) {
      if (edge.source === id || edge.target === id) graph.edges.delete(edgeId);
    }
  }
  if (before.viewport && after.viewport && sameValue(graph.viewport, after.viewport.value)) {
    graph.viewport = before.viewport.value;
  }
}

/**
 * Puts back an entity the change deleted or updated.
 * @param {Map<string, *>} map
 * @param {string} id
 * @param {*} was  Its value before the change (`null`: the change created it).
 * @param {*} now  Its value after the change (`null`: the change deleted it).
 */
function restore(map, id, was, now) {
  if (was === null) return;
  const current = map.get(id);
  if (now === null) {
    if (!current) map.set(id, was);
    return;
  }
  if (!current || !sameContent(current, now)) return;
  const back = { ...current, type: was.type ?? null, data: plainData(was.data) };
  if (isPoint(was.position)) back.position = was.position;
  map.set(id, back);
}

/**
 * Removes an entity the change created, if it is still as the change left it.
 * @param {Map<string, *>} map
 * @param {string} id
 * @param {*} now
 * @returns {boolean} whether it was removed
 */
function unmake(map, id, now) {
  const current = map.get(id);
  if (!current || !now || !sameContent(current, now)) return false;
  map.delete(id);
  return true;
}

/** Same type, position or endpoints, and data. */
function sameContent(a, b) {
  return (a.type ?? null) === (b.type ?? null) && a.source === b.source && a.target === b.target
    && sameValue(a.position ?? null, b.position ?? null) && sameValue(plainData(a.data), plainData(b.data));
}

function sameValue(a, b) {
  return stableJson(a) === stableJson(b);
}

/** JSON with object keys sorted, so equal values give equal text. */
function stableJson(v) {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`).join(',')}}`;
  return JSON.stringify(v ?? null);
}

/** The entity with `patch` applied: `data` merges by key, `null` removes. */
function patched(entity, patch) {
  const next = { ...entity };
  if (patch.type !== undefined) next.type = patch.type;
  if (isPoint(patch.position)) next.position = patch.position;
  if (isObject(patch.data)) {
    const data = { ...plainData(entity.data) };
    for (const [key, value] of Object.entries(patch.data)) {
      if (value === null) delete data[key];
      else data[key] = value;
    }
    next.data = data;
  }
  return next;
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isEntity(v) {
  return isObject(v) && typeof v.id === 'string';
}

function isPoint(v) {
  return isObject(v) && Number.isFinite(v.x) && Number.isFinite(v.y);
}

function isVersion(v) {
  return Number.isSafeInteger(v) && v >= 0;
}

function arrayOf(v) {
  return Array.isArray(v) ? v : [];
}

function plainData(v) {
  return isObject(v) ? v : {};
}

// ---------------------------------------------------------------- helpers

/**
 * A random id: a UUID where `crypto.randomUUID` exists (secure contexts),
 * else 122 random bits in the same layout.
 * @returns {string}
 */
export function randomId() {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The claims of a JWT, read without checking the signature (the server
 * does that); `null` when `token` is not one.
 * @param {string} token
 * @returns {?{sub?: string, exp?: number, role?: string, graphs?: *}}
 */
export function tokenClaims(token) {
  try {
    const part = String(token).split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)));
    return isObject(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** The `/ws` address of the page's own server, if there is a page. */
function defaultUrl() {
  const loc = globalThis.location;
  if (!loc?.host) throw new TypeError('GraphqClient: `url` is required outside a web page');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/** `ws://host:port/ws` → `http://host:port`. */
function httpBase(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  return u.origin;
}

const defaultClock = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  now: () => Date.now(),
  random: () => Math.random(),
};

// ---------------------------------------------------------------- the client

/**
 * @typedef {Object} ClientOptions
 * @property {string} token  An access token (docs/protocol.md, Auth).
 * @property {string} graphId  The graph to edit.
 * @property {string} [url]  The WebSocket endpoint; default `/ws` on the page's host.
 * @property {string} [httpUrl]  Base of the HTTP API; default derived from `url`.
 * @property {typeof WebSocket} [WebSocket]  Default `globalThis.WebSocket`.
 * @property {'websocket'|'sse'|'auto'} [transport]  `sse`: events over
 *   Server-Sent Events, commands over HTTP (graphq-sse.js). `auto` (the
 *   default in browsers, unless `WebSocket` is given): WebSocket, and SSE
 *   for good once two WebSockets in a row closed before their SYNC, plain
 *   HTTP then reached the gateway and one more WebSocket failed (a proxy
 *   that breaks WebSockets; with the network down, WebSocket stays).
 * @property {typeof EventSource} [EventSource]  Default `globalThis.EventSource`.
 * @property {typeof fetch} [fetch]  Default `globalThis.fetch`; used to ask
 *   the fate of resent commands.
 * @property {number} [presenceIntervalMs=100]  At most one PRESENCE per interval
 *   (the latest one is sent at its end). The gateway drops anything closer than 50 ms.
 * @property {number} [heartbeatMs=15000]  HEARTBEAT period while connected.
 * @property {number} [silenceMs=40000]  A socket silent this long is presumed dead.
 * @property {number} [probeAfterMs=5000]  While online, after this long without
 *   a word from the server the client sends HEARTBEAT to ask if it is still there.
 * @property {number} [probeTimeoutMs=3000]  After that HEARTBEAT, or a command
 *   sent, nothing at all heard from the server for this long means the
 *   connection is dead (a path that went silent without closing): it is
 *   dropped and replaced. `Infinity` turns this deadline off (and
 *   `probeAfterMs: Infinity` the HEARTBEATs).
 * @property {number} [openTimeoutMs=10000]  A socket that has not opened
 *   after this long is given up and another one tried.
 * @property {number} [backoffBaseMs=250]  First reconnect delay (before jitter).
 * @property {number} [backoffMaxMs=10000]  Longest reconnect delay.
 * @property {number} [outcomeCheckMs=1500]  After a resent command is accepted
 *   again, how long to wait for its outcome before asking `GET /api/v2/operations/{id}`.
 * @property {() => Promise<string>} [getToken]  Returns a fresh token for the
 *   same user. With it the client renews the token on the open socket
 *   (REFRESH) before the current one's `exp`, and fetches a new one before
 *   reconnecting when the server closed the socket because the token expired
 *   (4003) or the token it holds has expired. Without it a socket lives as
 *   long as its token.
 * @property {number} [refreshBeforeMs=30000]  How long before `exp` to send
 *   REFRESH; at most half of the time the token has left.
 * @property {'auto'|false|import('./device-store.js').DeviceStore|Promise<import('./device-store.js').DeviceStore>} [device='auto']
 *   Where the confirmed graph and the pending commands are kept between
 *   sessions: `'auto'`, IndexedDB where the runtime has it (else memory,
 *   and `storage` says why); `false`, memory only; or a store of your own
 *   (device-store.js).
 * @property {number} [snapshotDelayMs=250]  The confirmed graph is written to
 *   the device at most this often, and at once when the connection drops
 *   (pending commands are written at once).
 * @property {{setTimeout: Function, clearTimeout: Function, now: () => number,
 *   random: () => number}} [clock]  Time and randomness, replaceable for tests.
 */

/**
 * One graph, kept in sync over one WebSocket, edited optimistically.
 *
 * Events (subscribe with {@link GraphqClient#on}):
 * - `change` `{view}`: the view changed (any cause).
 * - `status` `{status, retryInMs?, pending}`: connection state changed.
 * - `sync` `{status, epoch, version}`: a SYNC was applied (`in_sync`, `behind`, `reset`).
 * - `applied` `{operationId, userId, version, type, own}`: a command was applied
 *   (`own`: it was one of this client's pending commands, now confirmed).
 * - `revert` `{operationId, command, error: {code, message}, current?}`: one of
 *   this client's commands was rejected and has been rolled back.
 * - `conflict` `{operationId, command?, field, clientValue, serverValue, strategy}`.
 * - `presence` `{peers}`: another user's cursor or selection changed, or they left.
 * - `error` `{code, message}`: a protocol-level problem (bad frame, ERROR without a command),
 *   `TOKEN_EXPIRED` (the server closed the socket at the token's `exp`),
 *   `TOKEN_REFRESH_FAILED` (`getToken` threw or gave no string),
 *   `AUTH_REFRESH_REFUSED` (the server refused the renewed token), or `FORBIDDEN`
 *   when a renewed token no longer grants the graph (UNSUBSCRIBED).
 * - `refreshed` `{expiresAt}`: the socket now holds a renewed token, valid
 *   until `expiresAt` (ms since the Unix epoch).
 * - `storage` `{kind, reason}`: where the client keeps its state, known
 *   once the device store opened (`memory`: nothing survives the page).
 */
export class GraphqClient {
  /** @type {ClientOptions & {url: string, httpUrl: string}} */
  #opts;
  /** @type {Object<string, Set<Function>>} */
  #listeners = {};
  #clock;
  /** The graph exactly as the server announced it at `#version`. */
  #confirmed = emptyGraph();
  /** `null` until the first SYNC: the client has never seen the graph. */
  #epoch = null;
  #version = 0;
  /**
   * This client's commands without an outcome yet, oldest first. `state`:
   * `queued` (to be sent when online), `sent`, `accepted` (durably queued
   * by the server). `resent`: it went out on an earlier connection too, so
   * its outcome may have been announced while this client was away.
   * `seq`: its place in the queue shared by this user's tabs. `appliedAt`:
   * another tab saw it applied at that version, which this tab has not reached.
   * @type {{command: Command, seq: number, state: string, resent: boolean, checks: number, appliedAt?: number}[]}
   */
  #pending = [];
  /** The confirmed graph with every pending command applied, in order. */
  #view = emptyGraph();
  #pendingIds = new Set();
  /** Other users' presence by user id. */
  #peers = new Map();
  /** @type {Status} */
  #status = 'idle';
  /** @type {?WebSocket} */
  #socket = null;
  /** True once the current socket's first SYNC arrived: commands may flow. */
  #subscribed = false;
  #attempt = 0;
  #lastHeard = 0;
  #timers = {
    reconnect: null, heartbeat: null, presence: null, retry: null, sync: null, refresh: null, save: null,
    probe: null, answer: null, open: null,
  };
  /** This user's presence; `dirty` until the latest state was sent. */
  #presence = { state: { cursor: null, selection: [], name: null, preview: null }, dirty: false, lastSent: -Infinity };
  #lastSyncRequest = -Infinity;
  #wantFullSync = false;
  #onlineListener = null;
  #offlineListener = null;
  /** Writes what the device lacks when the page is hidden or left. @type {?((event: Event) => void)} */
  #hiddenListener = null;
  /** The device may not hold the confirmed graph as it is now (a write waits or is on its way). */
  #unsaved = false;
  /** The token a REFRESH in flight offers, taken on REFRESHED. @type {?string} */
  #offeredToken = null;
  /** The server said the token expired: get a fresh one before reconnecting. */
  #needFreshToken = false;
  /** Counts token requests before a connect, so a stale answer is dropped. */
  #tokenRequests = 0;
  /** Where state is kept between sessions; `null` until it has loaded. */
  #device = null;
  /** Settles once the device store has loaded (never rejects). @type {Promise<void>} */
  #ready;
  /** This tab sends the commands of its (graph, user) (one tab does). */
  #leader = false;
  /** This user's undo and redo stacks as far as the confirmed changes tell. @type {History} */
  #history = unknownHistory();
  /**
   * A command was refused for now (RATE_LIMITED, UNAVAILABLE): until every
   * pending command is accepted, send one at a time, each after the one
   * before it is accepted, so none overtakes an older one.
   */
  #ordered = false;
  /**
   * The command the server last refused for now on this socket, and whether
   * it went out again since. Until it does, the gateway (or the SSE
   * transport) refuses every later command of the graph on this socket the
   * same way, so none overtakes it (docs/protocol.md, Rate limit).
   * @type {?{command: Command, sent: boolean}}
   */
  #held = null;
  /** Last `seq` given to a pending command (its place in the queue, across tabs). */
  #seq = 0;
  /** What getSnapshot() returns until something changes. @type {?Snapshot} */
  #snapshot = null;
  #forgotten = false;
  /** WebSockets in a row that closed before they opened (`transport: 'auto'`). */
  #unopened = 0;
  /** A probe of the HTTP side is on its way (`transport: 'auto'`). */
  #probing = false;
  /** That probe reached the gateway since the last SYNC (`transport: 'auto'`). */
  #httpReachable = false;

  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options?.token) throw new TypeError('GraphqClient: `token` is required');
    if (!options.graphId) throw new TypeError('GraphqClient: `graphId` is required');
    const url = options.url ?? defaultUrl();
    this.#opts = {
      presenceIntervalMs: 100,
      heartbeatMs: 15000,
      silenceMs: 40000,
      probeAfterMs: 5000,
      probeTimeoutMs: 3000,
      openTimeoutMs: 10000,
      backoffBaseMs: 250,
      backoffMaxMs: 10000,
      outcomeCheckMs: 1500,
      refreshBeforeMs: 30000,
      snapshotDelayMs: 250,
      ...options,
      url,
      httpUrl: options.httpUrl ?? httpBase(url),
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
      fetch: options.fetch ?? globalThis.fetch?.bind(globalThis),
      transport: options.transport ?? (options.WebSocket || !globalThis.EventSource ? 'websocket' : 'auto'),
      EventSource: options.EventSource ?? globalThis.EventSource,
    };
    if (this.#opts.transport === 'sse') this.#useSse();
    this.#clock = { ...defaultClock, ...options.clock };
    /** The user the token names (its `sub`), or `null`. @type {?string} */
    this.userId = tokenClaims(options.token)?.sub ?? null;
    /** @type {string} */
    this.graphId = options.graphId;
    this.#ready = this.#openDevice(options.device ?? 'auto');
  }

  // ------------------------------------------------------------ the device

  /**
   * Opens the device store and loads what an earlier session left: the
   * confirmed graph is shown at once (before any network), and the pending
   * commands go back in the queue, to be sent with their operation ids.
   * @returns {Promise<void>}
   */
  #openDevice(device) {
    const noIndexedDb = device === 'auto' && !globalThis.indexedDB;
    if (device === false || noIndexedDb) {
      // Synchronous, so a client without storage is usable at once.
      this.#useDevice(memoryDeviceStore(device === false ? 'device storage is off' : 'this browser offers no IndexedDB'), null);
      return Promise.resolve();
    }
    const opening = device === 'auto' ? openDeviceStore({ graphId: this.graphId, userId: this.userId }) : device;
    return Promise.resolve(opening)
      .then((store) => store.load().then((state) => this.#useDevice(store, state)))
      .catch((err) => this.#useDevice(memoryDeviceStore(`the device store failed (${err?.message ?? err})`), null));
  }

  /**
   * @param {import('./device-store.js').DeviceStore} store
   * @param {?import('./device-store.js').DeviceState} state
   */
  #useDevice(store, state) {
    if (this.#forgotten) {
      store.close();
      return;
    }
    this.#device = store;
    const snapshot = state?.snapshot;
    if (this.#epoch === null && isObject(snapshot) && typeof snapshot.epoch === 'string' && isVersion(snapshot.version)) {
      this.#confirmed = graphFromState(snapshot);
      this.#epoch = snapshot.epoch;
      this.#version = snapshot.version;
    }
    // Commands made before the store loaded are kept too, after the stored ones.
    const made = this.#pending;
    this.#pending = [];
    for (const { seq, command } of arrayOf(state?.pending)) this.#addFromElsewhere(seq, command);
    for (const entry of made) {
      this.#pending.push(entry);
      this.#persist(entry);
    }
    store.onMessage((message) => this.#onTabMessage(message));
    this.#snapshot = null;
    this.#emit('storage', this.storage);
    this.#rebuild();
    store.elect(() => {
      if (this.#forgotten) return;
      this.#leader = true;
      if (this.#subscribed) this.#flush();
    });
  }

  /**
   * A pending command this client did not make here (another tab, or an
   * earlier session): it may have been sent already, so its outcome may
   * have been announced to another socket.
   */
  #addFromElsewhere(seq, command) {
    if (!isObject(command) || typeof command.operationId !== 'string' || !Number.isFinite(seq)) return false;
    if (this.#pending.some((p) => p.command.operationId === command.operationId)) return false;
    const entry = { command, seq, state: 'queued', resent: true, checks: 0 };
    const at = this.#pending.findIndex((p) => p.seq > seq);
    if (at < 0) this.#pending.push(entry);
    else this.#pending.splice(at, 0, entry);
    this.#seq = Math.max(this.#seq, seq);
    return true;
  }

  /** Writes a new pending command to the device and tells the other tabs. */
  #persist(entry) {
    const device = this.#device;
    if (!device) return;
    device.addPending({ seq: entry.seq, command: entry.command }).catch((err) => this.#deviceFailed(err));
    device.post({ type: 'queued', seq: entry.seq, command: entry.command });
  }

  /** Writes the confirmed graph to the device soon (one write per `snapshotDelayMs`). */
  #saveSoon() {
    if (!this.#device || this.#device.kind === 'memory') return;
    this.#unsaved = true;
    if (this.#timers.save !== null) return;
    this.#startTimer('save', this.#opts.snapshotDelayMs, () => this.#saveNow());
  }

  /**
   * The page is hidden or left: the confirmed graph is written now if the
   * device may lack it, without first reading what is stored (a page going
   * away runs no more callbacks, so a write waiting on a read would never
   * happen). Pending commands were written when they were made.
   */
  #saveOnHide() {
    if (!this.#unsaved) return;
    this.#stopTimer('save');
    this.#saveNow({ blind: true });
  }

  /** A write of the confirmed graph that is waiting goes now (the connection
   * dropped: what the device holds is what a reload will show). */
  #saveWaiting() {
    if (this.#timers.save === null) return;
    this.#stopTimer('save');
    this.#saveNow();
  }

  /** @param {{blind?: boolean}} [options]  `blind`: see DeviceStore's saveSnapshot. */
  #saveNow({ blind = false } = {}) {
    const device = this.#device;
    if (!device || this.#epoch === null || this.#forgotten) return;
    const g = this.#confirmed;
    const epoch = this.#epoch;
    const version = this.#version;
    device.saveSnapshot({
      epoch,
      version,
      nodes: [...g.nodes.values()],
      edges: [...g.edges.values()],
      viewport: g.viewport,
    }, { blind }).then(() => {
      if (this.#epoch === epoch && this.#version === version && this.#timers.save === null) this.#unsaved = false;
    }, (err) => this.#deviceFailed(err));
  }

  /** A write failed (quota, storage cleared): carry on in memory, and say so. */
  #deviceFailed(err) {
    if (!this.#device || this.#device.kind === 'memory') return;
    const reason = `the device store failed (${err?.message ?? err})`;
    this.#device.close();
    this.#device = memoryDeviceStore(reason);
    this.#snapshot = null;
    this.#emit('storage', this.storage);
    this.#emit('change', { view: this.#view });
  }

  /** What another tab of this user on this graph did. */
  #onTabMessage(message) {
    if (!isObject(message) || this.#forgotten) return;
    if (message.type === 'queued') {
      if (!this.#addFromElsewhere(message.seq, message.command)) return;
      this.#rebuild();
      if (this.#leader && this.#subscribed) this.#flush();
    } else if (message.type === 'settled') {
      const entry = this.#pending.find((p) => p.command.operationId === message.operationId);
      if (!entry) return;
      if (isVersion(message.version) && message.version > this.#version) {
        // Applied at a version this tab has not reached: it goes when the
        // change does, so the edit never blinks out of the view.
        entry.appliedAt = message.version;
        return;
      }
      this.#take(message.operationId);
      if (isObject(message.error)) this.#revertedHistory(entry, message.error);
      this.#rebuild();
      if (isObject(message.error)) {
        this.#emit('revert', { operationId: message.operationId, command: entry.command, error: message.error });
      }
    } else if (message.type === 'forget') {
      this.#forgetHere();
    }
  }

  /**
   * Where this client keeps its state: `{kind: 'indexeddb'}`, or
   * `{kind: 'memory', reason}` when nothing outlives the page; `null` while
   * the device store opens.
   * @returns {?StorageInfo}
   */
  get storage() {
    return this.#device && { kind: this.#device.kind, reason: this.#device.reason };
  }

  /**
   * Settles once the device state has loaded and been shown (the first paint).
   * @returns {Promise<void>}
   */
  get ready() {
    return this.#ready;
  }

  /**
   * Signs out of this device: closes the client and deletes what it kept
   * for this graph and user, in every tab. The client cannot connect again.
   * @returns {Promise<void>}
   */
  async forget() {
    const device = this.#device;
    this.#forgetHere();
    device?.post({ type: 'forget' });
    await device?.clear().catch(() => {});
    device?.close();
  }

  #forgetHere() {
    this.#forgotten = true;
    this.close();
    this.#leader = false;
    this.#pending = [];
    this.#confirmed = emptyGraph();
    this.#epoch = null;
    this.#version = 0;
    this.#history = unknownHistory();
    this.#rebuild();
  }

  // ------------------------------------------------------------ for UI frameworks

  /**
   * Calls `callback` whenever `getSnapshot()` would return something new;
   * returns a function that stops it. With React:
   * `useSyncExternalStore(client.subscribe, client.getSnapshot)`.
   * @param {() => void} callback
   * @returns {() => void}
   */
  subscribe = (callback) => {
    const offs = ['change', 'status', 'storage'].map((type) => this.on(/** @type {*} */ (type), () => callback()));
    return () => offs.forEach((off) => off());
  };

  /**
   * The client's state in one object, the same object until something in it
   * changes (as `useSyncExternalStore` needs).
   * @returns {Snapshot}
   */
  getSnapshot = () => {
    this.#snapshot ??= Object.freeze({
      view: this.#view,
      status: this.#status,
      pending: this.pending,
      version: this.#version,
      epoch: this.#epoch,
      storage: this.storage,
    });
    return this.#snapshot;
  };

  // ------------------------------------------------------------ reading

  /** What to show: confirmed state plus pending edits. @returns {Graph} */
  get view() {
    return this.#view;
  }

  /** The graph as the server confirmed it. @returns {Graph} */
  get confirmed() {
    return this.#confirmed;
  }

  /** Graph version of the confirmed state. @returns {number} */
  get version() {
    return this.#version;
  }

  /** Epoch of the confirmed state; `null` before the first SYNC. @returns {?string} */
  get epoch() {
    return this.#epoch;
  }

  /** @returns {Status} */
  get status() {
    return this.#status;
  }

  /** What carries the messages now: `websocket` or `sse`. @returns {string} */
  get transport() {
    return this.#opts.transport === 'sse' ? 'sse' : 'websocket';
  }

  /**
   * Two WebSockets in a row closed before their SYNC. When plain HTTP still
   * reaches the gateway and the next WebSocket fails too, WebSockets are
   * what is blocked (a proxy that breaks them): Server-Sent Events from now
   * on. When HTTP fails as well, the network is down, and the client keeps
   * trying WebSockets (offline edits then go out over the transport they
   * would have used); a network that comes back while the probe is on its
   * way gets its WebSocket, since one more must fail before the switch.
   */
  #probeHttp() {
    const { httpUrl, fetch } = this.#opts;
    if (this.#probing || !fetch) return;
    this.#probing = true;
    // On a silent network the request would hang for minutes, keeping the probe "on its way".
    const signal = globalThis.AbortSignal?.timeout?.(this.#opts.openTimeoutMs);
    fetch(`${httpUrl}/healthz`, { cache: 'no-store', signal }).then(
      () => {
        this.#probing = false;
        this.#httpReachable = true;
      },
      () => {
        this.#probing = false;
        this.#unopened = 0;
      },
    );
  }

  /** From now on, Server-Sent Events and HTTP instead of a WebSocket. */
  #useSse() {
    const { httpUrl, fetch, EventSource } = this.#opts;
    this.#opts.transport = 'sse';
    this.#opts.WebSocket = sseTransport({ httpUrl, fetch, EventSource });
  }

  /** This client's commands still waiting for an outcome, oldest first. @returns {Command[]} */
  get pending() {
    return this.#pending.map((p) => p.command);
  }

  /**
   * Other users in the graph: user id → `{userId, cursor, selection, name, preview}`.
   * @returns {Map<string, {userId: string, cursor: ?Point, selection: string[], name: ?string, preview: ?Object}>}
   */
  get peers() {
    return this.#peers;
  }

  /**
   * Whether a pending command touches this node or edge.
   * @param {string} id
   * @returns {boolean}
   */
  isPending(id) {
    return this.#pendingIds.has(id);
  }

  // ------------------------------------------------------------ events

  /**
   * Calls `listener(detail)` for every event of `type`.
   * @param {'change'|'status'|'sync'|'applied'|'revert'|'conflict'|'presence'|'error'|'refreshed'|'storage'} type
   * @param {(detail: Object) => void} listener
   * @returns {() => void} a function that removes the listener
   */
  on(type, listener) {
    (this.#listeners[type] ??= new Set()).add(listener);
    return () => this.#listeners[type].delete(listener);
  }

  #emit(type, detail) {
    for (const listener of this.#listeners[type] ?? []) {
      // A broken listener must not break the client's own bookkeeping.
      try {
        listener(detail);
      } catch (err) {
        console.error(`graphq: a '${type}' listener threw`, err);
      }
    }
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Opens the socket (and keeps it open, reconnecting, until close()),
   * once the device state has loaded: the subscription starts from it.
   */
  connect() {
    if ((this.#status !== 'idle' && this.#status !== 'closed') || this.#forgotten) return;
    const target = globalThis.window;
    if (typeof target?.addEventListener === 'function') {
      // The browser knows when the network is back: retry at once.
      this.#onlineListener = () => this.#status === 'offline' && this.#open();
      target.addEventListener('online', this.#onlineListener);
      // ... and when it is gone: say so now rather than after a silent minute.
      this.#offlineListener = () => this.#dropSocket();
      target.addEventListener('offline', this.#offlineListener);
      // A hidden page may be closed, or killed, with no later chance to
      // write: what the device lacks is written now.
      this.#hiddenListener = (event) => {
        if (event.type === 'pagehide' || globalThis.document?.visibilityState === 'hidden') this.#saveOnHide();
      };
      target.addEventListener('pagehide', this.#hiddenListener);
      target.addEventListener('visibilitychange', this.#hiddenListener);
    }
    if (this.#device) {
      this.#open();
      return;
    }
    this.#setStatus('connecting');
    this.#ready.then(() => this.#status === 'connecting' && this.#socket === null && this.#open());
  }

  /** Closes the socket and stops reconnecting. Pending commands are kept. */
  close() {
    const saving = this.#timers.save !== null;
    this.#setStatus('closed');
    for (const name of Object.keys(this.#timers)) this.#stopTimer(name);
    if (saving) this.#saveNow();
    if (this.#onlineListener) globalThis.window.removeEventListener('online', this.#onlineListener);
    if (this.#offlineListener) globalThis.window.removeEventListener('offline', this.#offlineListener);
    if (this.#hiddenListener) {
      globalThis.window.removeEventListener('pagehide', this.#hiddenListener);
      globalThis.window.removeEventListener('visibilitychange', this.#hiddenListener);
    }
    this.#onlineListener = this.#offlineListener = this.#hiddenListener = null;
    const socket = this.#socket;
    this.#socket = null;
    this.#subscribed = false;
    socket?.close(1000);
  }

  #open() {
    this.#stopTimer('reconnect');
    this.#setStatus('connecting');
    if (!this.#opts.getToken || !(this.#needFreshToken || this.#tokenLeftMs() <= 0)) {
      this.#openSocket();
      return;
    }
    // An expired token would only be refused (401): get a fresh one first.
    const request = ++this.#tokenRequests;
    this.#fetchToken().then((token) => {
      if (this.#status !== 'connecting' || request !== this.#tokenRequests) return;
      if (token === null) {
        this.#scheduleReconnect();
        return;
      }
      this.#opts.token = token;
      this.userId = tokenClaims(token)?.sub ?? this.userId;
      this.#needFreshToken = false;
      this.#openSocket();
    });
  }

  #openSocket() {
    const sep = this.#opts.url.includes('?') ? '&' : '?';
    let socket;
    try {
      socket = new this.#opts.WebSocket(`${this.#opts.url}${sep}token=${encodeURIComponent(this.#opts.token)}`);
    } catch (err) {
      this.#emit('error', { code: 'CONNECT_FAILED', message: String(err?.message ?? err) });
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    this.#subscribed = false;
    // A connect the network swallows (no refusal, no error) would leave the
    // client connecting for minutes.
    this.#startTimer('open', this.#opts.openTimeoutMs, () => socket === this.#socket && this.#dropSocket());
    socket.onopen = () => socket === this.#socket && this.#onOpen();
    socket.onmessage = (event) => socket === this.#socket && this.#onFrame(event.data);
    socket.onclose = (event) => socket === this.#socket && this.#onClosed(event?.code);
    // An error is always followed by close; nothing to do here.
    socket.onerror = () => {};
  }

  #onOpen() {
    this.#stopTimer('open');
    this.#unopened = 0;
    this.#lastHeard = this.#clock.now();
    this.#setStatus('syncing');
    this.#send(this.#syncRequest('SUBSCRIBE'));
    this.#startTimer('heartbeat', this.#opts.heartbeatMs, () => this.#heartbeat());
    this.#scheduleRefresh();
  }

  // ------------------------------------------------------------ token renewal

  /** Ms until the current token's `exp`; Infinity when it names none. */
  #tokenLeftMs() {
    const exp = tokenClaims(this.#opts.token)?.exp;
    return Number.isFinite(exp) ? exp * 1000 - this.#clock.now() : Infinity;
  }

  /** A fresh token from `getToken`, or `null` (reported) when there is none. */
  async #fetchToken() {
    try {
      const token = await this.#opts.getToken();
      if (typeof token === 'string' && token !== '') return token;
      this.#emit('error', { code: 'TOKEN_REFRESH_FAILED', message: 'getToken gave no token' });
    } catch (err) {
      this.#emit('error', { code: 'TOKEN_REFRESH_FAILED', message: String(err?.message ?? err) });
    }
    return null;
  }

  /** Arms the REFRESH of the open socket's token, `refreshBeforeMs` before its `exp`. */
  #scheduleRefresh() {
    this.#stopTimer('refresh');
    const left = this.#tokenLeftMs();
    if (!this.#opts.getToken || left === Infinity) return;
    const wait = Math.max(left - this.#opts.refreshBeforeMs, left / 2, 0);
    this.#startTimer('refresh', wait, () => this.#refresh());
  }

  /**
   * Offers a fresh token on the open socket. If that fails, nothing else is
   * tried here: the server closes the socket at `exp` (4003) and the
   * reconnect asks `getToken` again.
   */
  async #refresh() {
    const socket = this.#socket;
    const token = await this.#fetchToken();
    if (token === null || socket === null || socket !== this.#socket) return;
    this.#offeredToken = token;
    if (!this.#send({ type: 'REFRESH', token })) this.#offeredToken = null;
  }

  #onRefreshed(msg) {
    if (this.#offeredToken !== null) this.#opts.token = this.#offeredToken;
    this.#offeredToken = null;
    this.#scheduleRefresh();
    this.#emit('refreshed', { expiresAt: msg.expiresAt });
  }

  #heartbeat() {
    if (this.#clock.now() - this.#lastHeard > this.#opts.silenceMs) {
      // The server heartbeats every 15 s: this socket is dead even if the
      // browser has not noticed yet.
      this.#dropSocket();
      return;
    }
    this.#send({ type: 'HEARTBEAT' });
    // Presence also says "still here": the server forgets a user silent for 30 s.
    this.setPresence({});
    this.#startTimer('heartbeat', this.#opts.heartbeatMs, () => this.#heartbeat());
  }

  /**
   * Something was heard from the server: the connection is alive. While
   * online, silence is probed after `probeAfterMs`; a command still waiting
   * for its ACCEPTED keeps a deadline running.
   */
  #heard() {
    this.#stopTimer('answer');
    if (!this.#subscribed) return;
    if (this.#pending.some((p) => p.state === 'sent')) this.#expectAnswer();
    const { probeAfterMs } = this.#opts;
    if (probeAfterMs < Infinity) this.#startTimer('probe', probeAfterMs, () => this.#probe());
  }

  /** Asks a quiet server whether it is still there (it answers HEARTBEAT with HEARTBEAT). */
  #probe() {
    // Armed first: the SSE transport answers inside send().
    this.#expectAnswer();
    this.#send({ type: 'HEARTBEAT' });
  }

  /**
   * Something was sent that the server answers at once: unless anything at
   * all arrives within `probeTimeoutMs`, the path is dead though the socket
   * looks open (the browser only notices after minutes of TCP retries).
   */
  #expectAnswer() {
    const { probeTimeoutMs } = this.#opts;
    if (this.#timers.answer !== null || !(probeTimeoutMs < Infinity)) return;
    const socket = this.#socket;
    this.#startTimer('answer', probeTimeoutMs, () => socket === this.#socket && this.#dropSocket());
  }

  /** Gives up on the socket now, without waiting for a closing handshake. */
  #dropSocket() {
    const socket = this.#socket;
    if (!socket) return;
    this.#onClosed();
    socket.close();
  }

  #onClosed(code) {
    // Behind a proxy that breaks WebSockets they never get as far as a
    // SYNC: fall back.
    if (this.#opts.transport === 'auto' && this.#subscribed === false) {
      if (this.#httpReachable) this.#useSse();
      else if (++this.#unopened >= 2) this.#probeHttp();
    }
    this.#socket = null;
    this.#subscribed = false;
    this.#held = null;
    this.#saveWaiting();
    this.#stopTimer('heartbeat');
    this.#stopTimer('retry');
    this.#stopTimer('refresh');
    this.#stopTimer('probe');
    this.#stopTimer('answer');
    this.#stopTimer('open');
    this.#offeredToken = null;
    if (code === TOKEN_EXPIRED) {
      this.#needFreshToken = true;
      this.#emit('error', { code: 'TOKEN_EXPIRED', message: 'the server closed the socket: the token expired' });
    }
    for (const p of this.#pending) {
      if (p.state !== 'queued') p.resent = true;
      p.state = 'queued';
    }
    // Peers that leave while we are away send no PRESENCE_LEAVE we could hear.
    if (this.#peers.size > 0) {
      this.#peers.clear();
      this.#emit('presence', { peers: this.#peers });
    }
    if (this.#status !== 'closed') this.#scheduleReconnect();
  }

  /** Exponential backoff with jitter: half the delay fixed, half random. */
  #scheduleReconnect() {
    const { backoffBaseMs, backoffMaxMs } = this.#opts;
    const ceiling = Math.min(backoffMaxMs, backoffBaseMs * 2 ** this.#attempt);
    const delay = Math.round(ceiling / 2 + (this.#clock.random() * ceiling) / 2);
    this.#attempt += 1;
    this.#setStatus('offline', { retryInMs: delay });
    this.#startTimer('reconnect', delay, () => this.#open());
  }

  #setStatus(status, extra = {}) {
    if (this.#status === 'closed' && status !== 'closed' && status !== 'connecting') return;
    this.#status = status;
    this.#snapshot = null;
    this.#emit('status', { status, pending: this.#pending.length, ...extra });
  }

  #startTimer(name, ms, fn) {
    this.#stopTimer(name);
    this.#timers[name] = this.#clock.setTimeout(() => {
      this.#timers[name] = null;
      fn();
    }, ms);
  }

  #stopTimer(name) {
    if (this.#timers[name] !== null) this.#clock.clearTimeout(this.#timers[name]);
    this.#timers[name] = null;
  }

  /** Sends a message if the socket is open; reports whether it did. */
  #send(message) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1) return false;
    try {
      socket.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  #syncRequest(type) {
    const message = { type, graphId: this.graphId };
    if (this.#epoch !== null) {
      message.clientVersion = this.#version;
      message.epoch = this.#epoch;
    }
    return message;
  }

  /**
   * Asks the server where we stand: from our version after a gap, or for
   * the full state (`full`) when what it sent made no sense. At most once a
   * second, so a server that keeps sending nonsense does not get a storm.
   * @param {{full?: boolean}} [options]
   */
  #requestSync({ full = false } = {}) {
    this.#wantFullSync ||= full;
    if (this.#timers.sync !== null) return;
    const wait = this.#lastSyncRequest + 1000 - this.#clock.now();
    const send = () => {
      this.#lastSyncRequest = this.#clock.now();
      const request = this.#wantFullSync
        ? { type: 'REQUEST_SYNC', graphId: this.graphId }
        : this.#syncRequest('REQUEST_SYNC');
      this.#wantFullSync = false;
      this.#send(request);
    };
    if (wait <= 0) send();
    else this.#startTimer('sync', wait, send);
  }

  // ------------------------------------------------------------ editing

  /**
   * Queues a command, applies it to the view at once and sends it when
   * online. Returns its operation id.
   * @param {string} type  A command type (docs/protocol.md, Commands).
   * @param {Object} payload
   * @returns {string}
   */
  submit(type, payload) {
    const command = {
      operationId: randomId(),
      type,
      payload,
      baseVersion: this.#version,
      timestamp: this.#clock.now(),
    };
    // Tabs share one queue, ordered by `seq`: time, made unique.
    this.#seq = Math.max(this.#seq + 1, this.#clock.now());
    const entry = { command, seq: this.#seq, state: 'queued', resent: false, checks: 0 };
    this.#pending.push(entry);
    this.#persist(entry);
    this.#rebuild();
    if (this.#subscribed) this.#flush();
    return command.operationId;
  }

  /**
   * Adds a node; returns its id.
   * @param {{id?: string, type?: string, position: Point, data?: Object}} node
   * @returns {string}
   */
  createNode(node) {
    const id = node.id ?? `n-${randomId().slice(0, 8)}`;
    this.submit('CREATE_NODE', { node: { ...node, id } });
    return id;
  }

  /**
   * Changes a node: `patch` has `position`, `type` and/or `data` (merged by
   * key; a key set to `null` is removed). Returns the operation id.
   * @param {string} id
   * @param {{position?: Point, type?: string, data?: Object}} patch
   */
  updateNode(id, patch) {
    return this.submit('UPDATE_NODE', { id, patch });
  }

  /** Moves a node. @param {string} id @param {Point} position */
  moveNode(id, position) {
    return this.updateNode(id, { position: { x: position.x, y: position.y } });
  }

  /** Deletes a node and its edges. @param {string} id */
  deleteNode(id) {
    return this.submit('DELETE_NODE', { id });
  }

  /**
   * Connects two nodes; returns the edge id.
   * @param {{id?: string, source: string, target: string, type?: string, data?: Object}} edge
   * @returns {string}
   */
  createEdge(edge) {
    const id = edge.id ?? `e-${randomId().slice(0, 8)}`;
    this.submit('CREATE_EDGE', { edge: { ...edge, id } });
    return id;
  }

  /** @param {string} id @param {{type?: string, data?: Object}} patch */
  updateEdge(id, patch) {
    return this.submit('UPDATE_EDGE', { id, patch });
  }

  /** @param {string} id */
  deleteEdge(id) {
    return this.submit('DELETE_EDGE', { id });
  }

  /** @param {{x: number, y: number, zoom: number}} viewport */
  setViewport(viewport) {
    return this.submit('UPDATE_VIEWPORT', viewport);
  }

  /**
   * Several operations, all or nothing, one version.
   * @param {{type: string, payload: Object}[]} operations
   */
  batch(operations) {
    return this.submit('BATCH_UPDATE', { operations });
  }

  /** Undoes this user's last change in the graph (decided by the server). */
  undo() {
    return this.submit('UNDO', {});
  }

  /** Redoes this user's last undone change (decided by the server). */
  redo() {
    return this.submit('REDO', {});
  }

  /**
   * Shares this user's cursor (graph coordinates, `null` when outside),
   * selection, display `name` (1–64 characters, spaces allowed) and/or
   * `preview`: a gesture in progress, any object (`null` when none), which
   * others see live and which is never logged or versioned. Throttled to
   * one message per `presenceIntervalMs`; the latest value always goes out.
   * @param {{cursor?: ?Point, selection?: string[], name?: ?string, preview?: ?Object}} presence
   */
  setPresence(presence) {
    // Every PRESENCE carries every field: the server relays a missing one as null.
    for (const key of Object.keys(this.#presence.state)) {
      if (presence[key] !== undefined) this.#presence.state[key] = presence[key];
    }
    this.#presence.dirty = true;
    if (this.#timers.presence !== null) return;
    const wait = this.#presence.lastSent + this.#opts.presenceIntervalMs - this.#clock.now();
    if (wait <= 0) this.#flushPresence();
    else this.#startTimer('presence', wait, () => this.#flushPresence());
  }

  #flushPresence() {
    if (!this.#presence.dirty || !this.#subscribed) return;
    this.#presence.dirty = false;
    this.#presence.lastSent = this.#clock.now();
    this.#send({ type: 'PRESENCE', graphId: this.graphId, ...this.#presence.state });
  }

  /**
   * Sends the queued commands, oldest first, if this tab is the one that
   * sends. After a command was refused for now, one at a time: the next
   * goes when every one before it is accepted.
   */
  #flush() {
    if (!this.#leader || !this.#subscribed) return;
    if (this.#ordered && this.#pending.every((p) => p.state === 'accepted')) this.#ordered = false;
    // Refused for now: nothing goes out until the wait the server asked for is over.
    if (this.#ordered && this.#timers.retry !== null) return;
    const held = this.#held;
    if (held && !held.sent && !this.#pending.some((p) => p.command.operationId === held.command.operationId)) {
      // Settled meanwhile (an earlier connection had queued it): the server
      // still holds back what follows until it comes again, and applies it
      // at most once.
      if (this.#send({ type: 'COMMAND', graphId: this.graphId, command: held.command })) held.sent = true;
    }
    for (const entry of this.#pending) {
      if (this.#ordered && entry.state !== 'accepted') {
        if (entry.state === 'queued') this.#sendCommand(entry);
        return;
      }
      if (entry.state === 'queued') this.#sendCommand(entry);
    }
  }

  #sendCommand(entry) {
    this.#expectAnswer();
    if (this.#send({ type: 'COMMAND', graphId: this.graphId, command: entry.command })) {
      entry.state = 'sent';
      if (this.#held?.command.operationId === entry.command.operationId) this.#held.sent = true;
    }
  }

  /**
   * Drops a pending command that has an outcome (here and on the device);
   * returns it, or `null` if it was not pending.
   */
  #take(operationId) {
    const i = this.#pending.findIndex((p) => p.command.operationId === operationId);
    if (i < 0) return null;
    this.#device?.removePending(operationId).catch((err) => this.#deviceFailed(err));
    return this.#pending.splice(i, 1)[0];
  }

  /**
   * Drops a settled command and tells the other tabs: with the error if it
   * was rolled back, with its version if it was applied (a tab whose
   * socket missed the COMMAND_APPLIED, having subscribed after it, would
   * otherwise keep it pending).
   * @param {string} operationId
   * @param {{error?: ?Object, version?: number}} [outcome]
   */
  #settle(operationId, { error = null, version } = {}) {
    const entry = this.#take(operationId);
    if (entry) this.#device?.post({ type: 'settled', operationId, error, version });
    return entry;
  }

  /**
   * The view: the confirmed graph with every pending command applied in
   * order. UNDO and REDO are predicted from this user's history when the
   * change they revert is known (made or seen by this client).
   */
  #rebuild() {
    // Commands another tab saw applied, now part of the confirmed graph here.
    this.#pending = this.#pending.filter((p) => !(p.appliedAt <= this.#version));
    const view = copyGraph(this.#confirmed);
    const ids = new Set();
    const history = this.#pending.some((p) => p.command.type === 'UNDO' || p.command.type === 'REDO')
      ? copyHistory(this.#history)
      : null;
    for (const { command } of this.#pending) {
      for (const id of touchedIds(command)) ids.add(id);
      if (history === null) {
        applyCommand(view, command);
        continue;
      }
      const before = copyGraph(view);
      if (command.type === 'UNDO' || command.type === 'REDO') {
        const stack = command.type === 'UNDO' ? history.undo : history.redo;
        const top = stack.items.length > 0 ? stack.items.at(-1) : undefined;
        // Nothing to revert (the server will say so), or a change this client does not know.
        if (top === undefined && stack.known) continue;
        if (top) revertEntry(view, top);
        const change = top ? entryOfDiff(before, view) : null;
        for (const side of change ? [change.after] : []) for (const id of [...side.nodes.keys(), ...side.edges.keys()]) ids.add(id);
        recordHistory(history, command.type, change);
      } else {
        applyCommand(view, command);
        recordHistory(history, command.type, entryOfDiff(before, view));
      }
    }
    this.#view = view;
    this.#pendingIds = ids;
    this.#snapshot = null;
    this.#emit('change', { view });
  }

  // ------------------------------------------------------------ receiving

  #onFrame(text) {
    this.#lastHeard = this.#clock.now();
    this.#receive(text);
    // After the message is handled: an ACCEPTED has settled what it answers.
    this.#heard();
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.#emit('error', { code: 'BAD_FRAME', message: 'the server sent a frame that is not JSON' });
      return;
    }
    if (!isObject(msg) || typeof msg.type !== 'string') return;
    if ('graphId' in msg && msg.graphId !== this.graphId) return;
    try {
      this.#dispatch(msg);
    } catch (err) {
      // Whatever the server sent, the client stays usable: report it and
      // ask for the truth again.
      this.#emit('error', { code: 'BAD_MESSAGE', message: `${msg.type}: ${err?.message ?? err}` });
      this.#requestSync({ full: true });
    }
  }

  #dispatch(msg) {
    switch (msg.type) {
      case 'SYNC': return this.#onSync(msg);
      case 'COMMAND_APPLIED': return this.#onApplied(msg);
      case 'ACCEPTED': return this.#onAccepted(msg);
      case 'REVERT': return this.#onRevert(msg);
      case 'CONFLICT': return this.#onConflict(msg);
      case 'ERROR': return this.#onError(msg);
      case 'PRESENCE': return this.#onPresence(msg);
      case 'PRESENCE_LEAVE':
        if (this.#peers.delete(msg.userId)) this.#emit('presence', { peers: this.#peers });
        return;
      case 'REFRESHED': return this.#onRefreshed(msg);
      case 'UNSUBSCRIBED': return this.#onUnsubscribed(msg);
      default:
        // HEARTBEAT, and types a newer server may add.
    }
  }

  #onSync(msg) {
    if (!isVersion(msg.version) || typeof msg.epoch !== 'string') {
      throw new Error('SYNC without a valid epoch and version');
    }
    if (msg.status === 'reset') {
      if (!isObject(msg.state)) throw new Error('SYNC reset without state');
      this.#confirmed = graphFromState(msg.state);
      this.#epoch = msg.epoch;
      this.#version = msg.version;
      // The log that would tell what this user's undo stack holds is gone.
      this.#history = unknownHistory();
    } else if (msg.status === 'behind' || msg.status === 'in_sync') {
      if (msg.epoch !== this.#epoch) throw new Error(`SYNC ${msg.status} for another epoch`);
      for (const entry of arrayOf(msg.changes)) {
        if (isObject(entry)) this.#applyEntry(entry);
      }
      if (this.#version !== msg.version) throw new Error(`SYNC ${msg.status} did not reach version ${msg.version}`);
    } else {
      throw new Error(`SYNC with unknown status ${msg.status}`);
    }
    this.#emit('sync', { status: msg.status, epoch: this.#epoch, version: this.#version });
    this.#rebuild();
    this.#saveSoon();
    if (!this.#subscribed) {
      this.#subscribed = true;
      this.#httpReachable = false;
      this.#attempt = 0;
      this.#setStatus('online');
      this.#flush();
      // Announce ourselves, idle or not: others list who is here.
      this.#presence.dirty = true;
      this.#flushPresence();
    }
  }

  #onApplied(msg) {
    if (!isVersion(msg.version)) throw new Error('COMMAND_APPLIED without a version');
    if (msg.version <= this.#version) return; // already have it
    if (msg.version > this.#version + 1) {
      // The server promises no gaps; if one shows anyway, catch up properly.
      this.#requestSync();
      return;
    }
    this.#applyEntry({ ...msg, type: msg.command?.type ?? null });
    this.#rebuild();
    this.#saveSoon();
    if (this.#ordered) this.#flush();
  }

  /** One change-log entry, the next version after the confirmed one. */
  #applyEntry(entry) {
    if (!isVersion(entry.version) || entry.version <= this.#version) return;
    if (entry.version !== this.#version + 1) throw new Error(`change ${entry.version} after ${this.#version}`);
    applyChange(this.#confirmed, entry.change);
    this.#version = entry.version;
    const mine = this.#settle(entry.operationId, { version: entry.version });
    const own = mine !== null;
    if (entry.userId === this.userId && this.userId !== null) {
      const type = typeof entry.type === 'string' ? entry.type : mine?.command.type;
      if (type) recordHistory(this.#history, type, entryOfChange(entry.change));
      else this.#history = unknownHistory();
    }
    this.#emit('applied', {
      operationId: entry.operationId, userId: entry.userId, version: entry.version, type: entry.type, own,
    });
  }

  #onAccepted(msg) {
    if (this.#held?.command.operationId === msg.operationId) this.#held = null;
    const entry = this.#pending.find((p) => p.command.operationId === msg.operationId);
    if (!entry) return;
    entry.state = 'accepted';
    if (this.#ordered) this.#flush();
    if (msg.duplicate === true) {
      // The server knew this operation id. If it was decided while we were
      // away, it says so: "completed" with its version here, or a REVERT
      // right after this message; otherwise the outcome is still to come.
      if (msg.status === 'completed' && isVersion(msg.version)) this.#settledWhileAway(entry, msg.version);
      return;
    }
    // A resent command that the server answers like a new one, without
    // saying whether it knew it (older servers): ask later.
    if (entry.resent) this.#checkLater(entry);
  }

  /** An own command applied at `version` while this client was away. */
  #settledWhileAway(entry, version) {
    // Above the confirmed version, its COMMAND_APPLIED is still on its way.
    if (version > this.#version) return;
    const id = entry.command.operationId;
    this.#settle(id, { version });
    // Its change came in a reset, which says nothing of this user's history.
    this.#history = unknownHistory();
    this.#rebuild();
    this.#emit('applied', { operationId: id, userId: this.userId, version, type: entry.command.type, own: true });
  }

  #onRevert(msg) {
    const error = isObject(msg.error) ? msg.error : { code: 'UNKNOWN', message: 'rejected' };
    this.#rollback(msg.operationId, error, msg.current);
  }

  #rollback(operationId, error, current) {
    const entry = this.#settle(operationId, { error });
    if (!entry) return;
    this.#revertedHistory(entry, error);
    this.#rebuild();
    if (this.#ordered) this.#flush();
    this.#emit('revert', { operationId, command: entry.command, error, current });
  }

  /**
   * An UNDO or REDO reverted with CONFLICT still popped its change
   * (docs/graph.md, Undo and redo).
   */
  #revertedHistory(entry, error) {
    const { type } = entry.command;
    if ((type === 'UNDO' || type === 'REDO') && error?.code === 'CONFLICT') {
      (type === 'UNDO' ? this.#history.undo : this.#history.redo).items.pop();
    }
  }

  #onConflict(msg) {
    const entry = this.#pending.find((p) => p.command.operationId === msg.operationId);
    this.#emit('conflict', {
      operationId: msg.operationId,
      command: entry?.command ?? null,
      field: msg.field,
      clientValue: msg.clientValue,
      serverValue: msg.serverValue,
      strategy: msg.strategy,
    });
  }

  /**
   * The server ended the subscription (a renewed token no longer grants the
   * graph): edits wait, unsent, until the app reconnects with a token that
   * does (close() and connect() again, with `getToken` giving one).
   */
  #onUnsubscribed(msg) {
    this.#subscribed = false;
    this.#needFreshToken = true;
    this.#emit('error', { code: msg.code, message: msg.message });
  }

  #onError(msg) {
    const { code, message, operationId } = msg;
    if (code === 'AUTH_REFRESH_REFUSED') this.#offeredToken = null;
    const entry = operationId && this.#pending.find((p) => p.command.operationId === operationId);
    const held = operationId && this.#held?.command.operationId === operationId ? this.#held : null;
    if (RETRYABLE.has(code) && (entry || held)) {
      // Sent again later, and nothing made after it goes out before it is accepted.
      if (entry) entry.state = 'queued';
      // The first refusal holds back the commands behind it on this socket;
      // theirs, arriving after, change nothing.
      if (this.#held === null || held) this.#held = { command: entry ? entry.command : held.command, sent: false };
      this.#ordered = true;
      const wait = Number.isFinite(msg.retryAfterMs) ? Math.max(msg.retryAfterMs, 50) : 1000;
      this.#startTimer('retry', wait, () => this.#flush());
      return;
    }
    if (held) this.#held = null;
    if (!entry) {
      this.#emit('error', { code, message });
      // The server could not read the graph for a SYNC: ask again shortly.
      if (code === 'UNAVAILABLE') this.#startTimer('sync', 1000, () => this.#requestSync());
      return;
    }
    // Refused before queueing (invalid, forbidden): it will never apply.
    this.#rollback(operationId, { code, message, field: msg.field });
  }

  #onPresence(msg) {
    if (typeof msg.userId !== 'string' || msg.userId === this.userId) return;
    const known = this.#peers.has(msg.userId);
    this.#peers.set(msg.userId, {
      userId: msg.userId,
      cursor: isPoint(msg.cursor) ? { x: msg.cursor.x, y: msg.cursor.y } : null,
      selection: arrayOf(msg.selection).filter((id) => typeof id === 'string' && ENTITY_ID.test(id)),
      name: typeof msg.name === 'string' ? msg.name : null,
      preview: isObject(msg.preview) ? msg.preview : null,
    });
    // A newcomer has not heard of us: say who we are (once per arrival).
    if (!known) {
      this.#presence.dirty = true;
      this.setPresence({});
    }
    this.#emit('presence', { peers: this.#peers });
  }

  // ------------------------------------------------------------ outcomes of resent commands

  #checkLater(entry) {
    const delay = this.#opts.outcomeCheckMs * 2 ** Math.min(entry.checks, 4);
    this.#clock.setTimeout(() => this.#checkOutcome(entry), delay);
  }

  /**
   * Asks the HTTP API what became of a resent command that no message has
   * settled: a REVERT sent while this client was offline is not sent again.
   */
  async #checkOutcome(entry) {
    if (!this.#pending.includes(entry) || this.#status === 'closed' || !this.#opts.fetch) return;
    entry.checks += 1;
    const id = entry.command.operationId;
    let status = null;
    try {
      const res = await this.#opts.fetch(`${this.#opts.httpUrl}/api/v2/operations/${encodeURIComponent(id)}`, {
        headers: { Authorization: `Bearer ${this.#opts.token}` },
      });
      if (res.ok) status = await res.json();
    } catch {
      // Offline again: the next reconnect resends and checks again.
    }
    if (!this.#pending.includes(entry)) return;
    if (status?.status === 'failed') {
      const error = isObject(status.error) ? status.error : { code: 'UNKNOWN', message: 'rejected' };
      this.#rollback(id, error);
    } else if (status?.status === 'completed' && isVersion(status.version) && status.version <= this.#version) {
      // Applied, and already part of the confirmed state (it came in a reset).
      this.#settledWhileAway(entry, status.version);
    } else if (entry.checks < 8 && this.#subscribed) {
      this.#checkLater(entry);
    }
  }
}
