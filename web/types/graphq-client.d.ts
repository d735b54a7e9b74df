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
export type Point = {
    x: number;
    y: number;
};
export type Node = {
    id: string;
    type?: string | null;
    position: Point;
    data: Record<string, any>;
    version?: number;
    createdBy?: string;
    updatedBy?: string;
    updatedAt?: number;
};
export type Edge = {
    id: string;
    source: string;
    target: string;
    type?: string | null;
    data: Record<string, any>;
    version?: number;
};
export type Graph = {
    nodes: Map<string, Node>;
    edges: Map<string, Edge>;
    viewport: any | null;
};
export type Command = {
    operationId: string;
    type: string;
    payload: any;
    baseVersion: number;
    timestamp: number;
};
export type StorageInfo = {
    kind: 'indexeddb' | 'memory';
    reason: string | null;
};
export type Snapshot = {
    view: Graph;
    status: Status;
    pending: Command[];
    version: number;
    epoch: string | null;
    storage: StorageInfo | null;
};
export type Status = 'idle' | 'connecting' | 'syncing' | 'online' | 'offline' | 'closed';
/** @returns {Graph} an empty graph. */
export declare function emptyGraph(): Graph;
/**
 * A copy that can be changed without touching `graph` (entities are shared:
 * they are replaced, never mutated).
 * @param {Graph} graph
 * @returns {Graph}
 */
export declare function copyGraph(graph: Graph): Graph;
/**
 * The graph of a `state` object (HTTP `GET …/state`, `SYNC reset`). Entries
 * that are not entities are left out rather than trusted.
 * @param {*} state
 * @returns {Graph}
 */
export declare function graphFromState(state: any): Graph;
/**
 * Applies a server `change` (COMMAND_APPLIED, SYNC `changes`) to `graph` in
 * place: full new values of upserted entities, ids of removed ones.
 * @param {Graph} graph
 * @param {*} change
 */
export declare function applyChange(graph: Graph, change: any): void;
/**
 * Predicts the effect of a command on `graph`, in place, the way the server
 * would apply it when nothing conflicts. A command the server would reject
 * (an edge to a missing node, an update of a missing node) changes nothing.
 * UNDO and REDO are not handled here: they need the user's history, which
 * the client predicts from the changes it saw (docs/client.md, Undo and redo).
 * @param {Graph} graph
 * @param {{type: string, payload: *}} command
 */
export declare function applyCommand(graph: Graph, command: {
    type: string;
    payload: any;
}): void;
/**
 * Ids of the nodes and edges a command means to change (for "pending"
 * markers in a UI).
 * @param {{type: string, payload: *}} command
 * @returns {string[]}
 */
export declare function touchedIds(command: {
    type: string;
    payload: any;
}): string[];
export type Side = {
    nodes: Map<string, Node | null>;
    edges: Map<string, Edge | null>;
    viewport?: {
        value: any | null;
    };
};
export type HistoryEntry = {
    before: Side;
    after: Side;
};
export type Stack = {
    items: (HistoryEntry | null)[];
    known: boolean;
};
export type History = {
    undo: Stack;
    redo: Stack;
};
/**
 * A random id: a UUID where `crypto.randomUUID` exists (secure contexts),
 * else 122 random bits in the same layout.
 * @returns {string}
 */
export declare function randomId(): string;
/**
 * The claims of a JWT, read without checking the signature (the server
 * does that); `null` when `token` is not one.
 * @param {string} token
 * @returns {?{sub?: string, exp?: number, role?: string, graphs?: *}}
 */
