/**
 * The Server-Sent Events transport of the graphq client (docs/client.md,
 * Transports): what the server says arrives on the graph's event stream
 * (`EventSource`), what the client says goes out as HTTP requests (`fetch`).
 *
 * It has the shape of the WebSocket the client otherwise uses (`readyState`,
 * `send`, `close`, `onopen`, `onmessage`, `onclose`), so the client's
 * optimistic store, resends and reconnects work unchanged over it:
 *
 * - `SUBSCRIBE` / `REQUEST_SYNC` open the stream
 *   `GET /api/v2/graphs/{g}/events?clientVersion=&epoch=&presence=1`,
 *   whose first event is the SYNC;
 * - `COMMAND` is `POST /api/v2/graphs/{g}/command`, one at a time so the
 *   server queues them in the order sent; 202 becomes ACCEPTED, an error
 *   answer an ERROR naming the operation (a lost request: `UNAVAILABLE`, so
 *   the client sends it again later). After a refusal for now
 *   (`RATE_LIMITED`, `UNAVAILABLE`) the later commands of that graph are
 *   refused the same way without being posted, until the refused one is
 *   sent again, as the gateway does on a WebSocket: none overtakes it;
 * - `HEARTBEAT` is answered by the stream itself being open;
 * - `REFRESH` takes the new token for the next requests and stream;
 * - `PRESENCE` is not sent: over SSE a client sees others' presence only.
 *
 * A stream that fails or ends (server gone, token expired, too slow) closes
 * this "socket"; the client then reconnects and resumes from its version.
 */
/**
 * A WebSocket-shaped class speaking SSE + HTTP to the gateway at `httpUrl`.
 * @param {{httpUrl: string, fetch: typeof globalThis.fetch, EventSource: typeof globalThis.EventSource}} options
 * @returns {typeof WebSocket} a constructor the client uses as its `WebSocket`
 */
export declare function sseTransport({ httpUrl, fetch, EventSource }: {
    httpUrl: string;
    fetch: typeof globalThis.fetch;
    EventSource: typeof globalThis.EventSource;
}): typeof WebSocket;
