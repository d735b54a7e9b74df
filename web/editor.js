// The demo editor: an SVG canvas over the graphq client. Everything shown
// comes from `client.view` (confirmed state plus pending edits); every edit
// goes through the client, which shows it at once and settles it with the
// server. Open two windows on the same ?graph= to see collaboration.
//
// A gesture is one change: while a node is dragged, its position travels as
// a preview in presence (others see it move; nothing is logged), and the
// drop sends one command. Only what is on screen is drawn, and only what
// changed is touched.
//
// URL parameters: `graph` (default `demo`), `token` (else, under
// `graphq dev`, the page asks for a name and mints a demo token, renewed
// before it expires), `name` (the name shown to others with a `token`),
// `device=off` (keep nothing on this device),
// `tokenTtl` (seconds a demo token lives; default 24 h, shorter to watch
// the renewal).

import { GraphqClient, randomId, tokenClaims } from './graphq-client.js';

const SVG = 'http://www.w3.org/2000/svg';
const NODE_HEIGHT = 40;
const TOAST_MS = 6000;
/** At most this many different messages show at once. */
const MAX_TOASTS = 3;
const MIN_ZOOM = 0.1;
const MAX_ZOOM = 4;
/** Screen pixels drawn beyond the visible edge, so a small pan adds nothing. */
const CULL_MARGIN = 120;
/** Below this zoom, labels and handles are not drawn (too small to read). */
const FAR_ZOOM = 0.45;
/** Far out with more nodes than this on screen, connections are not drawn. */
const CROWDED = 1500;
/** A preview names at most this many nodes (a PRESENCE frame is small). */
const PREVIEW_NODES = 60;
/** Keyboard moves, in graph units. */
const NUDGE = 10;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const graphId = params.get('graph') || 'demo';
const tokenTtl = Number(params.get('tokenTtl')) || undefined;
/** A token from the URL, which the page cannot renew. */
const givenToken = params.get('token');

async function start() {
  $('graph-name').textContent = graphId;
  $('login-graph').textContent = graphId;
  document.title = `${graphId} · graphq`;
  const login = givenToken ? { token: givenToken, name: params.get('name') } : await devToken();
  const claims = tokenClaims(login.token);
  if (claims?.exp && claims.exp * 1000 < Date.now()) {
    toast('Your token has expired', 'Open the page with a fresh ?token=…', 'error', 0);
  }
  // A demo token is renewed for the same name; a ?token= cannot be, and the
  // socket lives as long as it does.
  let current = login.token;
  const getToken = givenToken ? undefined : async () => (current = await mintDevToken(claims?.sub));
  // `&device=off`: keep nothing on this device (memory only).
  const device = params.get('device') === 'off' ? false : 'auto';
  // `&transport=sse` (or `websocket`): no automatic choice.
  const transport = ['sse', 'websocket'].includes(params.get('transport')) ? params.get('transport') : undefined;
  // `&snapshotDelay=MS`: how long a change of the confirmed graph may wait to be written to the device.
  const snapshotDelayMs = Number(params.get('snapshotDelay')) || undefined;
  const client = new GraphqClient({
    graphId, token: login.token, getToken, device, transport, ...(snapshotDelayMs ? { snapshotDelayMs } : {}),
  });
  showOpenConflicts(client, claims?.sub, () => current);
  const name = cleanName(login.name) ?? claims?.sub ?? null;
  const editor = new Editor(client, { readOnly: claims?.role === 'viewer', name });
  // For the browser console and the browser tests.
  window.graphqEditor = editor;
  client.connect();
  keepPageOffline();
}

/**
 * Lets a reload work without a network: a service worker keeps the page's
 * files (the graph and the unsent edits are on the device already).
 */
function keepPageOffline() {
  navigator.serviceWorker?.register('/sw.js').catch((err) => console.warn('graphq: no offline page:', err));
}

/** The last demo token of this tab, while it has more than a minute to live. */
function keptDevToken(name) {
  const token = sessionStorage.getItem('graphq.token');
  const claims = token && tokenClaims(token);
  return claims?.sub === name && claims.exp * 1000 > Date.now() + 60_000 ? token : null;
}

/** A display name: 1–64 characters, spaces allowed; `null` when none. */
function cleanName(name) {
  const n = String(name ?? '').replace(/\s+/g, ' ').trim().slice(0, 64);
  return n || null;
}