export declare function tokenClaims(token: string): {
    sub?: string;
    exp?: number;
    role?: string;
    graphs?: any;
} | null;
export type ClientOptions = {
    /**
     * An access token (docs/protocol.md, Auth).
     */
    token: string;
    /**
     * The graph to edit.
     */
    graphId: string;
    /**
     * The WebSocket endpoint; default `/ws` on the page's host.
     */
    url?: string;
    /**
     * Base of the HTTP API; default derived from `url`.
     */
    httpUrl?: string;
    /**
     * Default `globalThis.WebSocket`.
     */
    WebSocket?: typeof WebSocket;
    /**
     * `sse`: events over
     * Server-Sent Events, commands over HTTP (graphq-sse.js). `auto` (the
     * default in browsers, unless `WebSocket` is given): WebSocket, and SSE
     * for good once two WebSockets in a row closed before their SYNC, plain
     * HTTP then reached the gateway and one more WebSocket failed (a proxy
     * that breaks WebSockets; with the network down, WebSocket stays).
     */
    transport?: 'websocket' | 'sse' | 'auto';
    /**
     * Default `globalThis.EventSource`.
     */
    EventSource?: typeof EventSource;
    /**
     * Default `globalThis.fetch`; used to ask
     * the fate of resent commands.
     */
    fetch?: typeof fetch;
    /**
     * At most one PRESENCE per interval
     * (the latest one is sent at its end). The gateway drops anything closer than 50 ms.
     */
    presenceIntervalMs?: number;
    /**
     * HEARTBEAT period while connected.
     */
    heartbeatMs?: number;
    /**
     * A socket silent this long is presumed dead.
     */
    silenceMs?: number;
    /**
     * While online, after this long without
     * a word from the server the client sends HEARTBEAT to ask if it is still there.
     */
    probeAfterMs?: number;
    /**
     * After that HEARTBEAT, or a command
     * sent, nothing at all heard from the server for this long means the
     * connection is dead (a path that went silent without closing): it is
     * dropped and replaced. `Infinity` turns this deadline off (and
     * `probeAfterMs: Infinity` the HEARTBEATs).
     */
    probeTimeoutMs?: number;
    /**
     * A socket that has not opened
     * after this long is given up and another one tried.
     */
    openTimeoutMs?: number;
    /**
     * First reconnect delay (before jitter).
     */
    backoffBaseMs?: number;
    /**
     * Longest reconnect delay.
     */
    backoffMaxMs?: number;
    /**
     * After a resent command is accepted
     * again, how long to wait for its outcome before asking `GET /api/v2/operations/{id}`.
     */
    outcomeCheckMs?: number;
    /**
     * Returns a fresh token for the
     * same user. With it the client renews the token on the open socket
     * (REFRESH) before the current one's `exp`, and fetches a new one before
     * reconnecting when the server closed the socket because the token expired
     * (4003) or the token it holds has expired. Without it a socket lives as
     * long as its token.
     */
    getToken?: () => Promise<string>;
    /**
     * How long before `exp` to send
     * REFRESH; at most half of the time the token has left.
     */
    refreshBeforeMs?: number;
    /**
     * Where the confirmed graph and the pending commands are kept between
     * sessions: `'auto'`, IndexedDB where the runtime has it (else memory,
     * and `storage` says why); `false`, memory only; or a store of your own
     * (device-store.js).
     */
    device?: 'auto' | false | import('./device-store.js').DeviceStore | Promise<import('./device-store.js').DeviceStore>;
    /**
     * The confirmed graph is written to
     * the device at most this often, and at once when the connection drops
     * (pending commands are written at once).
     */
    snapshotDelayMs?: number;
    /**
     * Time and randomness, replaceable for tests.
     */
    clock?: {
        setTimeout: Function;
        clearTimeout: Function;
        now: () => number;
        random: () => number;
    };
};
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
export declare class GraphqClient {
    #private;
    /** The user the token names (its `sub`), or `null`. @type {?string} */
    userId: string | null;
    /** @type {string} */
    graphId: string;
    /** @param {ClientOptions} options */
    constructor(options: ClientOptions);
    /**
     * Where this client keeps its state: `{kind: 'indexeddb'}`, or
     * `{kind: 'memory', reason}` when nothing outlives the page; `null` while
     * the device store opens.
     * @returns {?StorageInfo}
     */
    get storage(): StorageInfo | null;
    /**
     * Settles once the device state has loaded and been shown (the first paint).
     * @returns {Promise<void>}
     */
    get ready(): Promise<void>;
    /**
     * Signs out of this device: closes the client and deletes what it kept
     * for this graph and user, in every tab. The client cannot connect again.
     * @returns {Promise<void>}
     */
    forget(): Promise<void>;
    /**
     * Calls `callback` whenever `getSnapshot()` would return something new;
     * returns a function that stops it. With React:
     * `useSyncExternalStore(client.subscribe, client.getSnapshot)`.
     * @param {() => void} callback
     * @returns {() => void}
     */
    subscribe: (callback: () => void) => () => void;
    /**
     * The client's state in one object, the same object until something in it
     * changes (as `useSyncExternalStore` needs).
     * @returns {Snapshot}
     */
    getSnapshot: () => Snapshot;
    /** What to show: confirmed state plus pending edits. @returns {Graph} */
    get view(): Graph;
    /** The graph as the server confirmed it. @returns {Graph} */
    get confirmed(): Graph;
    /** Graph version of the confirmed state. @returns {number} */
    get version(): number;
    /** Epoch of the confirmed state; `null` before the first SYNC. @returns {?string} */
    get epoch(): string | null;
    /** @returns {Status} */
    get status(): Status;
    /** What carries the messages now: `websocket` or `sse`. @returns {string} */
    get transport(): string;
    /** This client's commands still waiting for an outcome, oldest first. @returns {Command[]} */
    get pending(): Command[];
    /**
     * Other users in the graph: user id → `{userId, cursor, selection, name, preview}`.
     * @returns {Map<string, {userId: string, cursor: ?Point, selection: string[], name: ?string, preview: ?Object}>}
     */
    get peers(): Map<string, {
        userId: string;
        cursor: Point | null;
        selection: string[];
        name: string | null;
        preview: any | null;
    }>;
    /**
     * Whether a pending command touches this node or edge.
     * @param {string} id
     * @returns {boolean}
     */
    isPending(id: string): boolean;
    /**
     * Calls `listener(detail)` for every event of `type`.
     * @param {'change'|'status'|'sync'|'applied'|'revert'|'conflict'|'presence'|'error'|'refreshed'|'storage'} type
     * @param {(detail: Object) => void} listener
     * @returns {() => void} a function that removes the listener
     */
    on(type: 'change' | 'status' | 'sync' | 'applied' | 'revert' | 'conflict' | 'presence' | 'error' | 'refreshed' | 'storage', listener: (detail: any) => void): () => void;
    /**
     * Opens the socket (and keeps it open, reconnecting, until close()),
     * once the device state has loaded: the subscription starts from it.
     */
    connect(): void;
    /** Closes the socket and stops reconnecting. Pending commands are kept. */
    close(): void;
    /**
     * Queues a command, applies it to the view at once and sends it when
     * online. Returns its operation id.
     * @param {string} type  A command type (docs/protocol.md, Commands).
     * @param {Object} payload
     * @returns {string}
     */
    submit(type: string, payload: any): string;
    /**
     * Adds a node; returns its id.
     * @param {{id?: string, type?: string, position: Point, data?: Object}} node
     * @returns {string}
     */
    createNode(node: {
        id?: string;
        type?: string;
        position: Point;
        data?: any;
    }): string;
    /**
     * Changes a node: `patch` has `position`, `type` and/or `data` (merged by
     * key; a key set to `null` is removed). Returns the operation id.
     * @param {string} id
     * @param {{position?: Point, type?: string, data?: Object}} patch
     */
    updateNode(id: string, patch: {
        position?: Point;
        type?: string;
        data?: any;
    }): string;
    /** Moves a node. @param {string} id @param {Point} position */
    moveNode(id: string, position: Point): string;
    /** Deletes a node and its edges. @param {string} id */
    deleteNode(id: string): string;
    /**
     * Connects two nodes; returns the edge id.
     * @param {{id?: string, source: string, target: string, type?: string, data?: Object}} edge
     * @returns {string}
     */
    createEdge(edge: {
        id?: string;
        source: string;
        target: string;
        type?: string;
        data?: any;
    }): string;
    /** @param {string} id @param {{type?: string, data?: Object}} patch */
    updateEdge(id: string, patch: {
        type?: string;
        data?: any;
    }): string;
    /** @param {string} id */
    deleteEdge(id: string): string;
    /** @param {{x: number, y: number, zoom: number}} viewport */
    setViewport(viewport: {
        x: number;
        y: number;
        zoom: number;
    }): string;
    /**
     * Several operations, all or nothing, one version.
     * @param {{type: string, payload: Object}[]} operations
     */
    batch(operations: {
        type: string;
        payload: any;
    }[]): string;
    /** Undoes this user's last change in the graph (decided by the server). */
    undo(): string;
    /** Redoes this user's last undone change (decided by the server). */
    redo(): string;
    /**
     * Shares this user's cursor (graph coordinates, `null` when outside),
     * selection, display `name` (1–64 characters, spaces allowed) and/or
     * `preview`: a gesture in progress, any object (`null` when none), which
     * others see live and which is never logged or versioned. Throttled to
     * one message per `presenceIntervalMs`; the latest value always goes out.
     * @param {{cursor?: ?Point, selection?: string[], name?: ?string, preview?: ?Object}} presence
     */
    setPresence(presence: {
        cursor?: Point | null;
        selection?: string[];
        name?: string | null;
        preview?: any | null;
    }): void;
}
