// The demo editor: an SVG canvas over the graphq client. Everything shown
// comes from `client.view` (confirmed state plus pending edits); every edit
// goes through the client, which shows it at once and settles it with the
// server. Open two windows on the same ?graph= to see collaboration.
//
// URL parameters: `graph` (default `demo`), `token` (else, under
// `graphq dev`, the page asks for a name and mints a demo token, renewed
// before it expires), `tokenTtl` (seconds a demo token lives; default 24 h,
// shorter to watch the renewal).

import { GraphqClient, tokenClaims } from './graphq-client.js';

const SVG = 'http://www.w3.org/2000/svg';
const NODE_HEIGHT = 40;
/** Drag positions go to the server at most this often (the view follows the pointer). */
const DRAG_SEND_MS = 80;
const TOAST_MS = 5000;

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
  const token = givenToken || (await devToken());
  const claims = tokenClaims(token);
  if (claims?.exp && claims.exp * 1000 < Date.now()) {
    toast('Your token has expired', 'Open the page with a fresh ?token=…', 'error', 0);
  }
  // A demo token is renewed for the same name; a ?token= cannot be, and the
  // socket lives as long as it does.
  let current = token;
  const getToken = givenToken ? undefined : async () => (current = await mintDevToken(claims?.sub));
  const client = new GraphqClient({ graphId, token, getToken });
  showOpenConflicts(client, claims?.sub, () => current);
  const editor = new Editor(client, { readOnly: claims?.role === 'viewer' });
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

/**
 * A demo token from `graphq dev` for a name the user picks (remembered for
 * this tab only, so two windows can be two people).
 */