/** The user id for a display name: its letters and digits, else a random one. */
function userIdFor(name) {
  const id = name.normalize('NFKD').replace(/[^A-Za-z0-9_.:-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
  return id || `user-${randomId().slice(0, 6)}`;
}

/**
 * A demo token from `graphq dev` for a name the user picks (remembered for
 * this tab only, so two windows can be two people).
 */
async function devToken() {
  const dialog = $('login');
  const input = dialog.querySelector('input');
  let name = sessionStorage.getItem('graphq.name');
  for (;;) {
    if (!name) {
      input.value = '';
      dialog.showModal();
      input.focus();
      await new Promise((resolve) => dialog.addEventListener('close', resolve, { once: true }));
      name = cleanName(input.value);
      if (!name) continue;
    }
    const user = sessionStorage.getItem('graphq.user') || userIdFor(name);
    // A reload reuses the tab's token: it paints sooner, and works offline.
    const kept = keptDevToken(user);
    if (kept) return { token: kept, name };
    const res = await requestDevToken(user);
    if (res.ok) {
      const { token } = await res.json();
      sessionStorage.setItem('graphq.user', user);
      sessionStorage.setItem('graphq.name', name);
      sessionStorage.setItem('graphq.token', token);
      return { token, name };
    }
    if (res.status === 404) {
      throw new Error('This server does not hand out demo tokens: open the page with ?token=… (graphq token --user NAME --graph GRAPH).');
    }
    const body = await res.json().catch(() => ({}));
    $('login-error').textContent = body?.error?.message ?? `The server said ${res.status}.`;
    sessionStorage.removeItem('graphq.user');
    sessionStorage.removeItem('graphq.name');
    name = null;
  }
}

function requestDevToken(user) {
  return fetch('/api/v2/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, ttlSeconds: tokenTtl }),
  });
}

/**
 * After each SYNC (a connect or a reconnect), the user's MANUAL conflicts
 * still open on this graph (docs/protocol.md, Conflicts), each shown once
 * until clicked away.
 */
function showOpenConflicts(client, user, token) {
  if (!user) return;
  const shown = new Set();
  client.on('sync', async () => {
    try {
      const query = new URLSearchParams({ status: 'open', user });
      const res = await fetch(`/api/v2/graphs/${encodeURIComponent(graphId)}/conflicts?${query}`, {
        headers: { Authorization: `Bearer ${token()}` },
      });
      if (!res.ok) return;
      for (const c of (await res.json()).conflicts) {
        if (shown.has(c.id)) continue;
        shown.add(c.id);
        const other = c.serverUserId ?? 'someone';
        toast(`Open conflict on ${c.field}`,
          `${other} set ${short(c.serverValue)}; you wanted ${short(c.clientValue)}. Set it again to settle it.`,
          'warn', 0);
      }
    } catch (err) {
      console.warn('graphq: open conflicts not read', err);
    }
  });
}

/** A fresh demo token for `user`, the client's `getToken`. */
async function mintDevToken(user) {
  const res = await requestDevToken(user);
  if (!res.ok) throw new Error(`the server said ${res.status} to a new demo token`);
  const { token } = await res.json();
  sessionStorage.setItem('graphq.token', token);
  return token;
}

/**
 * A stable colour per user, dark enough for white text (≥ 4.5:1): yellows
 * and greens are bright at any lightness, so they get less.
 */
function colorOf(userId) {
  let h = 0;
  for (const ch of String(userId)) h = (h * 31 + ch.codePointAt(0)) % 360;
  const light = h >= 30 && h <= 210 ? 24 : 36;
  return `hsl(${h} 70% ${light}%)`;
}

function labelOf(node) {
  const label = node?.data?.label;
  return typeof label === 'string' && label.trim() ? label : node?.id ?? '';
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Where a node is drawn; nonsense coordinates from anywhere become 0. */
function positionOf(node) {
  const p = node.position ?? {};
  return { x: Number.isFinite(p.x) ? p.x : 0, y: Number.isFinite(p.y) ? p.y : 0 };
}

/** Labels longer than this are cut on the canvas (the full one is in the tooltip). */
const LABEL_CHARS = 32;

function widthOf(label) {
  return Math.min(260, Math.max(96, shorten(label, LABEL_CHARS).length * 7.4 + 34));
}

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent?.appendChild(e);
  return e;
}

/** Shown toasts by what they say: a repeat bumps the count instead. */
const toasts = new Map();

/**
 * Shows a message below the canvas for a few seconds (`ms` 0: until
 * dismissed). The same message again adds "×N" to the one shown.
 * @param {string} title
 * @param {string} [text]
 * @param {'info'|'warn'|'error'} [kind]
 */
function toast(title, text = '', kind = 'info', ms = TOAST_MS) {
  const key = `${kind}\n${title}\n${text}`;
  let t = toasts.get(key);
  if (t) {
    t.count += 1;
    t.el.querySelector('.toast-count').textContent = `×${t.count}`;
  } else {
    const e = document.createElement('div');
    e.className = `toast ${kind}`;
    const strong = document.createElement('strong');
    strong.textContent = title;
    const body = document.createElement('span');
    body.className = 'toast-text';
    body.textContent = text;
    const count = document.createElement('span');
    count.className = 'toast-count';
    const close = document.createElement('button');
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    e.append(strong, body, count, close);
    t = { el: e, count: 1, timer: 0 };
    const remove = () => {
      clearTimeout(t.timer);
      e.remove();
      toasts.delete(key);
    };
    t.remove = remove;
    close.addEventListener('click', remove);
    toasts.set(key, t);
    $('toasts').append(e);
    while (toasts.size > MAX_TOASTS) toasts.values().next().value.remove();
  }
  clearTimeout(t.timer);
  if (ms) t.timer = setTimeout(t.remove, ms);
}

class Editor {
  constructor(client, { readOnly, name }) {
    this.client = client;
    this.readOnly = readOnly;
    this.name = name;
    this.svg = $('canvas');
    this.world = $('world');
    /** Selected node and edge ids (in the order picked). */
    this.selNodes = new Set();
    this.selEdges = new Set();
    /** Local only: each user looks at the graph their own way. Screen = graph × zoom + (x, y). */
    this.camera = { x: 0, y: 0, zoom: 1 };
    /** The user whose view this one follows, if any. */
    this.following = null;
    /** The pointer gesture in progress (drag, link, pan, marquee, pinch), if any. */
    this.gesture = null;
    this.pointers = new Map();
    /** Last known label of every node seen, to name deleted ones in messages. */
    this.labels = new Map();
    this.nodeEls = new Map();
    this.edgeEls = new Map();
    this.cursorEls = new Map();
    /** The id of the node under the pointer, if any. @type {string|undefined} */
    this.hovered = undefined;
    this.frame = 0;
    /** Conflicts and reverts of one command, told as one message. */
    this.outcomes = new Map();
    /** The operation that ends our current preview: the preview stays until it settles. */
    this.previewEndsWith = null;
    this.clipboard = null;
    this.minimapDirty = true;
    document.body.classList.toggle('read-only', readOnly);

    client.on('change', () => {
      this.minimapDirty = true;
      this.render();
    });
    client.on('presence', () => {
      this.followPeer();
      this.render();
    });
    client.on('status', () => this.renderStatus());
    client.on('revert', (r) => this.onOutcome(r.operationId, r.command, { revert: r }));
    client.on('conflict', (c) => this.onOutcome(c.operationId, c.command, { conflict: c }));
    client.on('applied', ({ operationId }) => this.settled(operationId));
    client.on('revert', ({ operationId }) => this.settled(operationId));
    client.on('error', (e) => {
      if (e.code === 'BAD_FRAME' || e.code === 'BAD_MESSAGE') console.warn('graphq:', e.message);
      else if (e.code === 'TOKEN_EXPIRED') {
        const next = givenToken ? 'Open the page with a fresh ?token=…' : 'Reconnecting with a new one…';
        toast('Your token expired', next, givenToken ? 'error' : 'warn', givenToken ? 0 : TOAST_MS);
      } else toast('The server refused a request', `${e.message ?? ''} (${e.code})`, 'error');
    });
    if (name) client.setPresence({ name });
    this.bindPointer();
    this.bindKeys();
    this.bindToolbar();
    this.bindMinimap();
    window.addEventListener('resize', () => this.render());
    // Only while there is something to lose: a page with a beforeunload
    // listener is not kept for back/forward, and may be reloaded differently.
    this.onLeave = (e) => {
      e.preventDefault();
      e.returnValue = '';
    };
    for (const type of ['change', 'status', 'storage']) client.on(type, () => this.guardLeaving());
    this.render();
  }

  /** The single selected entity (or the first picked), as `{kind, id}`. */
  get selection() {
    const [node] = this.selNodes;
    if (node !== undefined) return { kind: 'node', id: node };
    const [edge] = this.selEdges;
    return edge !== undefined ? { kind: 'edge', id: edge } : null;
  }

  /** Asks before the page closes while edits would be lost. */
  guardLeaving() {
    const guard = this.unsavedEdits() > 0;
    if (guard === Boolean(this.guarding)) return;
    this.guarding = guard;
    if (guard) window.addEventListener('beforeunload', this.onLeave);
    else window.removeEventListener('beforeunload', this.onLeave);
  }

  /** The colour this window gives a user. */
  colorOf(userId) {
    return colorOf(userId);
  }

  /** Edits that would be lost if the page closed now. */
  unsavedEdits() {
    const { client } = this;
    // Kept in IndexedDB, they are sent after the next load.
    if (client.storage?.kind === 'indexeddb') return 0;
    return client.pending.length;
  }

  // ------------------------------------------------------------ rendering

  /** Coalesces renders into one per animation frame. */
  render() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.renderNow();
    });
  }

  renderNow() {
    const { view } = this.client;
    for (const id of this.selNodes) if (!view.nodes.has(id)) this.selNodes.delete(id);
    for (const id of this.selEdges) if (!view.edges.has(id)) this.selEdges.delete(id);
    const { x, y, zoom } = this.camera;
    this.world.setAttribute('transform', `translate(${x} ${y}) scale(${zoom})`);
    $('grid').setAttribute('patternTransform', `translate(${x} ${y}) scale(${zoom})`);
    this.svg.classList.toggle('far', zoom < FAR_ZOOM);
    const area = this.visibleArea(CULL_MARGIN);
    const boxes = this.renderNodes(view, area);
    // Thousands of boxes far out: connections would be a grey mass that
    // costs more than it shows. They come back on zooming in.
    const crowded = zoom < FAR_ZOOM && this.nodeEls.size > CROWDED;
    this.svg.classList.toggle('crowded', crowded);
    this.renderEdges(view, crowded ? null : area, boxes);
    this.renderCursors();
    this.renderPeople();
    this.renderStatus();
    this.renderFullLabel(view);
    this.renderMinimap(view);
    $('zoom-level').textContent = `${Math.round(zoom * 100)}%`;
    $('delete').disabled = this.selNodes.size + this.selEdges.size === 0;
    $('follow').hidden = !this.following;
    if (this.following) $('follow-name').textContent = this.nameOf(this.following);
  }

  /** The part of the graph on screen (graph units), `margin` screen pixels wider. */
  visibleArea(margin = 0) {
    const r = this.svg.getBoundingClientRect();
    const { x, y, zoom } = this.camera;
    return {
      x0: (-margin - x) / zoom, y0: (-margin - y) / zoom,
      x1: (r.width + margin - x) / zoom, y1: (r.height + margin - y) / zoom,
    };
  }

  /** Entity id → the first other user who has it selected. */
  remoteSelections() {
    const byId = new Map();
    for (const peer of this.client.peers.values()) {
      for (const id of peer.selection) if (!byId.has(id)) byId.set(id, peer.userId);
    }
    return byId;
  }

  /**
   * Node id → where another user is dragging it right now (their preview).
   * A preview holds while its first node is still where the drag started:
   * once the drop's command is applied, the view has the new place.
   */
  remotePreviews() {
    const byId = new Map();
    const { nodes } = this.client.view;
    for (const peer of this.client.peers.values()) {
      const p = peer.preview;
      if (!p || !Array.isArray(p.nodes) || !Number.isFinite(p.dx) || !Number.isFinite(p.dy)) continue;
      const first = nodes.get(p.nodes[0]);
      const at = first && positionOf(first);
      if (!at || at.x !== p.from?.x || at.y !== p.from?.y) continue;
      for (const id of p.nodes) if (typeof id === 'string') byId.set(id, { dx: p.dx, dy: p.dy, user: peer.userId });
    }
    return byId;
  }

  /** Where a node is drawn: ours while we drag it, else another's preview, else the view's. */
  positionShown(node, previews) {
    const g = this.gesture;
    const p = positionOf(node);
    if (g?.kind === 'drag' && g.start.has(node.id)) {
      const s = g.start.get(node.id);
      return { x: s.x + g.dx, y: s.y + g.dy };
    }
    const remote = previews?.get(node.id);
    return remote ? { x: p.x + remote.dx, y: p.y + remote.dy } : p;
  }

  /** The node's drawn box: centre and size. */
  boxOf(node, previews = this.remotePreviews()) {
    const { x, y } = this.positionShown(node, previews);
    return { x, y, w: widthOf(labelOf(node)), h: NODE_HEIGHT };
  }

  /** Draws the nodes in `area`, removes the others; returns every node's box. */
  renderNodes(view, area) {
    const layer = $('nodes');
    const remote = this.remoteSelections();
    const previews = this.remotePreviews();
    const boxes = new Map();
    const drawn = new Set();
    for (const node of view.nodes.values()) {
      const label = labelOf(node);
      if (this.labels.get(node.id) !== label) this.labels.set(node.id, label);
      const box = this.boxOf(node, previews);
      boxes.set(node.id, box);
      if (box.x + box.w / 2 < area.x0 || box.x - box.w / 2 > area.x1
        || box.y + box.h / 2 < area.y0 || box.y - box.h / 2 > area.y1) continue;
      drawn.add(node.id);
      let g = this.nodeEls.get(node.id);
      if (!g) {
        g = el('g', { class: 'node', 'data-id': node.id, tabindex: 0, role: 'button' }, layer);
        el('title', {}, g);
        el('rect', { class: 'node-remote', rx: 13 }, g);
        el('text', { class: 'node-remote-tag' }, g);
        el('rect', { class: 'node-body', rx: 10 }, g);
        el('text', { class: 'node-label' }, g);
        el('circle', { class: 'node-handle', r: 5.5 }, g);
        el('circle', { class: 'pending-dot', r: 3.5 }, g);
        this.nodeEls.set(node.id, g);
      }
      const peer = remote.get(node.id) ?? null;
      const moving = previews.get(node.id)?.user ?? null;
      const selected = this.selNodes.has(node.id);
      const pending = this.client.isPending(node.id);
      const dragging = this.gesture?.kind === 'drag' && this.gesture.start.has(node.id);
      const key = `${box.x},${box.y},${label},${peer},${moving},${selected},${pending},${dragging}`;
      if (g.renderKey === key) continue;
      g.renderKey = key;
      const { x, y, w, h } = box;
      g.setAttribute('transform', `translate(${x} ${y})`);
      g.dataset.x = String(Math.round(x));
      g.dataset.y = String(Math.round(y));
      const [title, outline, tag, body, text, handle, dot] = g.children;
      title.textContent = label;
      g.setAttribute('aria-label', `Node ${label}${selected ? ', selected' : ''}`);
      g.setAttribute('aria-pressed', String(selected));
      setAttrs(body, { x: -w / 2, y: -h / 2, width: w, height: h });
      setAttrs(handle, { cx: w / 2, cy: 0 });
      setAttrs(dot, { cx: w / 2 - 9, cy: -h / 2 + 9 });
      text.textContent = shorten(label, LABEL_CHARS);
      const who = moving ?? peer;
      outline.setAttribute('visibility', who ? 'visible' : 'hidden');
      tag.setAttribute('visibility', who ? 'visible' : 'hidden');
      if (who) {
        g.style.setProperty('--c', colorOf(who));
        setAttrs(outline, { x: -w / 2 - 4, y: -h / 2 - 4, width: w + 8, height: h + 8 });
        setAttrs(tag, { x: -w / 2, y: -h / 2 - 9 });
        tag.textContent = shorten(this.nameOf(who), 24);
      }
      g.classList.toggle('selected', selected);
      g.classList.toggle('pending', pending);
      g.classList.toggle('dragging', dragging);
      g.classList.toggle('remote-moving', moving !== null);
    }
    for (const [id, g] of this.nodeEls) {
      if (!drawn.has(id)) {
        if (g === document.activeElement && view.nodes.has(id)) continue; // keep keyboard focus
        g.remove();
        this.nodeEls.delete(id);
      }
    }
    return boxes;
  }

  renderEdges(view, area, boxes) {
    const layer = $('edges');
    const drawn = new Set();
    for (const edge of view.edges.values()) {
      const a = boxes.get(edge.source);
      const b = boxes.get(edge.target);
      if (!a || !b || !area) continue;
      if (Math.max(a.x, b.x) < area.x0 || Math.min(a.x, b.x) > area.x1
        || Math.max(a.y, b.y) < area.y0 || Math.min(a.y, b.y) > area.y1) continue;
      drawn.add(edge.id);
      let g = this.edgeEls.get(edge.id);
      if (!g) {
        g = el('g', {
          class: 'edge', 'data-id': edge.id, 'data-source': edge.source, 'data-target': edge.target, tabindex: 0, role: 'button',
        }, layer);
        el('path', { class: 'edge-hit' }, g);
        el('path', { class: 'edge-line' }, g);
        this.edgeEls.set(edge.id, g);
      }
      const d = edgePath(a, b);
      const selected = this.selEdges.has(edge.id);
      const pending = this.client.isPending(edge.id);
      const key = `${d},${selected},${pending}`;
      if (g.renderKey === key) continue;
      g.renderKey = key;
      for (const path of g.children) path.setAttribute('d', d);
      g.setAttribute('aria-label', `Connection from ${this.labels.get(edge.source)} to ${this.labels.get(edge.target)}`);
      g.classList.toggle('selected', selected);
      g.classList.toggle('pending', pending);
    }
    for (const [id, g] of this.edgeEls) {
      if (!drawn.has(id) && (g !== document.activeElement || !view.edges.has(id))) {
        g.remove();
        this.edgeEls.delete(id);
      }
    }
  }

  /**
   * A label cut on the canvas is shown whole next to its node while the
   * node is under the pointer, has keyboard focus, or is the one selected.
   */
  renderFullLabel(view) {
    const box = $('label-full');
    const [only] = this.selNodes.size === 1 ? this.selNodes : [];
    const focused = document.activeElement?.closest?.('#nodes .node')?.dataset.id;
    const id = this.hovered ?? focused ?? only;
    const node = id === undefined ? null : view.nodes.get(id);
    const label = node ? labelOf(node) : '';
    const show = label.length > LABEL_CHARS && this.nodeEls.has(id) && this.gesture?.kind !== 'drag';
    box.hidden = !show;
    if (!show) return;
    if (box.textContent !== label) box.textContent = label;
    const { x, y, h } = this.boxOf(node);
    const { zoom } = this.camera;
    const width = box.offsetWidth;
    const stage = this.svg.clientWidth;
    const left = Math.min(Math.max(4, x * zoom + this.camera.x - width / 2), Math.max(4, stage - width - 4));
    const top = (y - h / 2) * zoom + this.camera.y - box.offsetHeight - 8;
    // Above the node, or below it when there is no room above.
    box.style.left = `${left}px`;
    box.style.top = `${top >= 4 ? top : (y + h / 2) * zoom + this.camera.y + 8}px`;
  }

  /** The name another user chose, else their user id. */
  nameOf(userId) {
    if (userId === this.client.userId) return this.name ?? userId;
    return this.client.peers.get(userId)?.name ?? userId;
  }

  renderCursors() {
    const layer = $('cursors');
    const peers = this.client.peers;
    const zoom = this.camera.zoom;
    for (const [user, g] of this.cursorEls) {
      if (!peers.get(user)?.cursor || g.dataset.name !== this.nameOf(user)) {
        g.remove();
        this.cursorEls.delete(user);
      }
    }
    for (const peer of peers.values()) {
      if (!peer.cursor) continue;
      let g = this.cursorEls.get(peer.userId);
      if (!g) {
        const name = shorten(this.nameOf(peer.userId), 24);
        g = el('g', { class: 'cursor', 'data-user': peer.userId, 'data-name': this.nameOf(peer.userId), 'aria-hidden': 'true' }, layer);
        this.cursorEls.set(peer.userId, g);
        g.style.setProperty('--c', colorOf(peer.userId));
        el('path', { class: 'cursor-arrow', d: 'M0 0 0 17 4.6 12.8 8 20 11 18.7 7.7 11.6 13.5 11.6z' }, g);
        el('rect', { class: 'cursor-tag', x: 12, y: 17, rx: 6, height: 20, width: name.length * 7 + 14 }, g);
        el('text', { class: 'cursor-name', x: 19, y: 27 }, g).textContent = name;
      }
      // The pointer keeps its size whatever the zoom.
      g.setAttribute('transform', `translate(${peer.cursor.x} ${peer.cursor.y}) scale(${1 / zoom})`);
    }
  }

  renderPeople() {
    const box = $('people');
    const users = [this.client.userId, ...this.client.peers.keys()].filter(Boolean);
    const key = users.map((u) => `${u}\t${this.nameOf(u)}`).join('\n') + this.following;
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.setAttribute('aria-label', `${users.length} ${users.length === 1 ? 'person' : 'people'} here`);
    box.replaceChildren(...users.map((user, i) => {
      const name = this.nameOf(user);
      const a = document.createElement(i === 0 ? 'span' : 'button');
      a.className = i === 0 ? 'avatar me' : 'avatar';
      a.style.setProperty('--c', colorOf(user));
      a.textContent = initials(name);
      a.title = i === 0 ? `${name} (you)` : `${name}: click to follow their view`;
      a.setAttribute('aria-label', i === 0 ? `${name} (you)` : `Follow ${name}`);
      a.dataset.user = user;
      if (i > 0) {
        a.classList.toggle('followed', this.following === user);
        a.addEventListener('click', () => this.follow(this.following === user ? null : user));
      }
      return a;
    }));
  }

  renderStatus() {
    const { status, version } = this.client;
    const box = $('conn');
    const waiting = this.client.pending.length;
    const text = {
      idle: 'Starting…',
      connecting: waiting ? `Connecting… · ${plural(waiting, 'edit')} waiting` : 'Connecting…',
      syncing: 'Syncing…',
      online: 'Live',
      offline: waiting ? `Offline · ${plural(waiting, 'edit')} waiting` : 'Offline · reconnecting',
      closed: 'Closed',
    }[status];
    // Only a change of connection is announced (aria-live), not every version.
    const label = box.querySelector('.conn-text');
    if (box.dataset.status !== status || label.textContent !== text) {
      box.dataset.status = status;
      label.textContent = text;
    }
    box.querySelector('.conn-version').textContent = status === 'online' ? ` · v${version}` : '';
    box.title = status === 'offline' ? 'Edits are kept and sent when the connection is back' : '';
    this.renderDeviceNote();
  }

  /** What is kept on this device and not yet confirmed by the server. */
  renderDeviceNote() {
    const { status, pending, storage } = this.client;
    const note = $('device-note');
    const waiting = pending.length;
    const sending = status === 'online';
    const edits = waiting === 1 ? '1 edit' : `${waiting} edits`;
    let text = '';
    if (storage?.kind === 'memory') {
      text = waiting && !sending ? `${edits} not saved on this device: ${storage.reason}` : '';
      note.title = `Nothing is kept on this device (${storage.reason}); a reload loses unsent edits.`;
    } else if (waiting && !sending) {
      text = `${edits} saved on this device, sending when online`;
      note.title = 'They survive a reload or a crash, and are sent once the server is reachable.';
    }
    note.dataset.pending = String(waiting);
    note.dataset.storage = storage?.kind ?? '';
    note.hidden = !text;
    if (note.textContent !== text) note.textContent = text;
  }

  // ------------------------------------------------------------ minimap

  /**
   * The whole graph small, and the part on screen outlined. Drawn in CSS
   * pixels of the minimap's content box, on a backing store of the screen's
   * pixel density (sharp on any screen). The nodes are drawn again only
   * when the graph changed; each frame copies them and adds the outline.
   */
  renderMinimap(view) {
    const canvas = $('minimap');
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return; // hidden (small screens)
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(w * dpr);
    const ph = Math.round(h * dpr);
    if (canvas.width !== pw || canvas.height !== ph) {
      canvas.width = pw;
      canvas.height = ph;
      this.minimapDirty = true;
    }
    if (this.minimapDirty || !this.minimapBase) {
      this.minimapDirty = false;
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (const node of view.nodes.values()) {
        const p = positionOf(node);
        x0 = Math.min(x0, p.x - 60); y0 = Math.min(y0, p.y - 20);
        x1 = Math.max(x1, p.x + 60); y1 = Math.max(y1, p.y + 20);
      }
      if (x0 === Infinity) [x0, y0, x1, y1] = [0, 0, 800, 600];
      const pad = 40;
      const scale = Math.min((w - 8) / (x1 - x0 + 2 * pad), (h - 8) / (y1 - y0 + 2 * pad));
      this.minimapScale = { scale, x0: x0 - pad - (w / scale - (x1 - x0 + 2 * pad)) / 2, y0: y0 - pad - (h / scale - (y1 - y0 + 2 * pad)) / 2 };
      const base = (this.minimapBase ??= document.createElement('canvas'));
      base.width = pw;
      base.height = ph;
      const ctx = base.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      ctx.fillStyle = '#8f98ab';
      const m = this.minimapScale;
      for (const node of view.nodes.values()) {
        const p = positionOf(node);
        const nw = Math.max(3, widthOf(labelOf(node)) * m.scale);
        const nh = Math.max(2, NODE_HEIGHT * m.scale);
        ctx.fillRect((p.x - m.x0) * m.scale - nw / 2, (p.y - m.y0) * m.scale - nh / 2, nw, nh);
      }
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, pw, ph);
    ctx.drawImage(this.minimapBase, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const m = this.minimapScale;
    const a = this.visibleArea();
    ctx.strokeStyle = '#3b6cf6';
    ctx.lineWidth = 1.5;
    ctx.strokeRect((a.x0 - m.x0) * m.scale, (a.y0 - m.y0) * m.scale, (a.x1 - a.x0) * m.scale, (a.y1 - a.y0) * m.scale);
  }

  /** A point on the minimap (client coordinates) in graph coordinates, or `null`. */
  minimapToWorld(e) {
    const canvas = $('minimap');
    const m = this.minimapScale;
    if (!m) return null;
    const r = canvas.getBoundingClientRect();
    // The drawing covers the content box: inside the border.
    const x = e.clientX - r.left - canvas.clientLeft;
    const y = e.clientY - r.top - canvas.clientTop;
    return { x: x / m.scale + m.x0, y: y / m.scale + m.y0 };
  }

  /** A click on the minimap centres the view there; dragging on it moves the view along. */
  bindMinimap() {
    const canvas = $('minimap');
    const go = (e) => {
      const at = this.minimapToWorld(e);
      if (at) this.centreOn(at, this.camera.zoom);
    };
    canvas.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      canvas.setPointerCapture(e.pointerId);
      go(e);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (canvas.hasPointerCapture(e.pointerId)) go(e);
    });
  }

  // ------------------------------------------------------------ the viewport (this user's own)

  /** Puts graph point `at` in the middle of the canvas at `zoom`. */
  centreOn(at, zoom, { byUser = true } = {}) {
    const r = this.svg.getBoundingClientRect();
    this.setCamera({ x: r.width / 2 - at.x * zoom, y: r.height / 2 - at.y * zoom, zoom }, { byUser });
  }

  setCamera(camera, { byUser = true } = {}) {
    if (byUser && this.following) this.follow(null);
    this.camera = camera;
    this.shareView();
    this.render();
  }

  /** Zooms by `factor` keeping the graph point under screen point (sx, sy) still. */
  zoomAt(factor, sx, sy) {
    const { x, y, zoom } = this.camera;
    const next = clampZoom(zoom * factor);
    const k = next / zoom;
    this.setCamera({ x: sx - (sx - x) * k, y: sy - (sy - y) * k, zoom: next });
  }

  zoomCentre(factor) {
    const r = this.svg.getBoundingClientRect();
    this.zoomAt(factor, r.width / 2, r.height / 2);
  }

  /** Fits every node on screen (at most 100%). */
  fit() {
    const { nodes } = this.client.view;
    if (nodes.size === 0) {
      this.setCamera({ x: 0, y: 0, zoom: 1 });
      return;
    }
    let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
    for (const node of nodes.values()) {
      const b = this.boxOf(node);
      x0 = Math.min(x0, b.x - b.w / 2); y0 = Math.min(y0, b.y - b.h / 2);
      x1 = Math.max(x1, b.x + b.w / 2); y1 = Math.max(y1, b.y + b.h / 2);
    }
    const r = this.svg.getBoundingClientRect();
    const zoom = Math.min(1, Math.max(MIN_ZOOM, Math.min((r.width - 60) / (x1 - x0), (r.height - 60) / (y1 - y0))));
    this.centreOn({ x: (x0 + x1) / 2, y: (y0 + y1) / 2 }, zoom);
  }

  /** Tells others what this user looks at (for "follow"), with any drag in progress. */
  shareView() {
    const a = this.visibleArea();
    const view = { x: Math.round((a.x0 + a.x1) / 2), y: Math.round((a.y0 + a.y1) / 2), zoom: +this.camera.zoom.toFixed(3) };
    this.sharedView = view;
    this.client.setPresence({ preview: { ...this.dragPreview, view } });
  }

  follow(userId) {
    this.following = userId;
    this.followPeer();
    this.render();
  }

  followPeer() {
    if (!this.following) return;
    const peer = this.client.peers.get(this.following);
    if (!peer) {
      this.following = null;
      return;
    }
    const v = peer.preview?.view;
    if (v && Number.isFinite(v.x) && Number.isFinite(v.y) && Number.isFinite(v.zoom)) {
      this.centreOn(v, clampZoom(v.zoom), { byUser: false });
    }
  }

  // ------------------------------------------------------------ outcomes

  /**
   * A command's conflicts and its revert arrive as separate messages: they
   * are gathered for a moment and told as one message in the user's words.
   */
  onOutcome(operationId, command, part) {
    let o = this.outcomes.get(operationId);
    if (!o) {
      o = { command, conflicts: [], revert: null };
      this.outcomes.set(operationId, o);
      setTimeout(() => {
        this.outcomes.delete(operationId);
        this.tell(o);
      }, 150);
    }
    o.command ??= command;
    if (part.conflict) o.conflicts.push(part.conflict);
    if (part.revert) o.revert = part.revert;
  }

  /** One message for one command's outcome. */
  tell({ command, conflicts, revert }) {
    const type = command?.type;
    const error = revert?.error;
    const ids = [...new Set(conflicts.map((c) => String(c.field).split('/')[2]).filter(Boolean))];
    const names = ids.map((id) => `“${this.labels.get(id) ?? id}”`).join(', ');
    if (type === 'UNDO' || type === 'REDO') {
      const what = type === 'UNDO' ? 'undo' : 'redo';
      if (error?.code === 'INVALID') toast(`Nothing to ${what}`, '', 'info');
      else if (error) toast(`Nothing to ${what}`, `${names || 'What you changed'} was changed by someone else since.`, 'warn');
      else if (conflicts.length) toast(`Part of your ${what} was kept back`, `${names} was changed by someone else since; that part stays as they left it.`, 'warn');
      return;
    }
    if (conflicts.length) {
      const c = conflicts[0];
      const [, kind, id, ...rest] = String(c.field).split('/');
      const thing = kind === 'nodes' ? `“${this.labels.get(id) ?? id}”` : 'the view';
      const field = fieldName(rest);
      const entity = kind === 'nodes' ? this.client.view.nodes.get(id) : null;
      const who = entity?.updatedBy && entity.updatedBy !== this.client.userId ? this.nameOf(entity.updatedBy) : 'Someone else';
      if (c.strategy === 'CLIENT_WINS' || c.strategy === 'LAST_WRITE_WINS') {
        toast(`Your change to ${thing} was kept`, `It replaced ${who === 'Someone else' ? 'another' : `${who}'s`} ${field} ${short(c.serverValue)}.`, 'info');
      } else {
        if (field === 'name') {
          toast(`${who} renamed that node before you`, `It stays ${short(c.serverValue)}; rename it again to use ${short(c.clientValue)}.`, 'warn');
        } else {
          toast(`${who} changed the ${field} of ${thing} first`, 'Theirs was kept; do it again if you still want yours.', 'warn');
        }
      }
      return;
    }
    if (!error) return;
    toast(`${describe(command)} was rolled back`, `${capitalize(this.named(error.message ?? error.code))}.`, 'warn');
  }

  /** The server's message with node ids replaced by the names people saw. */
  named(message) {
    return String(message).replace(/\bnode (\S+)/g, (m, id) => (this.labels.has(id) ? `node “${this.labels.get(id)}”` : m));
  }

  /** Our preview ends once the command that ends the gesture has settled. */
  settled(operationId) {
    if (operationId !== this.previewEndsWith) return;
    this.previewEndsWith = null;
    this.dragPreview = {};
    this.shareView();
  }

  // ------------------------------------------------------------ editing

  /** Selects exactly these (or adds them with `add`). */
  select(nodes = [], edges = [], { add = false } = {}) {
    if (!add) {
      this.selNodes.clear();
      this.selEdges.clear();
    }
    for (const id of nodes) this.selNodes.add(id);
    for (const id of edges) this.selEdges.add(id);
    this.client.setPresence({ selection: [...this.selNodes, ...this.selEdges].slice(0, 100) });
    this.render();
  }

  toggle(kind, id) {
    const set = kind === 'node' ? this.selNodes : this.selEdges;
    if (set.has(id)) set.delete(id);
    else set.add(id);
    this.select([], [], { add: true });
  }

  addNode(at) {
    if (this.readOnly) return null;
    const id = this.client.createNode({
      type: 'default',
      position: { x: Math.round(at.x), y: Math.round(at.y) },
      data: { label: `Node ${this.nextNumber()}` },
    });
    this.select([id]);
    return id;
  }

  /** The free spot nearest `at` where a new node hides nothing, spiralling out. */
  freeSpot(at) {
    const w = 130;
    const h = NODE_HEIGHT + 24;
    const boxes = [...this.client.view.nodes.values()].map((n) => this.boxOf(n));
    const free = (p) => boxes.every((b) => Math.abs(b.x - p.x) > (b.w + w) / 2 || Math.abs(b.y - p.y) > (b.h + h) / 2);
    for (let ring = 0; ring < 40; ring += 1) {
      for (let i = -ring; i <= ring; i += 1) {
        for (const [dx, dy] of [[i, -ring], [i, ring], [-ring, i], [ring, i]]) {
          const p = { x: at.x + dx * (w + 20), y: at.y + dy * h };
          if (free(p)) return p;
        }
      }
    }
    return at;
  }

  /** One more than the highest "Node N" shown. */
  nextNumber() {
    let max = 0;
    for (const node of this.client.view.nodes.values()) {
      const n = /^Node (\d+)$/.exec(labelOf(node));
      if (n) max = Math.max(max, Number(n[1]));
    }
    return max + 1;
  }

  /** Deletes the selection: one command, one undo step. */
  deleteSelection() {
    if (this.readOnly) return;
    const { view } = this.client;
    const nodes = [...this.selNodes];
    const edges = [...this.selEdges].filter((id) => {
      const e = view.edges.get(id);
      return e && !this.selNodes.has(e.source) && !this.selNodes.has(e.target);
    });
    const ops = [
      ...edges.map((id) => ({ type: 'DELETE_EDGE', payload: { id } })),
      ...nodes.map((id) => ({ type: 'DELETE_NODE', payload: { id } })),
    ];
    this.submitAll(ops);
    this.select();
  }

  /** One command for one operation, one atomic batch for several. */
  submitAll(ops) {
    if (ops.length === 0) return null;
    if (ops.length === 1) return this.client.submit(ops[0].type, ops[0].payload);
    return this.client.batch(ops);
  }

  connect(source, target) {
    if (source === target || this.readOnly) return;
    const exists = [...this.client.view.edges.values()].some((e) => e.source === source && e.target === target);
    if (!exists) this.client.createEdge({ source, target, type: 'default' });
  }

  copy() {
    const { view } = this.client;
    const nodes = [...this.selNodes].map((id) => view.nodes.get(id)).filter(Boolean);
    const ids = new Set(nodes.map((n) => n.id));
    const edges = [...view.edges.values()].filter((e) => ids.has(e.source) && ids.has(e.target));
    this.clipboard = nodes.length ? { nodes, edges } : this.clipboard;
  }

  /** Pastes the copied nodes (and the edges between them) 40 px further: one change. */
  paste() {
    if (!this.clipboard || this.readOnly) return;
    const fresh = new Map(this.clipboard.nodes.map((n) => [n.id, `n-${randomId().slice(0, 8)}`]));
    const ops = [
      ...this.clipboard.nodes.map((n) => {
        const p = positionOf(n);
        return {
          type: 'CREATE_NODE',
          payload: { node: { id: fresh.get(n.id), type: n.type ?? 'default', position: { x: p.x + 40, y: p.y + 40 }, data: n.data ?? {} } },
        };
      }),
      ...this.clipboard.edges.map((e) => ({
        type: 'CREATE_EDGE',
        payload: { edge: { id: `e-${randomId().slice(0, 8)}`, source: fresh.get(e.source), target: fresh.get(e.target), type: e.type ?? 'default', data: e.data ?? {} } },
      })),
    ];
    this.submitAll(ops);
    this.clipboard = {
      nodes: this.clipboard.nodes.map((n) => ({ ...n, id: fresh.get(n.id), position: { x: positionOf(n).x + 40, y: positionOf(n).y + 40 } })),
      edges: this.clipboard.edges.map((e) => ({ ...e, source: fresh.get(e.source), target: fresh.get(e.target) })),
    };
    this.select([...fresh.values()]);
  }

  /** Moves the selected nodes by (dx, dy): one change. */
  nudge(dx, dy) {
    const { view } = this.client;
    const ops = [...this.selNodes].filter((id) => view.nodes.has(id)).map((id) => {
      const p = positionOf(view.nodes.get(id));
      return { type: 'UPDATE_NODE', payload: { id, patch: { position: { x: p.x + dx, y: p.y + dy } } } };
    });
    this.submitAll(ops);
  }

  startRename(id) {
    const node = this.client.view.nodes.get(id);
    if (!node || this.readOnly) return;
    const input = $('rename');
    const { x, y, w, h } = this.boxOf(node);
    const { zoom } = this.camera;
    const width = Math.max(w * zoom, 180);
    Object.assign(input.style, {
      left: `${x * zoom + this.camera.x - width / 2}px`,
      top: `${y * zoom + this.camera.y - h / 2}px`,
      width: `${width}px`,
      height: `${h}px`,
    });
    input.value = labelOf(node);
    input.hidden = false;
    input.focus();
    input.select();
    const finish = (save) => {
      input.onkeydown = input.onblur = null;
      input.hidden = true;
      const label = input.value.trim();
      if (save && label && label !== labelOf(this.client.view.nodes.get(id))) {
        this.client.updateNode(id, { data: { label } });
      }
      this.nodeEls.get(id)?.focus();
    };
    input.onkeydown = (e) => {
      if (e.key === 'Enter') finish(true);
      if (e.key === 'Escape') finish(false);
      e.stopPropagation();
    };
    input.onblur = () => finish(true);
  }

  // ------------------------------------------------------------ input

  /** A screen point (client coordinates) in graph coordinates. */
  toWorld(event) {
    const r = this.svg.getBoundingClientRect();
    const { x, y, zoom } = this.camera;
    return { x: (event.clientX - r.left - x) / zoom, y: (event.clientY - r.top - y) / zoom };
  }

  bindPointer() {
    const svg = this.svg;
    svg.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      // Ctrl+wheel is also what a trackpad pinch sends: finer steps.
      const step = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
      const factor = Math.exp(-step * (e.ctrlKey ? 0.01 : 0.0015));
      this.zoomAt(factor, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });

    svg.addEventListener('pointerdown', (e) => {
      this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (this.pointers.size === 2) {
        // Two fingers: pinch to zoom, whatever the first one was doing. The
        // graph point between them stays between them (moving both pans).
        this.endGesture(e, { cancel: true });
        const [p, q] = [...this.pointers.values()];
        const r = svg.getBoundingClientRect();
        const { x, y, zoom } = this.camera;
        const mid = { x: (p.x + q.x) / 2 - r.left, y: (p.y + q.y) / 2 - r.top };
        this.gesture = {
          kind: 'pinch', dist: Math.max(1, Math.hypot(p.x - q.x, p.y - q.y)), zoom, at: { x: (mid.x - x) / zoom, y: (mid.y - y) / zoom },
        };
        return;
      }
      if (e.button !== 0) return;
      const at = this.toWorld(e);
      const nodeEl = e.target.closest('.node');
      const edgeEl = e.target.closest('.edge');
      if (nodeEl && e.target.classList.contains('node-handle') && !this.readOnly) {
        this.gesture = { kind: 'link', source: nodeEl.dataset.id };
        svg.classList.add('linking');
      } else if (nodeEl) {
        const id = nodeEl.dataset.id;
        if (e.shiftKey) this.toggle('node', id);
        else if (!this.selNodes.has(id)) this.select([id]);
        if (!this.readOnly && this.selNodes.has(id)) {
          const start = new Map();
          for (const sel of this.selNodes) {
            const n = this.client.view.nodes.get(sel);
            if (n) start.set(sel, positionOf(n));
          }
          this.gesture = { kind: 'drag', start, from: at, dx: 0, dy: 0, moved: false };
        }
      } else if (edgeEl) {
        if (e.shiftKey) this.toggle('edge', edgeEl.dataset.id);
        else this.select([], [edgeEl.dataset.id]);
      } else if (e.shiftKey) {
        this.gesture = { kind: 'marquee', from: at, to: at };
      } else {
        this.gesture = { kind: 'pan', from: { x: e.clientX, y: e.clientY }, camera: { ...this.camera }, moved: false };
      }
      if (this.gesture) svg.setPointerCapture(e.pointerId);
    });

    svg.addEventListener('pointermove', (e) => {
      if (this.pointers.has(e.pointerId)) this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      const at = this.toWorld(e);
      this.client.setPresence({ cursor: { x: Math.round(at.x), y: Math.round(at.y) } });
      const g = this.gesture;
      if (!g) return;
      if (g.kind === 'drag') {
        g.dx = Math.round(at.x - g.from.x);
        g.dy = Math.round(at.y - g.from.y);
        g.moved ||= g.dx !== 0 || g.dy !== 0;
        if (g.moved) {
          const nodes = [...g.start.keys()].slice(0, PREVIEW_NODES);
          this.dragPreview = { dx: g.dx, dy: g.dy, nodes, from: g.start.get(nodes[0]) };
          this.shareView();
        }
        this.render();
      } else if (g.kind === 'link') {
        const source = this.client.view.nodes.get(g.source);
        if (!source) return;
        const box = this.boxOf(source);
        setAttrs($('link-preview'), { x1: box.x + box.w / 2, y1: box.y, x2: at.x, y2: at.y, visibility: 'visible' });
      } else if (g.kind === 'pan') {
        const dx = e.clientX - g.from.x;
        const dy = e.clientY - g.from.y;
        g.moved ||= Math.abs(dx) + Math.abs(dy) > 3;
        svg.classList.toggle('panning', g.moved);
        this.setCamera({ x: g.camera.x + dx, y: g.camera.y + dy, zoom: g.camera.zoom });
      } else if (g.kind === 'marquee') {
        g.to = at;
        const r = rectOf(g.from, g.to);
        setAttrs($('marquee'), { x: r.x0, y: r.y0, width: r.x1 - r.x0, height: r.y1 - r.y0, visibility: 'visible' });
      } else if (g.kind === 'pinch' && this.pointers.size === 2) {
        // From where the pinch started, not step by step: the fingers' moves
        // arrive one finger at a time, and small errors would add up.
        const [p, q] = [...this.pointers.values()];
        const r = svg.getBoundingClientRect();
        const mid = { x: (p.x + q.x) / 2 - r.left, y: (p.y + q.y) / 2 - r.top };
        const zoom = clampZoom((g.zoom * Math.hypot(p.x - q.x, p.y - q.y)) / g.dist);
        this.setCamera({ x: mid.x - g.at.x * zoom, y: mid.y - g.at.y * zoom, zoom });
      }
    });

    const end = (e) => {
      this.pointers.delete(e.pointerId);
      this.endGesture(e, { cancel: e.type !== 'pointerup' });
    };
    svg.addEventListener('pointerup', end);
    svg.addEventListener('pointercancel', end);
    svg.addEventListener('pointerleave', () => this.client.setPresence({ cursor: null }));
    // The node under the pointer shows its whole label (renderFullLabel).
    svg.addEventListener('pointerover', (e) => {
      const id = e.target.closest?.('.node')?.dataset.id;
      if (this.hovered !== id) {
        this.hovered = id;
        this.render();
      }
    });
    svg.addEventListener('pointerleave', () => {
      this.hovered = undefined;
      this.render();
    });
    svg.addEventListener('focusout', () => this.render());
    // A finger lifted outside the canvas is gone too (else the next touch would pinch).
    window.addEventListener('pointerup', (e) => this.pointers.delete(e.pointerId));
    window.addEventListener('pointercancel', (e) => this.pointers.delete(e.pointerId));

    svg.addEventListener('dblclick', (e) => {
      // Pointer capture retargets the click events to the svg itself: ask
      // what is really under the pointer.
      const under = document.elementFromPoint(e.clientX, e.clientY);
      const nodeEl = under?.closest('.node');
      if (nodeEl) this.startRename(nodeEl.dataset.id);
      else if (!under?.closest('.edge')) this.addNode(this.toWorld(e));
    });

    // Keyboard focus selects, as a click does (a click has selected already).
    svg.addEventListener('focusin', (e) => {
      const g = e.target.closest?.('.node, .edge');
      if (!g || this.gesture || this.pointers.size > 0) return;
      const id = g.dataset.id;
      const kind = g.classList.contains('node') ? 'node' : 'edge';
      if (!(kind === 'node' ? this.selNodes : this.selEdges).has(id)) {
        if (kind === 'node') this.select([id]);
        else this.select([], [id]);
      }
    });
  }

  /** Ends the pointer gesture: a drag becomes one command. */
  endGesture(e, { cancel = false } = {}) {
    const g = this.gesture;
    this.gesture = null;
    if (!g) return;
    const svg = this.svg;
    if (g.kind === 'drag') {
      if (g.moved && !cancel) {
        const ops = [...g.start].map(([id, s]) => ({
          type: 'UPDATE_NODE', payload: { id, patch: { position: { x: s.x + g.dx, y: s.y + g.dy } } },
        }));
        // Others keep seeing the preview until the move is applied.
        this.previewEndsWith = this.submitAll(ops);
      } else {
        this.dragPreview = {};
        this.shareView();
      }
    } else if (g.kind === 'link') {
      $('link-preview').setAttribute('visibility', 'hidden');
      svg.classList.remove('linking');
      const under = document.elementFromPoint(e.clientX, e.clientY)?.closest('.node');
      if (under && !cancel) this.connect(g.source, under.dataset.id);
    } else if (g.kind === 'pan') {
      svg.classList.remove('panning');
      if (!g.moved && !cancel) this.select();
    } else if (g.kind === 'marquee') {
      $('marquee').setAttribute('visibility', 'hidden');
      const r = rectOf(g.from, g.to);
      const inside = [...this.client.view.nodes.values()].filter((n) => {
        const b = this.boxOf(n);
        return b.x >= r.x0 && b.x <= r.x1 && b.y >= r.y0 && b.y <= r.y1;
      }).map((n) => n.id);
      this.select(inside, [], { add: true });
    }
    this.render();
  }

  bindKeys() {
    document.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target.closest?.('dialog')) return;
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      const focused = e.target.closest?.('.node');
      if (key === '+' || key === '=') this.zoomCentre(1.25);
      else if (key === '-') this.zoomCentre(0.8);
      else if (e.shiftKey && e.key === '!') this.fit();
      else if (this.readOnly) return;
      else if (mod && key === 'z') {
        if (e.shiftKey) this.client.redo();
        else this.client.undo();
      } else if (mod && key === 'y') this.client.redo();
      else if (mod && key === 'a') this.select([...this.client.view.nodes.keys()]);
      else if (mod && key === 'c') this.copy();
      else if (mod && key === 'v') this.paste();
      else if (mod && key === 'd') {
        this.copy();
        this.paste();
      } else if (e.key === 'Delete' || e.key === 'Backspace') this.deleteSelection();
      else if (e.key === 'Escape') this.select();
      else if ((e.key === 'Enter' || e.key === 'F2') && focused) this.startRename(focused.dataset.id);
      else if (key === 'c' && !mod && this.selNodes.size === 2) {
        const [source, target] = this.selNodes;
        this.connect(source, target);
      } else if (e.key.startsWith('Arrow') && this.selNodes.size) {
        const step = e.shiftKey ? NUDGE * 5 : NUDGE;
        const [dx, dy] = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key];
        this.nudge(dx, dy);
      } else return;
      e.preventDefault();
    });
  }

  bindToolbar() {
    $('add-node').addEventListener('click', () => {
      const r = this.svg.getBoundingClientRect();
      const { x, y, zoom } = this.camera;
      this.addNode(this.freeSpot({ x: (r.width / 2 - x) / zoom, y: (r.height / 2 - y) / zoom }));
    });
    $('undo').addEventListener('click', () => this.client.undo());
    $('redo').addEventListener('click', () => this.client.redo());
    $('delete').addEventListener('click', () => this.deleteSelection());
    $('zoom-in').addEventListener('click', () => this.zoomCentre(1.25));
    $('zoom-out').addEventListener('click', () => this.zoomCentre(0.8));
    $('zoom-level').addEventListener('click', () => this.zoomCentre(1 / this.camera.zoom));
    $('fit').addEventListener('click', () => this.fit());
    $('follow-stop').addEventListener('click', () => this.follow(null));
  }
}

