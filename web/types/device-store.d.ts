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
export type Snapshot = {
    epoch: string;
    version: number;
    nodes: any[];
    edges: any[];
    viewport: any | null;
};
export type StoredCommand = {
    seq: number;
    command: import('./graphq-client.js').Command;
};
export type DeviceState = {
    snapshot: Snapshot | null;
    pending: StoredCommand[];
};
export type DeviceStore = {
    /**
     * Where the state lives.
     */
    kind: 'indexeddb' | 'memory';
    /**
     * Why it is `memory`, or `null`.
     */
    reason: string | null;
    /**
     * What a previous session left.
     */
    load: () => Promise<DeviceState>;
    /**
     * Replaces the confirmed graph,
     * unless the store holds a later version of the same epoch (a tab ahead of this one wrote it).
     * `blind`: without that check, in one request, for a page going away (it would run no callback of a read).
     */
    saveSnapshot: (snapshot: Snapshot, options?: {
        blind?: boolean;
    }) => Promise<void>;
    /**
     * Keeps one more pending command.
     */
    addPending: (entry: StoredCommand) => Promise<void>;
    /**
     * Drops a settled command.
     */
    removePending: (operationId: string) => Promise<void>;
    /**
     * Forgets everything kept for this graph and user.
     */
    clear: () => Promise<void>;
    /**
     * Tells the other tabs.
     */
    post: (message: any) => void;
    /**
     * Hears the other tabs.
     */
    onMessage: (listener: (message: any) => void) => void;
    /**
     * Calls `onLeader` once this tab is the one that sends.
     */
    elect: (onLeader: () => void) => void;
    /**
     * Releases the lock and the channel.
     */
    close: () => void;
};
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
export declare function openDeviceStore({ graphId, userId, indexedDB }: {
    graphId: string;
    userId: string | null;
    indexedDB?: IDBFactory | null;
}): Promise<DeviceStore>;
/**
 * A store that keeps nothing beyond this page. Its tab is on its own: it
 * sends its own commands and shares nothing with other tabs.
 * @param {string} reason  Why (shown to the user).
 * @returns {DeviceStore}
 */
export declare function memoryDeviceStore(reason: string): DeviceStore;
