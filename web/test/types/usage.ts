// How an application written in TypeScript uses the package: type-checked
// by test/types.test.mjs (tsc --noEmit) against the published declarations.
import { GraphqClient, type Graph, type Snapshot } from '@graphq/client';
import { memoryDeviceStore } from '@graphq/client/device-store';

// React's hook, as declared by React (no React dependency here).
declare function useSyncExternalStore<T>(subscribe: (onChange: () => void) => () => void, getSnapshot: () => T): T;

const client = new GraphqClient({ graphId: 'demo', token: 'TOKEN', url: 'ws://127.0.0.1:3000/ws', device: memoryDeviceStore('a test') });
const snapshot: Snapshot = useSyncExternalStore(client.subscribe, client.getSnapshot);
const view: Graph = snapshot.view;
const labels: string[] = [...view.nodes.values()].map((n) => String(n.data.label ?? n.id));
const waiting: number = snapshot.pending.length;
const kept: 'indexeddb' | 'memory' | undefined = snapshot.storage?.kind;

const id: string = client.createNode({ position: { x: 1, y: 2 }, data: { label: 'A' } });
client.moveNode(id, { x: 3, y: 4 });
client.on('revert', ({ error }) => console.log(error.code));
client.connect();
void client.forget().then(() => console.log(labels, waiting, kept));

// @ts-expect-error: a position needs both coordinates.
client.moveNode(id, { x: 3 });
