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

import { tokenClaims } from './graphq-client.js';

/** The event names a graph stream carries. */
const EVENTS = ['SYNC', 'COMMAND_APPLIED', 'REVERT', 'CONFLICT', 'PRESENCE', 'PRESENCE_LEAVE', 'ERROR'];

/** The close code the client takes for an expired token. */
const TOKEN_EXPIRED = 4003;

/** Refusals for now, which hold back the commands sent after them. */
const HOLDING = new Set(['RATE_LIMITED', 'UNAVAILABLE']);

/** A hold lifts by itself this long after its refusal (as on the gateway). */
const MAX_HOLD_MS = 30_000;

/**
 * A WebSocket-shaped class speaking SSE + HTTP to the gateway at `httpUrl`.
 * @param {{httpUrl: string, fetch: typeof globalThis.fetch, EventSource: typeof globalThis.EventSource}} options
 * @returns {typeof WebSocket} a constructor the client uses as its `WebSocket`
 */
export function sseTransport({ httpUrl, fetch, EventSource }) {
  const SseSocket = class SseSocket {
    /** @param {string} url  The WebSocket URL the client would open: only its `token` is read. */
    constructor(url) {
      this.readyState = 0;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      this.token = new URL(url).searchParams.get('token') ?? '';
      /** @type {?EventSource} */
      this.events = null;
      /** Commands go out one after another. */
      this.outbox = Promise.resolve();
      /**
       * By graph: the command last refused for now, until it is sent again.
       * @type {Map<string, {operationId: string, code: string, at: number, retryAt: ?number}>}
       */
      this.held = new Map();
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('the SSE transport is closed');
      const msg = JSON.parse(text);
      switch (msg.type) {
        case 'SUBSCRIBE':
        case 'REQUEST_SYNC':
          return this.#listen(msg);
        case 'COMMAND': {
          const done = this.outbox.then(() => this.#post(msg.graphId, msg.command));
          this.outbox = done;
          return undefined;
        }
        case 'HEARTBEAT':
          if (this.events?.readyState === 1) this.#deliver({ type: 'HEARTBEAT', serverTime: Date.now() });
          return undefined;
        case 'REFRESH': {
          this.token = msg.token;
          const exp = tokenClaims(msg.token)?.exp;
          if (Number.isFinite(exp)) this.#deliver({ type: 'REFRESHED', expiresAt: exp * 1000 });
          return undefined;
        }
        default:
          return undefined;
      }
    }

    close(code = 1000) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.events?.close();
      this.events = null;
      setTimeout(() => this.onclose?.({ code }), 0);
    }

    #deliver(message) {
      if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
    }

    /** (Re)opens the graph's stream at the position the message gives. */
    #listen({ graphId, clientVersion, epoch }) {
      this.events?.close();
      const query = new URLSearchParams({ token: this.token, presence: '1' });
      if (clientVersion !== undefined) query.set('clientVersion', String(clientVersion));
      if (epoch !== undefined) query.set('epoch', epoch);
      const events = new EventSource(`${httpUrl}/api/v2/graphs/${encodeURIComponent(graphId)}/events?${query}`);
      this.events = events;
      for (const name of EVENTS) {
        events.addEventListener(name, (event) => events === this.events && this.readyState === 1
          && this.onmessage?.({ data: event.data }));
      }
      // EventSource would reconnect by itself; the client does instead,
      // from the version it holds (and with a fresh token if it needs one).
      events.onerror = () => {
        if (events !== this.events) return;
        const exp = tokenClaims(this.token)?.exp;
        this.close(Number.isFinite(exp) && exp * 1000 <= Date.now() ? TOKEN_EXPIRED : 1006);
      };
    }

    async #post(graphId, command) {
      const operationId = command?.operationId;
      const held = this.held.get(graphId);
      if (held && held.operationId !== operationId && Date.now() - held.at < MAX_HOLD_MS) {
        this.#deliver({
          type: 'ERROR',
          code: held.code,
          message: `held behind ${held.operationId}, refused for now; send that one again first`,
          retryAfterMs: held.retryAt === null ? undefined : Math.max(1, held.retryAt - Date.now()),
          operationId,
        });
        return;
      }
      this.held.delete(graphId);
      let res;
      let body = null;
      try {
        res = await fetch(`${httpUrl}/api/v2/graphs/${encodeURIComponent(graphId)}/command`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify(command),
        });
        body = await res.json().catch(() => null);
      } catch {
        this.#hold(graphId, operationId, 'UNAVAILABLE', undefined);
        this.#deliver({ type: 'ERROR', code: 'UNAVAILABLE', message: 'the command could not be sent', operationId });
        return;
      }
      if (res.ok) {
        this.#deliver({ type: 'ACCEPTED', graphId, operationId });
        return;
      }
      const error = body?.error ?? {};
      const code = error.code ?? (res.status >= 500 ? 'UNAVAILABLE' : `HTTP_${res.status}`);
      const retryAfterMs = error.retryAfterMs ?? body?.retryAfterMs;
      this.#hold(graphId, operationId, code, retryAfterMs);
      this.#deliver({
        type: 'ERROR',
        code,
        message: error.message ?? `HTTP ${res.status}`,
        field: error.field,
        retryAfterMs,
        operationId,
      });
    }

    /** After a refusal for now, holds back the graph's later commands. */
    #hold(graphId, operationId, code, retryAfterMs) {
      if (!HOLDING.has(code) || typeof operationId !== 'string') return;
      const now = Date.now();
      const retryAt = Number.isFinite(retryAfterMs) ? now + retryAfterMs : null;
      this.held.set(graphId, { operationId, code, at: now, retryAt });
    }
  };
  return /** @type {typeof WebSocket} */ (/** @type {unknown} */ (SseSocket));
}