function clampZoom(zoom) {
  return Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, zoom));
}

function rectOf(a, b) {
  return { x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x), y1: Math.max(a.y, b.y) };
}

function initials(name) {
  const words = String(name).split(/[\s._-]+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : String(name).slice(0, 1)).toUpperCase();
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** A conflict's field (the JSON pointer after the entity) in the user's words. */
function fieldName(rest) {
  if (rest[0] === 'position') return 'position';
  if (rest[0] === 'data' && rest[1] === 'label') return 'name';
  if (rest[0] === 'data') return rest[1] ? `“${rest[1]}”` : 'contents';
  return rest[0] ?? 'value';
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
}

/** A straight edge from box `a` to box `b`, ending at their borders. */
function edgePath(a, b) {
  const from = border(a, b.x - a.x, b.y - a.y, 0);
  const to = border(b, a.x - b.x, a.y - b.y, 3);
  return `M${from.x} ${from.y}L${to.x} ${to.y}`;
}

/** Where a ray from the box's centre along (dx, dy) leaves it, `gap` further out. */
function border(box, dx, dy, gap) {
  const t = Math.min((box.w / 2 + gap) / (Math.abs(dx) || 1e-9), (box.h / 2 + gap) / (Math.abs(dy) || 1e-9));
  // Overlapping boxes: stop half way rather than past the other centre.
  const s = Math.min(t, 0.5);
  return { x: +(box.x + dx * s).toFixed(1), y: +(box.y + dy * s).toFixed(1) };
}

function describe(command) {
  const patch = command.payload?.patch ?? {};
  switch (command.type) {
    case 'CREATE_NODE': return 'Adding a node';
    case 'UPDATE_NODE':
      if (patch.data?.label !== undefined) return 'Renaming a node';
      return patch.position ? 'Moving a node' : 'Editing a node';
    case 'DELETE_NODE': return 'Deleting a node';
    case 'CREATE_EDGE': return 'Your new connection';
    case 'DELETE_EDGE': return 'Deleting a connection';
    case 'UNDO': return 'Undo';
    case 'REDO': return 'Redo';
    default: return 'Your change';
  }
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function short(value) {
  const text = typeof value === 'string' ? `“${value}”` : JSON.stringify(value) ?? 'nothing';
  return shorten(text, 40);
}

start().catch((err) => {
  console.error(err);
  toast('The editor could not start', String(err?.message ?? err), 'error', 0);
});
