// The demo editor's service worker: keeps the page's own files so a reload
// works without a network (the graph itself comes from the device store).
// Network first, so a running server always serves its current files; the
// cache answers only when the network does not. The API, the socket and
// anything of another origin are never touched.

const CACHE = 'graphq-editor-v1';
const SHELL = ['/', '/editor.js', '/editor.css', '/graphq-client.js', '/device-store.js', '/graphq-sse.js'];
/** Paths that are not files of the page. */
const LIVE = new Set(['/ws', '/healthz', '/readyz', '/metrics']);

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/api/') || LIVE.has(url.pathname)) return;
  event.respondWith(fetch(request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      // Kept by path: the page is one file whatever its query (?graph=…&token=…).
      caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
    }
    return response;
  }, async () => {
    return (await caches.match(url.pathname)) ?? Response.error();
  }));
});