async function devToken() {
  const dialog = $('login');
  const input = dialog.querySelector('input');
  let name = sessionStorage.getItem('graphq.user');
  for (;;) {
    if (!name) {
      input.value = '';
      dialog.showModal();
      input.focus();
      await new Promise((resolve) => dialog.addEventListener('close', resolve, { once: true }));
      name = input.value.trim();
      if (!name) continue;
    }
    // A reload reuses the tab's token: it paints sooner, and works offline.
    const kept = keptDevToken(name);
    if (kept) return kept;
    const res = await requestDevToken(name);
    if (res.ok) {
      const { token } = await res.json();
      sessionStorage.setItem('graphq.user', name);
      sessionStorage.setItem('graphq.token', token);
      return token;
    }
    if (res.status === 404) {
      throw new Error('This server does not hand out demo tokens: open the page with ?token=… (graphq token --user NAME --graph GRAPH).');
    }
    const body = await res.json().catch(() => ({}));
    $('login-error').textContent = body?.error?.message ?? `The server said ${res.status}.`;
    sessionStorage.removeItem('graphq.user');
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

/** A stable colour per user. */
function colorOf(userId) {
  let h = 0;
  for (const ch of String(userId)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return `hsl(${h} 68% 46%)`;
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

function widthOf(label) {
  return Math.min(220, Math.max(96, shorten(label, 28).length * 7.4 + 34));
}

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent?.appendChild(e);
  return e;
}

/**
 * Shows a message in the corner for a few seconds (`ms` 0: until clicked).
 * @param {string} title
 * @param {string} [text]
 * @param {'info'|'warn'|'error'} [kind]
 */
function toast(title, text = '', kind = 'info', ms = TOAST_MS) {
  const t = document.createElement('div');
  t.className = `toast ${kind}`;
  t.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const strong = document.createElement('strong');
  strong.textContent = title;
  t.append(strong, text);
  t.addEventListener('click', () => t.remove());
  $('toasts').append(t);
  if (ms) setTimeout(() => t.remove(), ms);
}

class Editor {
  constructor(client, { readOnly }) {
    this.client = client;
    this.readOnly = readOnly;
    this.svg = $('canvas');
    this.world = $('world');
    /** @type {?{kind: 'node'|'edge', id: string}} */
    this.selection = null;
    /** Local only: each user pans their own way. */
    this.pan = { x: 0, y: 0 };
    /** The pointer gesture in progress (drag, link, pan), if any. */
    this.gesture = null;
    /** Last known label of every node seen, to name deleted ones in messages. */
    this.labels = new Map();
    this.nodeEls = new Map();
    this.edgeEls = new Map();
    this.cursorEls = new Map();
    this.frame = 0;
    document.body.classList.toggle('read-only', readOnly);

    client.on('change', () => this.render());
    client.on('presence', () => this.render());
    client.on('status', () => this.renderStatus());
    client.on('revert', (r) => this.onRevert(r));
    client.on('conflict', (c) => this.onConflict(c));
    client.on('error', (e) => {
      if (e.code === 'BAD_FRAME' || e.code === 'BAD_MESSAGE') console.warn('graphq:', e.message);
      else if (e.code === 'TOKEN_EXPIRED') {
        const next = givenToken ? 'Open the page with a fresh ?token=…' : 'Reconnecting with a new one…';
        toast('Your token expired', next, givenToken ? 'error' : 'warn', givenToken ? 0 : TOAST_MS);
      }
      else toast('The server refused a request', `${e.message ?? ''} (${e.code})`, 'error');
    });
    this.bindPointer();
    this.bindKeys();
    this.bindToolbar();
    this.render();
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
    if (this.selection && !view[this.selection.kind === 'node' ? 'nodes' : 'edges'].has(this.selection.id)) {
      this.select(null);
    }
    this.world.setAttribute('transform', `translate(${this.pan.x} ${this.pan.y})`);
    $('grid').setAttribute('patternTransform', `translate(${this.pan.x} ${this.pan.y})`);
    const remote = this.remoteSelections();
    this.renderNodes(view, remote);
    this.renderEdges(view);
    this.renderCursors();
    this.renderPeople();
    this.renderStatus();
    $('delete').disabled = !this.selection;
  }

  /** Entity id → the first other user who has it selected. */
  remoteSelections() {
    const byId = new Map();
    for (const peer of this.client.peers.values()) {
      for (const id of peer.selection) if (!byId.has(id)) byId.set(id, peer.userId);
    }
    return byId;
  }

  /** The node's drawn box: centre and size (a dragged node follows the pointer). */
  boxOf(node) {
    const drag = this.gesture?.kind === 'drag' && this.gesture.id === node.id ? this.gesture.at : null;
    const { x, y } = drag ?? positionOf(node);
    return { x, y, w: widthOf(labelOf(node)), h: NODE_HEIGHT };
  }

  renderNodes(view, remote) {
    const layer = $('nodes');
    for (const [id, g] of this.nodeEls) {
      if (!view.nodes.has(id)) {
        g.remove();
        this.nodeEls.delete(id);
      }
    }
    for (const node of view.nodes.values()) {
      const label = labelOf(node);
      this.labels.set(node.id, label);
      let g = this.nodeEls.get(node.id);
      if (!g) {
        g = el('g', { class: 'node', 'data-id': node.id }, layer);
        el('rect', { class: 'node-remote', rx: 13 }, g);
        el('text', { class: 'node-remote-tag' }, g);
        el('rect', { class: 'node-body', rx: 10 }, g);
        el('text', { class: 'node-label' }, g);
        el('circle', { class: 'node-handle', r: 5.5 }, g);
        el('circle', { class: 'pending-dot', r: 3.5 }, g);
        this.nodeEls.set(node.id, g);
      }
      const { x, y, w, h } = this.boxOf(node);
      g.setAttribute('transform', `translate(${x} ${y})`);
      g.dataset.x = String(Math.round(x));
      g.dataset.y = String(Math.round(y));
      const [outline, tag, body, text, handle, dot] = g.children;
      setAttrs(body, { x: -w / 2, y: -h / 2, width: w, height: h });
      setAttrs(handle, { cx: w / 2, cy: 0 });
      setAttrs(dot, { cx: w / 2 - 9, cy: -h / 2 + 9 });
      if (text.textContent !== shorten(label, 28)) text.textContent = shorten(label, 28);
      const peer = remote.get(node.id);
      outline.setAttribute('visibility', peer ? 'visible' : 'hidden');
      tag.setAttribute('visibility', peer ? 'visible' : 'hidden');
      if (peer) {
        g.style.setProperty('--c', colorOf(peer));
        setAttrs(outline, { x: -w / 2 - 4, y: -h / 2 - 4, width: w + 8, height: h + 8 });
        setAttrs(tag, { x: -w / 2, y: -h / 2 - 9 });
        tag.textContent = peer;
      }
      g.classList.toggle('selected', this.selection?.kind === 'node' && this.selection.id === node.id);
      g.classList.toggle('pending', this.client.isPending(node.id));
      g.classList.toggle('dragging', this.gesture?.kind === 'drag' && this.gesture.id === node.id);
    }
  }

  renderEdges(view) {
    const layer = $('edges');
    for (const [id, g] of this.edgeEls) {
      if (!view.edges.has(id)) {
        g.remove();
        this.edgeEls.delete(id);
      }
    }
    for (const edge of view.edges.values()) {
      const source = view.nodes.get(edge.source);
      const target = view.nodes.get(edge.target);
      let g = this.edgeEls.get(edge.id);
      if (!source || !target) {
        g?.remove();
        this.edgeEls.delete(edge.id);
        continue;
      }
      if (!g) {
        g = el('g', { class: 'edge', 'data-id': edge.id, 'data-source': edge.source, 'data-target': edge.target }, layer);
        el('path', { class: 'edge-hit' }, g);
        el('path', { class: 'edge-line' }, g);
        this.edgeEls.set(edge.id, g);
      }
      const d = edgePath(this.boxOf(source), this.boxOf(target));
      for (const path of g.children) path.setAttribute('d', d);
      g.classList.toggle('selected', this.selection?.kind === 'edge' && this.selection.id === edge.id);
      g.classList.toggle('pending', this.client.isPending(edge.id));
    }
  }

  renderCursors() {
    const layer = $('cursors');
    const peers = this.client.peers;
    for (const [user, g] of this.cursorEls) {
      if (!peers.get(user)?.cursor) {
        g.remove();
        this.cursorEls.delete(user);
      }
    }
    for (const peer of peers.values()) {
      if (!peer.cursor) continue;
      let g = this.cursorEls.get(peer.userId);
      if (!g) {
        g = el('g', { class: 'cursor', 'data-user': peer.userId }, layer);
        this.cursorEls.set(peer.userId, g);
        g.style.setProperty('--c', colorOf(peer.userId));
        el('path', { class: 'cursor-arrow', d: 'M0 0 0 17 4.6 12.8 8 20 11 18.7 7.7 11.6 13.5 11.6z' }, g);
        const name = shorten(peer.userId, 20);
        el('rect', { class: 'cursor-tag', x: 12, y: 17, rx: 6, height: 20, width: name.length * 7 + 14 }, g);
        el('text', { class: 'cursor-name', x: 19, y: 27 }, g).textContent = name;
      }
      g.setAttribute('transform', `translate(${peer.cursor.x} ${peer.cursor.y})`);
    }
  }

  renderPeople() {
    const box = $('people');
    const users = [this.client.userId, ...this.client.peers.keys()].filter(Boolean);
    const key = users.join('\n');
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren(...users.map((user, i) => {
      const a = document.createElement('span');
      a.className = i === 0 ? 'avatar me' : 'avatar';
      a.style.setProperty('--c', colorOf(user));
      a.textContent = user.slice(0, 1);
      a.title = i === 0 ? `${user} (you)` : user;
      a.dataset.user = user;
      return a;
    }));
  }

  renderStatus() {
    const { status, pending, version } = this.client;
    const box = $('conn');
    box.dataset.status = status;
    const waiting = pending.length;
    const text = {
      idle: 'Starting…',
      connecting: 'Connecting…',
      syncing: 'Syncing…',
      online: 'Live',
      offline: waiting ? `Offline · ${waiting} pending` : 'Offline · reconnecting',
      closed: 'Closed',
    }[status];
    box.querySelector('.conn-text').textContent = status === 'online' ? `${text} · v${version}` : text;
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

  // ------------------------------------------------------------ outcomes

  onRevert({ command, error }) {
    if ((command.type === 'UNDO' || command.type === 'REDO') && error.code === 'INVALID') {
      toast(capitalize(error.message ?? 'nothing to do'), '', 'info');
      return;
    }
    const action = describe(command);
    toast(`${action} was rolled back`, `${capitalize(this.named(error.message ?? error.code))}.`, 'warn');
  }

  onConflict({ field, clientValue, serverValue, strategy }) {
    const [, kind, id, ...rest] = String(field).split('/');
    const what = kind === 'nodes' ? `“${this.labels.get(id) ?? id}” (${rest.join('.') || 'node'})` : String(field);
    const kept = strategy === 'CLIENT_WINS' || strategy === 'LAST_WRITE_WINS'
      ? `Your ${short(clientValue)} replaced ${short(serverValue)}.`
      : `Kept ${short(serverValue)}; yours was ${short(clientValue)}.`;
    toast(`Conflict on ${what}`, kept, 'warn');
  }

  /** The server's message with node ids replaced by the names people saw. */
  named(message) {
    return String(message).replace(/\bnode (\S+)/g, (m, id) => (this.labels.has(id) ? `node “${this.labels.get(id)}”` : m));
  }

  // ------------------------------------------------------------ editing

  select(selection) {
    const same = selection?.kind === this.selection?.kind && selection?.id === this.selection?.id;
    this.selection = selection;
    if (!same) this.client.setPresence({ selection: selection ? [selection.id] : [] });
    this.render();
  }

  addNode(at) {
    if (this.readOnly) return;
    const id = this.client.createNode({
      type: 'default',
      position: { x: Math.round(at.x), y: Math.round(at.y) },
      data: { label: `Node ${this.nextNumber()}` },
    });
    this.select({ kind: 'node', id });
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

  deleteSelection() {
    if (this.readOnly || !this.selection) return;
    const { kind, id } = this.selection;
    if (kind === 'node') this.client.deleteNode(id);
    else this.client.deleteEdge(id);
    this.select(null);
  }

  connect(source, target) {
    if (source === target) return;
    const exists = [...this.client.view.edges.values()].some((e) => e.source === source && e.target === target);
    if (!exists) this.client.createEdge({ source, target, type: 'default' });
  }

  startRename(id) {
    const node = this.client.view.nodes.get(id);
    if (!node || this.readOnly) return;
    const input = $('rename');
    const { x, y, w, h } = this.boxOf(node);
    Object.assign(input.style, {
      left: `${x + this.pan.x - Math.max(w, 150) / 2}px`,
      top: `${y + this.pan.y - h / 2}px`,
      width: `${Math.max(w, 150)}px`,
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
    };
    input.onkeydown = (e) => {
      if (e.key === 'Enter') finish(true);
      if (e.key === 'Escape') finish(false);
      e.stopPropagation();
    };
    input.onblur = () => finish(true);
  }

  // ------------------------------------------------------------ input

  /** Pointer position in graph coordinates. */
  toWorld(event) {
    const r = this.svg.getBoundingClientRect();
    return { x: event.clientX - r.left - this.pan.x, y: event.clientY - r.top - this.pan.y };
  }

  bindPointer() {
    const svg = this.svg;
    svg.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      const at = this.toWorld(e);
      const nodeEl = e.target.closest('.node');
      const edgeEl = e.target.closest('.edge');
      if (nodeEl && e.target.classList.contains('node-handle') && !this.readOnly) {
        this.gesture = { kind: 'link', source: nodeEl.dataset.id };
        svg.classList.add('linking');
      } else if (nodeEl) {
        const id = nodeEl.dataset.id;
        this.select({ kind: 'node', id });
        const node = this.client.view.nodes.get(id);
        const p = positionOf(node);
        this.gesture = this.readOnly ? null
          : { kind: 'drag', id, offset: { x: at.x - p.x, y: at.y - p.y }, at: p, sentAt: 0, sent: p, moved: false };
      } else if (edgeEl) {
        this.select({ kind: 'edge', id: edgeEl.dataset.id });
      } else {
        this.gesture = { kind: 'pan', from: { x: e.clientX, y: e.clientY }, pan: { ...this.pan }, moved: false };
      }
      if (this.gesture) svg.setPointerCapture(e.pointerId);
    });

    svg.addEventListener('pointermove', (e) => {
      const at = this.toWorld(e);
      this.client.setPresence({ cursor: { x: Math.round(at.x), y: Math.round(at.y) } });
      const g = this.gesture;
      if (!g) return;
      if (g.kind === 'drag') {
        g.at = { x: Math.round(at.x - g.offset.x), y: Math.round(at.y - g.offset.y) };
        g.moved = true;
        if (performance.now() - g.sentAt >= DRAG_SEND_MS) this.sendDrag(g);
        this.render();
      } else if (g.kind === 'link') {
        const source = this.client.view.nodes.get(g.source);
        if (!source) return;
        const box = this.boxOf(source);
        setAttrs($('link-preview'), { x1: box.x + box.w / 2, y1: box.y, x2: at.x, y2: at.y, visibility: 'visible' });
      } else if (g.kind === 'pan') {
        this.pan = { x: g.pan.x + e.clientX - g.from.x, y: g.pan.y + e.clientY - g.from.y };
        g.moved ||= Math.abs(e.clientX - g.from.x) + Math.abs(e.clientY - g.from.y) > 3;
        svg.classList.toggle('panning', g.moved);
        this.render();
      }
    });

    const end = (e) => {
      const g = this.gesture;
      this.gesture = null;
      if (!g) return;
      if (g.kind === 'drag') {
        if (g.moved) this.sendDrag(g);
      } else if (g.kind === 'link') {
        $('link-preview').setAttribute('visibility', 'hidden');
        svg.classList.remove('linking');
        const under = document.elementFromPoint(e.clientX, e.clientY)?.closest('.node');
        if (under && e.type === 'pointerup') this.connect(g.source, under.dataset.id);
      } else if (g.kind === 'pan') {
        svg.classList.remove('panning');
        if (!g.moved) this.select(null);
      }
      this.render();
    };
    svg.addEventListener('pointerup', end);
    svg.addEventListener('pointercancel', end);
    svg.addEventListener('pointerleave', () => this.client.setPresence({ cursor: null }));

    svg.addEventListener('dblclick', (e) => {
      // Pointer capture retargets the click events to the svg itself: ask
      // what is really under the pointer.
      const under = document.elementFromPoint(e.clientX, e.clientY);
      const nodeEl = under?.closest('.node');
      if (nodeEl) this.startRename(nodeEl.dataset.id);
      else if (!under?.closest('.edge')) this.addNode(this.toWorld(e));
    });
  }

  sendDrag(g) {
    if (g.at.x === g.sent.x && g.at.y === g.sent.y) return;
    this.client.moveNode(g.id, g.at);
    g.sent = g.at;
    g.sentAt = performance.now();
  }

  bindKeys() {
    document.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || this.readOnly) return;
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      if (mod && key === 'z') {
        e.preventDefault();
        if (e.shiftKey) this.client.redo();
        else this.client.undo();
      } else if (mod && key === 'y') {
        e.preventDefault();
        this.client.redo();
      } else if (e.key === 'Delete' || e.key === 'Backspace') {
        e.preventDefault();
        this.deleteSelection();
      } else if (e.key === 'Escape') {
        this.select(null);
      }
    });
  }

  bindToolbar() {
    $('add-node').addEventListener('click', () => {
      const r = this.svg.getBoundingClientRect();
      const jitter = () => Math.round((Math.random() - 0.5) * 120);
      this.addNode({ x: r.width / 2 - this.pan.x + jitter(), y: r.height / 2 - this.pan.y + jitter() });
    });
    $('undo').addEventListener('click', () => this.client.undo());
    $('redo').addEventListener('click', () => this.client.redo());
    $('delete').addEventListener('click', () => this.deleteSelection());
  }
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
