/*
 * Switchboard web widget: lets an anonymous website visitor chat with a responder.
 *
 * Embed with one tag (see README.md):
 *   <script src="https://SWITCHBOARD/widget/switchboard-widget.js"
 *           data-switchboard-url="https://SWITCHBOARD" data-title="Chat with us"
 *           data-color="#2b6cb0" defer></script>
 *
 * Plain ES2020, no dependencies. This file is the source: `scripts/widget.sh build` minifies
 * it (esbuild, no bundling, no runtime added) into dist/switchboard-widget.min.js, which is
 * what Switchboard serves. A conversation is a Matrix room: the visitor is a Matrix user (a
 * guest, or in "accounts"/"proxied" mode a visitor user Switchboard provisions) who talks to the
 * homeserver directly; Switchboard only creates the room (POST /api/v1/conversations) and
 * bridges it to the responders.
 *
 * Layout of this file:
 *   1. options        - read the <script> tag's data attributes
 *   2. http/api       - fetch wrapper with Matrix-style errors, Switchboard + Matrix calls
 *   3. store          - the visitor session in memory + sessionStorage (docs/widget.md)
 *   4. view           - DOM inside a shadow root; plain bodies via textContent, formatted
 *                       bodies only through the allow-list sanitiser (sanitizeHtml)
 *   5. conversation   - start, send (with stable txnIds), typing, sync loop, event handling
 *   6. boot + test hook (window.SwitchboardWidget)
 */
(function () {
  'use strict';

  // Including the tag twice (or an SPA re-inserting it) must not create two widgets.
  if (window.SwitchboardWidget) return;

  // document.currentScript is only set while this script is being executed
  // synchronously, so it has to be captured before anything asynchronous happens.
  const scriptEl = document.currentScript || findOwnScript();

  const SESSION_KEY = 'switchboard.session';
  const SYNC_TIMEOUT_MS = 30000;
  const BACKOFF_START_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SEND_ATTEMPTS = 6;
  const DEFAULT_COLOR = '#2b6cb0';
  // Typing notifications: we tell Switchboard while the visitor types, renewing at most every
  // TYPING_RENEW_MS, and say they stopped TYPING_TIMEOUT_MS after the last key.
  const TYPING_TIMEOUT_MS = 5000;
  const TYPING_RENEW_MS = 3000;
  // Switchboard's bot keeps this state event current in every conversation room.
  const CONVERSATION_EVENT = 'org.switchboard.conversation';

  // ---------------------------------------------------------------------------
  // 1. options
  // ---------------------------------------------------------------------------

  function findOwnScript() {
    // Fallback for environments without currentScript: the last matching tag.
    const all = document.querySelectorAll('script[src*="switchboard-widget"]');
    return all.length ? all[all.length - 1] : null;
  }

  function readOptions(el) {
    const data = (el && el.dataset) || {};
    let base = (data.switchboardUrl || '').trim();
    if (!base && el && el.src) {
      // Served as {switchboard}/widget/switchboard-widget.js: the API lives at the same
      // origin. Keeping any path prefix in front of /widget/ lets a reverse proxy mount
      // Switchboard under a sub-path; in the normal case this is just the origin.
      const src = new URL(el.src, location.href);
      const idx = src.pathname.lastIndexOf('/widget/');
      base = src.origin + (idx > 0 ? src.pathname.slice(0, idx) : '');
    }
    if (!base) base = location.origin;
    const color = (data.color || '').trim();
    return {
      baseUrl: base.replace(/\/+$/, ''),
      title: (data.title || '').trim() || 'Chat with us',
      // Validate so an arbitrary attribute value never ends up in our CSS.
      color: color && window.CSS && CSS.supports('color', color) ? color : DEFAULT_COLOR,
    };
  }

  const options = readOptions(scriptEl);

  // ---------------------------------------------------------------------------
  // 2. http / api
  // ---------------------------------------------------------------------------

  /** An HTTP failure. status 0 means the request never got an answer (network, timeout). */
  class ApiError extends Error {
    constructor(status, body, fallback) {
      const text = body && typeof body.error === 'string' && body.error ? body.error : fallback;
      super(text);
      this.name = 'ApiError';
      this.status = status;
      this.errcode = (body && typeof body.errcode === 'string' && body.errcode) || null;
      this.retryAfterMs =
        body && Number.isFinite(body.retry_after_ms) ? Math.max(0, body.retry_after_ms) : null;
    }
  }

  function abortError() {
    const e = new Error('aborted');
    e.name = 'AbortError';
    return e;
  }

  const isAbort = (err) => err && err.name === 'AbortError';
  // Worth retrying as is: no answer, server trouble, or rate limited.
  const isTransient = (err) =>
    err instanceof ApiError && (err.status === 0 || err.status >= 500 || err.status === 429);
  // The guest token is gone (expired, logged out, guest access switched off): no retry
  // can help, the visitor has to start over.
  const isSessionDead = (err) =>
    err instanceof ApiError &&
    (err.status === 401 ||
      (err.status === 403 &&
        (err.errcode === 'M_UNKNOWN_TOKEN' || err.errcode === 'M_GUEST_ACCESS_FORBIDDEN')));

  /**
   * fetch + JSON with a timeout and an optional outer AbortSignal. Throws ApiError on
   * any non-2xx answer, carrying the Matrix-style {errcode, error, retry_after_ms}.
   * The token goes in the Authorization header only, never in the URL (URLs end up in
   * logs and Referer headers).
   */
  async function requestJson(url, opts) {
    const { method = 'GET', token = null, body, signal = null, timeoutMs = 20000 } = opts || {};
    if (signal && signal.aborted) throw abortError();
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = 'Bearer ' + token;
    try {
      let res;
      let text;
      try {
        res = await fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: ctrl.signal,
          // No cookies: the guest token is the only credential, and omitting them keeps
          // cross-origin requests simple for the server's CORS configuration.
          credentials: 'omit',
          cache: 'no-store',
        });
        text = await res.text();
      } catch (e) {
        if (signal && signal.aborted) throw abortError();
        throw new ApiError(0, null, 'Could not reach the chat service.');
      }
      let json = null;
      if (text) {
        try {
          json = JSON.parse(text);
        } catch (e) {
          json = null;
        }
      }
      if (!res.ok) {
        const err = new ApiError(res.status, json, 'The chat service answered ' + res.status + '.');
        if (err.status === 429 && err.retryAfterMs === null) {
          const header = Number(res.headers.get('Retry-After'));
          if (Number.isFinite(header) && header >= 0) err.retryAfterMs = header * 1000;
        }
        throw err;
      }
      return json || {};
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }

  const enc = encodeURIComponent;

  const switchboardApi = {
    config: () => requestJson(options.baseUrl + '/api/v1/config'),
    createConversation: (token, topic) =>
      requestJson(options.baseUrl + '/api/v1/conversations', {
        method: 'POST',
        token,
        // The browser's language helps routing pick a responder who speaks it; it is a
        // preference everyone's browser sends to every site, so it identifies nobody.
        body: { topic, language: navigator.language || undefined },
      }),
    // "accounts" mode: Switchboard provisions a visitor user in its own namespace (the
    // homeserver has no guests) and answers {user_id, access_token, device_id, homeserver_url}.
    createVisitor: () =>
      requestJson(options.baseUrl + '/api/v1/visitors', { method: 'POST' }),
    // Typing goes through Switchboard, which passes it to whoever answers: Synapse refuses
    // m.typing from guests, and this way both visitor modes behave the same.
    typing: (token, roomId, typing) =>
      requestJson(options.baseUrl + '/api/v1/conversations/' + encodeURIComponent(roomId) + '/typing', {
        method: 'POST',
        token,
        body: { typing },
        timeoutMs: 10000,
      }),
    endConversation: (token, roomId) =>
      requestJson(options.baseUrl + '/api/v1/conversations/' + encodeURIComponent(roomId) + '/end', {
        method: 'POST',
        token,
      }),
  };

  // `s` is anything with {homeserver_url, access_token}; a session or a fresh guest.
  const matrixApi = {
    registerGuest: (hs) =>
      requestJson(hs + '/_matrix/client/v3/register?kind=guest', { method: 'POST', body: {} }),
    setDisplayName: (s, displayname) =>
      requestJson(s.homeserver_url + '/_matrix/client/v3/profile/' + enc(s.user_id) + '/displayname', {
        method: 'PUT',
        token: s.access_token,
        body: { displayname },
      }),
    join: (s, roomId) =>
      requestJson(s.homeserver_url + '/_matrix/client/v3/join/' + enc(roomId), {
        method: 'POST',
        token: s.access_token,
        body: {},
      }),
    send: (s, txnId, content, signal) =>
      requestJson(
        s.homeserver_url + '/_matrix/client/v3/rooms/' + enc(s.room_id) +
          '/send/m.room.message/' + enc(txnId),
        { method: 'PUT', token: s.access_token, body: content, signal },
      ),
    sync: (s, since, signal) => {
      // Only our conversation room, no presence, account data or receipts: keeps responses
      // small. Ephemeral events are limited to m.typing (the typing indicator).
      const filter = {
        room: {
          rooms: [s.room_id],
          timeline: { limit: 50 },
          ephemeral: { types: ['m.typing'] },
          account_data: { types: [] },
        },
        presence: { types: [] },
        account_data: { types: [] },
      };
      let url = s.homeserver_url + '/_matrix/client/v3/sync?timeout=' + SYNC_TIMEOUT_MS +
        '&filter=' + enc(JSON.stringify(filter));
      if (since) url += '&since=' + enc(since);
      // The server holds the request up to SYNC_TIMEOUT_MS; give it slack before we
      // decide the connection is dead.
      return requestJson(url, { token: s.access_token, signal, timeoutMs: SYNC_TIMEOUT_MS + 15000 });
    },
  };

  /** Exponential backoff: 1 s doubling to 30 s, with +-25% jitter so many clients do not retry in lockstep. */
  function backoffMs(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * Math.pow(2, Math.max(0, attempt - 1)));
    return Math.min(BACKOFF_MAX_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
  }

  // Sleeps end early when the browser comes back online, so a reconnect does not wait out
  // a 30 s backoff after the network returns.
  const wakers = new Set();
  // In-flight requests that should start over when connectivity changes either way.
  const connectivityWatchers = new Set();
  window.addEventListener('online', () => {
    wakers.forEach((wake) => wake());
    connectivityWatchers.forEach((abort) => abort());
  });
  window.addEventListener('offline', () => connectivityWatchers.forEach((abort) => abort()));

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) return reject(abortError());
      const done = () => {
        clearTimeout(timer);
        wakers.delete(done);
        if (signal) signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        done();
        reject(abortError());
      };
      const timer = setTimeout(done, ms);
      wakers.add(done);
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Retries idempotent calls on transient failures (honouring retry_after_ms). */
  async function withRetry(fn, attempts) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || attempt >= attempts) throw err;
        await sleep(err.retryAfterMs !== null ? err.retryAfterMs : backoffMs(attempt));
      }
    }
  }

  function normalizeHomeserver(url) {
    // The homeserver URL comes from our own config endpoint, but it is about to receive
    // the guest token: insist on a real http(s) URL.
    let u;
    try {
      u = new URL(url);
    } catch (e) {
      return null;
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return null;
    return (u.origin + u.pathname).replace(/\/+$/, '');
  }

  // ---------------------------------------------------------------------------
  // 3. store: the guest session
  // ---------------------------------------------------------------------------
  // Memory + sessionStorage, never localStorage or cookies (docs/widget.md, "Where the
  // token lives"): sessionStorage is scoped to this tab and dies with it, so the token is
  // not left behind for a later visitor of a shared computer, is never sent to any server
  // by the browser on its own, and is exposed to other scripts on the site for as short a
  // time as possible.

  const store = {
    load() {
      try {
        const s = JSON.parse(window.sessionStorage.getItem(SESSION_KEY) || 'null');
        const ok =
          s && typeof s === 'object' &&
          ['homeserver_url', 'user_id', 'access_token', 'room_id'].every(
            (k) => typeof s[k] === 'string' && s[k],
          );
        return ok ? s : null;
      } catch (e) {
        return null; // storage disabled or corrupt: behave as a first visit
      }
    },
    save(s) {
      try {
        window.sessionStorage.setItem(SESSION_KEY, JSON.stringify({
          homeserver_url: s.homeserver_url,
          user_id: s.user_id,
          access_token: s.access_token,
          device_id: s.device_id || null,
          room_id: s.room_id,
          since: s.since || null,
          topic: s.topic || null,
        }));
      } catch (e) {
        // Storage full or blocked: the chat still works, it just will not survive a reload.
      }
    },
    clear() {
      try {
        window.sessionStorage.removeItem(SESSION_KEY);
      } catch (e) {
        /* nothing to clear */
      }
    },
  };

  // ---------------------------------------------------------------------------
  // 4. view
  // ---------------------------------------------------------------------------

  // The states a visitor sees. `offline` covers both "we cannot reach the chat service"
  // and "nobody is available right now" (the text says which).
  const STATUS_TEXT = {
    idle: 'Choose a topic to start a conversation.',
    starting: 'Connecting…',
    waiting: 'Waiting for a responder…',
    connected: 'Connected',
    transferred: 'Transferring you to someone else…',
    offline: 'Connection lost. Reconnecting…',
    error: 'Something went wrong.',
    closed: 'This conversation has ended.',
  };
  const NOBODY_TEXT = "Nobody is available right now; we'll connect you as soon as someone is.";

  // Below 480 px the panel covers the visual viewport, from variables trackVisualViewport()
  // keeps current (see there why not `inset: 0`). The launcher has no tap highlight: a tap opens
  // the panel over it at once, and the highlight would be painted over the new panel's Send button.
  const CSS_TEXT = `
    .sb { all: initial; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
      color: #1a202c; --sb-accent: ${DEFAULT_COLOR}; }
    .sb *, .sb *::before, .sb *::after { box-sizing: border-box; }
    [hidden] { display: none !important; }
    button, select, textarea { font: inherit; color: inherit; margin: 0; }
    :focus-visible { outline: 2px solid var(--sb-accent); outline-offset: 2px; }
    .sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
      overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
      width: 56px; height: 56px; border-radius: 50%; border: 0; padding: 0; cursor: pointer;
      background: var(--sb-accent); color: #fff; display: flex; align-items: center;
      justify-content: center; box-shadow: 0 4px 14px rgba(0,0,0,.25);
      -webkit-tap-highlight-color: transparent; }
    .launcher:focus-visible { outline: 3px solid #1a202c; outline-offset: 3px; }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .badge { position: absolute; top: -4px; right: -4px; min-width: 20px; height: 20px;
      padding: 0 6px; border-radius: 10px; background: #c53030; color: #fff; font-size: 12px;
      line-height: 20px; text-align: center; }
    .panel { position: fixed; right: 20px; bottom: 88px; z-index: 2147483001;
      width: 370px; max-width: calc(100vw - 40px); height: 540px; max-height: calc(100vh - 108px);
      display: flex; flex-direction: column; background: #fff; border-radius: 12px;
      overflow: hidden; box-shadow: 0 10px 40px rgba(0,0,0,.3); }
    .header { display: flex; align-items: center; gap: 8px; padding: 10px 8px 10px 16px;
      background: var(--sb-accent); color: #fff; }
    .header h2 { flex: 1; margin: 0; font-size: 16px; font-weight: 600; }
    .close { width: 36px; height: 36px; border: 0; border-radius: 6px; background: transparent;
      color: #fff; font-size: 24px; line-height: 1; cursor: pointer; }
    .close:focus-visible { outline-color: #fff; outline-offset: -4px; }
    .end { min-height: 32px; padding: 4px 10px; border: 1px solid rgba(255,255,255,.7); border-radius: 6px;
      background: transparent; color: #fff; font-size: 13px; cursor: pointer; }
    .end:focus-visible { outline-color: #fff; outline-offset: 2px; }
    .picker { display: flex; flex-wrap: wrap; gap: 8px; padding: 12px 16px;
      border-bottom: 1px solid #e2e8f0; }
    .picker label { width: 100%; font-size: 13px; color: #4a5568; }
    .picker select { flex: 1; min-width: 0; min-height: 40px; padding: 6px 8px;
      border: 1px solid #cbd5e0; border-radius: 8px; background: #fff; }
    .log { flex: 1; overflow-y: auto; padding: 12px 16px; display: flex;
      flex-direction: column; gap: 6px; background: #f7fafc; }
    .msg { max-width: 80%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap;
      overflow-wrap: anywhere; }
    .body.html { white-space: normal; }
    .body.html > :first-child { margin-top: 0; }
    .body.html > :last-child { margin-bottom: 0; }
    .body p, .body ul, .body ol, .body blockquote, .body pre { margin: 4px 0; }
    .body ul, .body ol { padding-left: 20px; }
    .body blockquote { padding-left: 8px; border-left: 3px solid #cbd5e0; color: #4a5568; }
    .body code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
      background: rgba(0,0,0,.06); border-radius: 3px; padding: 0 3px; }
    .body pre { white-space: pre-wrap; background: rgba(0,0,0,.06); border-radius: 6px; padding: 6px; }
    .body pre code { background: none; padding: 0; }
    .body a { color: inherit; text-decoration: underline; }
    .msg.me { align-self: flex-end; background: var(--sb-accent); color: #fff;
      border-bottom-right-radius: 4px; }
    .msg.them { align-self: flex-start; background: #fff; border: 1px solid #e2e8f0;
      border-bottom-left-radius: 4px; }
    .msg.system { align-self: center; max-width: 90%; padding: 2px 8px; color: #4a5568;
      font-size: 13px; font-style: italic; text-align: center; }
    .msg.pending { opacity: .7; }
    .msg.failed { background: #fff5f5; color: #742a2a; border: 1px solid #feb2b2; }
    .name { display: block; margin-bottom: 2px; font-size: 12px; font-weight: 600; color: #4a5568; }
    .meta { display: block; margin-top: 2px; font-size: 11px; text-align: right; }
    .retry { margin-left: 6px; padding: 0 6px; border: 1px solid currentColor; border-radius: 4px;
      background: transparent; font-size: 11px; cursor: pointer; }
    .typing { min-height: 20px; padding: 2px 16px; font-size: 12px; font-style: italic;
      color: #4a5568; background: #f7fafc; }
    .status { min-height: 24px; padding: 4px 16px; border-top: 1px solid #e2e8f0;
      font-size: 12px; color: #4a5568; }
    .status[data-status="error"], .status[data-status="offline"] { color: #c53030; }
    .status[data-status="connected"] { color: #276749; }
    .composer { display: flex; gap: 8px; padding: 4px 12px 12px; }
    .composer textarea { flex: 1; min-width: 0; min-height: 40px; max-height: 120px; resize: none;
      padding: 8px 10px; border: 1px solid #cbd5e0; border-radius: 8px; font-size: 16px;
      background: #fff; }
    .primary { min-height: 40px; padding: 0 14px; border: 0; border-radius: 8px; cursor: pointer;
      background: var(--sb-accent); color: #fff; font-weight: 600; }
    .primary:disabled { opacity: .5; cursor: default; }
    @media (max-width: 480px) {
      .panel { left: var(--sb-vx, 0); top: var(--sb-vy, 0); right: auto; bottom: auto;
        width: var(--sb-vw, 100%); max-width: none; height: var(--sb-vh, 100%); max-height: none;
        border-radius: 0; }
      .header { padding-top: calc(10px + env(safe-area-inset-top, 0px)); }
      .composer { padding-bottom: calc(12px + env(safe-area-inset-bottom, 0px)); }
      .launcher { right: auto; bottom: auto;
        left: calc(var(--sb-vx, 0px) + var(--sb-vw, 100%) - 68px);
        top: calc(var(--sb-vy, 0px) + var(--sb-vh, 100%) - 68px - env(safe-area-inset-bottom, 0px)); }
    }
  `;

  /** Tiny element builder. Text is always set through textContent, never parsed as HTML. */
  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k === 'className') el.className = v;
      else if (k === 'hidden') el.hidden = true;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children || []) el.append(c);
    return el;
  }

  // --- the formatted-body sanitiser -------------------------------------------------
  //
  // Responders' messages may carry HTML (`format: org.matrix.custom.html`). It is parsed in
  // an inert document (DOMParser: no scripts run, nothing loads, no event handlers fire)
  // and rebuilt node by node in the live document from an allow-list: only these tags,
  // no attributes at all except a safe href on <a>. Untrusted HTML is never assigned to
  // innerHTML of anything in the page.

  const ALLOWED_TAGS = new Set([
    'B', 'STRONG', 'I', 'EM', 'U', 'S', 'CODE', 'PRE', 'BR', 'P', 'UL', 'OL', 'LI', 'BLOCKQUOTE', 'A',
  ]);
  // Dropped together with everything inside them (their text is not meant to be read).
  // mx-reply holds a reply's quoted fallback, which we do not show.
  const DROP_WITH_CONTENT = new Set([
    'SCRIPT', 'STYLE', 'TEMPLATE', 'IFRAME', 'OBJECT', 'EMBED', 'NOSCRIPT', 'SVG', 'MATH',
    'TITLE', 'HEAD', 'TEXTAREA', 'SELECT', 'MX-REPLY',
  ]);
  const SAFE_LINK = /^(https?:|mailto:)$/;
  const MAX_DEPTH = 32;

  function safeHref(raw) {
    if (typeof raw !== 'string') return null;
    let u;
    try {
      u = new URL(raw.trim()); // absolute URLs only: no relative or scheme-less links
    } catch (e) {
      return null;
    }
    return SAFE_LINK.test(u.protocol) ? u.href : null;
  }

  /** Untrusted HTML -> a DocumentFragment of the live document with allowed nodes only. */
  function sanitizeHtml(html) {
    const out = document.createDocumentFragment();
    if (typeof html !== 'string' || !html) return out;
    let parsed;
    try {
      parsed = new DOMParser().parseFromString(html, 'text/html');
    } catch (e) {
      return out;
    }
    copyChildren(parsed.body, out, 0);
    return out;
  }

  function copyChildren(from, to, depth) {
    for (const node of Array.from(from.childNodes)) {
      if (node.nodeType === 3) {
        to.append(document.createTextNode(node.nodeValue));
        continue;
      }
      if (node.nodeType !== 1) continue; // comments, processing instructions...
      const tag = node.tagName.toUpperCase();
      if (DROP_WITH_CONTENT.has(tag)) continue;
      if (!ALLOWED_TAGS.has(tag) || depth >= MAX_DEPTH) {
        // Unknown but harmless wrappers (span, font, div, h1...): keep their text.
        if (depth < MAX_DEPTH) copyChildren(node, to, depth + 1);
        else to.append(document.createTextNode(node.textContent || ''));
        continue;
      }
      let href = null;
      if (tag === 'A') {
        href = safeHref(node.getAttribute('href'));
        if (!href) {
          copyChildren(node, to, depth + 1); // a link to nowhere safe is just its text
          continue;
        }
      }
      const el = document.createElement(tag.toLowerCase());
      if (href) {
        el.setAttribute('href', href);
        el.setAttribute('target', '_blank');
        el.setAttribute('rel', 'noopener noreferrer');
      }
      if (tag !== 'BR') copyChildren(node, el, depth + 1);
      to.append(el);
    }
  }

  function chatIcon() {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z');
    svg.append(path);
    return svg;
  }

  /** Builds the DOM once; returns the elements the controller updates. */
  function buildView() {
    const host = document.createElement('div');
    host.setAttribute('data-switchboard-widget', '');
    // Inline !important beats page rules like `div { padding: 2em }`, so the host box
    // itself cannot be restyled; everything visible lives inside the shadow root.
    host.style.cssText = 'all: initial !important;';
    // An open root: page CSS still cannot reach in, and browser tests (Playwright's
    // selectors pierce open shadow roots) can drive the real controls. A closed root
    // would not protect the token anyway: any script on the page can wrap fetch.
    const root = host.attachShadow({ mode: 'open' });

    // A constructed stylesheet is not an inline <style>, so the widget also works on pages
    // whose CSP has no style-src 'unsafe-inline'; older browsers get a <style> element.
    let style = null;
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS_TEXT);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      style = document.createElement('style');
      style.textContent = CSS_TEXT;
    }

    const badge = h('span', { className: 'badge', 'aria-hidden': 'true', hidden: true });
    const launcher = h('button', {
      type: 'button',
      className: 'launcher',
      'aria-label': options.title,
      'aria-expanded': 'false',
      'aria-controls': 'sb-panel',
      'aria-haspopup': 'dialog',
    }, [chatIcon(), badge]);

    const closeBtn = h('button', {
      type: 'button', className: 'close', 'aria-label': 'Close chat', text: '×',
    });
    // Ends the conversation for good (the responder is told); closing the panel does not.
    const endBtn = h('button', {
      type: 'button', className: 'end', 'aria-label': 'End conversation', text: 'End',
      hidden: true, // only while there is a conversation to end
    });
    const header = h('div', { className: 'header' }, [
      h('h2', { id: 'sb-title', text: options.title }),
      endBtn,
      closeBtn,
    ]);

    const topicSelect = h('select', { id: 'sb-topic', name: 'topic' }, [
      h('option', { value: '', text: 'Loading…', disabled: true }),
    ]);
    const startBtn = h('button', { type: 'button', className: 'primary', text: 'Start chat' });
    const picker = h('div', { className: 'picker' }, [
      h('label', { for: 'sb-topic', text: 'What can we help you with?' }),
      topicSelect,
      startBtn,
    ]);

    const log = h('div', {
      className: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation',
      tabindex: '0',
    });
    // Not a live region: announcing every start and stop of typing would drown the messages.
    const typing = h('div', { className: 'typing', id: 'sb-typing' });
    const status = h('div', { className: 'status', id: 'sb-status', role: 'status', 'aria-live': 'polite' });
    const input = h('textarea', {
      id: 'sb-input', rows: '1', 'aria-label': 'Your message',
      placeholder: 'Type your message…', maxlength: '4000',
    });
    const sendBtn = h('button', { type: 'submit', className: 'primary', text: 'Send' });
    const composer = h('form', { className: 'composer', 'aria-label': 'Send a message' }, [
      input, sendBtn,
    ]);

    const panel = h('div', {
      id: 'sb-panel', className: 'panel', role: 'dialog', 'aria-labelledby': 'sb-title',
      'aria-describedby': 'sb-status', hidden: true,
    }, [header, picker, log, typing, status, composer]);

    const wrapper = h('div', { className: 'sb' }, [launcher, panel]);
    wrapper.style.setProperty('--sb-accent', options.color);
    trackVisualViewport(wrapper);
    if (style) root.append(style);
    root.append(wrapper);
    document.body.append(host);

    return { host, launcher, badge, panel, closeBtn, endBtn, picker, topicSelect, startBtn, log, typing, status, composer, input, sendBtn };
  }

  /**
   * On a phone the panel must cover what the visitor sees, which is the visual viewport; but
   * `position: fixed` places it in the layout viewport, and the two differ: when the host page
   * is wider than the screen (mobile Chromium then widens the layout viewport to the page, so
   * `inset: 0` made a 391 x 751 panel on a 375 x 720 phone, its right and bottom edges off
   * screen), when the on-screen keyboard is up (it shrinks only the visual viewport, and would
   * cover the message box) and while the visitor has zoomed or panned. So the narrow-screen
   * CSS places the panel and the launcher from these four numbers, kept current here. Without
   * visualViewport the CSS falls back to the layout viewport.
   */
  function trackVisualViewport(wrapper) {
    const vv = window.visualViewport;
    if (!vv) return;
    const update = () => {
      wrapper.style.setProperty('--sb-vx', vv.offsetLeft + 'px');
      wrapper.style.setProperty('--sb-vy', vv.offsetTop + 'px');
      wrapper.style.setProperty('--sb-vw', vv.width + 'px');
      wrapper.style.setProperty('--sb-vh', vv.height + 'px');
    };
    vv.addEventListener('resize', update);
    vv.addEventListener('scroll', update);
    update();
  }

  // ---------------------------------------------------------------------------
  // 5. conversation
  // ---------------------------------------------------------------------------

  const state = {
    status: 'idle',
    session: null,          // {homeserver_url, user_id, access_token, device_id, room_id, since, topic}
    sessionCtrl: null,      // aborts the sync loop and pending sends when the session ends
    config: null,           // {homeserver_url, topics, visitor_mode: 'guest'|'accounts'|'proxied'}
    configPromise: null,
    draftGuest: null,       // visitor user made but no conversation yet: reused on retry
    starting: null,         // promise while a conversation is being created
    startHoldUntil: 0,      // rate limited by Switchboard: no new attempt before this time
    conversationOver: false,
    // {localId, eventId, txnId, senderId, kind: 'me'|'them'|'system', body, name, pending,
    //  failed, retryable, local (typed here), echoed (seen in sync), el, bodyEl, metaEl}
    messages: [],
    seenEventIds: new Set(),
    byTxn: new Map(),       // txnId -> local message, to match the echo from sync
    names: new Map(),       // user_id -> display name (from m.room.member)
    // Who counts as a responder (status 'connected'): another user who joined after the
    // visitor did, or who sent a non-notice message, and has not left since. The bot and
    // anyone it pre-invited joined before the visitor, so they do not count.
    responders: new Set(),
    memberships: new Map(), // user_id -> last known membership
    afterMyJoin: false,     // timeline position is past the visitor's own join
    myMembership: null,
    // The bot's org.switchboard.conversation state event content, once seen:
    // {state, responder, transfers, nobody_available}. Absent: the member heuristics decide.
    conv: null,
    typingUsers: [],        // other users typing right now (from m.typing)
    typingOut: { active: false, sentAt: 0, disabled: false, idleTimer: null },
    outbox: [],
    sending: false,
    open: false,
    unread: 0,
  };

  let view = null;
  let txnCounter = 0;
  let localCounter = 0;

  // --- status -----------------------------------------------------------------

  function setStatus(status, text) {
    state.status = status;
    if (!view) return;
    view.status.textContent = text || STATUS_TEXT[status] || '';
    view.status.setAttribute('data-status', status);
  }

  function hasResponder() {
    return state.responders.size > 0;
  }

  const isMe = (user) => !!state.session && user === state.session.user_id;

  /** [status, text] for the conversation as the bot's state event (or the members) say. */
  function conversationStatus() {
    const c = state.conv;
    if (c) {
      const who = typeof c.responder === 'string' && c.responder.trim() ? c.responder.trim() : null;
      const transfers = Number.isFinite(c.transfers) ? c.transfers : 0;
      switch (c.state) {
        case 'queued':
          return c.nobody_available ? ['offline', NOBODY_TEXT] : ['waiting'];
        case 'offered':
          return ['waiting'];
        case 'transferring':
          return ['transferred'];
        case 'active':
          if (transfers > 0) {
            return ['transferred', who ? 'Now talking with ' + who : 'Now talking with someone else'];
          }
          return ['connected', who ? 'Connected with ' + who : null];
        case 'closed':
          return ['closed'];
        default:
          break; // a state from a newer Switchboard: fall back to the members
      }
    }
    return hasResponder() ? ['connected'] : ['waiting'];
  }

  function refreshConversationStatus() {
    if (!state.session) return;
    const [status, text] = conversationStatus();
    setStatus(status, text);
  }

  // --- panel ------------------------------------------------------------------

  function openPanel() {
    state.open = true;
    view.panel.hidden = false;
    view.launcher.setAttribute('aria-expanded', 'true');
    state.unread = 0;
    renderBadge();
    if (!state.session) {
      showPicker(true);
      loadConfig().catch(() => {}); // errors are shown in the status line by loadConfig
    }
    scrollToBottom(true);
    // Focus after the panel is displayed, otherwise focus() on a hidden element is a no-op.
    // The input, not the topic list: typing a first message starts with the selected topic.
    requestAnimationFrame(() => view.input.focus());
  }

  function closePanel() {
    sendTyping(false);
    state.open = false;
    view.panel.hidden = true;
    view.launcher.setAttribute('aria-expanded', 'false');
    view.launcher.focus();
  }

  function renderBadge() {
    view.badge.hidden = state.unread === 0;
    view.badge.textContent = state.unread > 9 ? '9+' : String(state.unread);
    view.launcher.setAttribute(
      'aria-label',
      state.unread ? options.title + ' (' + state.unread + ' new)' : options.title,
    );
  }

  function showPicker(show) {
    view.picker.hidden = !show;
  }

  // --- config / topics ----------------------------------------------------------

  function loadConfig() {
    if (state.config) return Promise.resolve(state.config);
    if (!state.configPromise) {
      state.configPromise = withRetry(() => switchboardApi.config(), 3)
        .then((cfg) => {
          const hs = normalizeHomeserver(cfg.homeserver_url);
          if (!hs) throw new ApiError(500, null, 'The chat service is misconfigured.');
          const topics = (Array.isArray(cfg.topics) ? cfg.topics : []).filter(
            (t) => t && typeof t.id === 'string' && t.id,
          );
          state.config = {
            homeserver_url: hs,
            topics,
            visitor_mode: ['accounts', 'proxied'].includes(cfg.visitor_mode) ? cfg.visitor_mode : 'guest',
          };
          renderTopics(topics);
          return state.config;
        })
        .catch((err) => {
          state.configPromise = null; // allow a later retry
          if (!state.session) setStatus('error', err.message);
          throw err;
        });
    }
    return state.configPromise;
  }

  function renderTopics(topics) {
    const sel = view.topicSelect;
    sel.textContent = '';
    for (const t of topics) {
      sel.append(h('option', { value: t.id, text: typeof t.name === 'string' && t.name ? t.name : t.id }));
    }
    if (!topics.length) {
      sel.append(h('option', { value: '', text: 'No topics available', disabled: true }));
      if (!state.session) setStatus('error', 'Chat is not available right now.');
    } else if (!state.session && state.status !== 'starting') {
      setStatus(state.conversationOver ? 'closed' : 'idle');
    }
    sel.selectedIndex = 0;
    mark('switchboard:topics');
  }

  // --- messages -----------------------------------------------------------------

  function displayNameFor(user) {
    const name = state.names.get(user);
    // Never reveal the other side's Matrix ID (it can name the bridge, the network or
    // the person): no usable display name means a generic label.
    if (!name || name.startsWith('@') || name === user) return 'Responder';
    return name;
  }

  /**
   * Appends a message. Messages from sync go before our own messages whose echo has not
   * come back yet: the visitor's bubble is shown the moment it is typed, but events the
   * room had before it (e.g. the bot's welcome notice on a new conversation) belong above
   * it. Sync delivers events in room order, so this keeps the list in room order.
   */
  function addMessage(msg) {
    msg.localId = ++localCounter;
    const nearBottom = isNearBottom();
    const el = renderMessage(msg);
    const idx = msg.local ? -1 : state.messages.findIndex((m) => m.local && !m.echoed);
    if (idx === -1) {
      state.messages.push(msg);
      view.log.append(el);
    } else {
      view.log.insertBefore(el, state.messages[idx].el);
      state.messages.splice(idx, 0, msg);
    }
    scrollToBottom(nearBottom || msg.kind === 'me');
    return msg;
  }

  function addSystemNotice(text) {
    addMessage({
      eventId: null, txnId: null, senderId: null, kind: 'system', body: text, pending: false,
      failed: false,
    });
  }

  /**
   * Builds a message's element once. Plain bodies go through textContent; a formatted body
   * (others' messages only) goes through sanitizeHtml. Later changes (sent, failed,
   * edited) update the parts in place, so the live region does not announce the whole
   * message again.
   */
  function renderMessage(msg) {
    const el = h('div', {});
    if (msg.kind === 'me') {
      el.append(h('span', { className: 'sr-only', text: 'You: ' }));
    } else if (msg.kind === 'them') {
      el.append(h('span', { className: 'name', text: msg.name }));
    }
    msg.bodyEl = h('span', { className: 'body' });
    msg.metaEl = h('span', { className: 'meta', hidden: true });
    el.append(msg.bodyEl, msg.metaEl);
    msg.el = el;
    updateMessage(msg);
    return el;
  }

  function updateMessage(msg) {
    if (!msg.el) return;
    msg.el.className = 'msg ' + msg.kind + (msg.pending ? ' pending' : '') + (msg.failed ? ' failed' : '');
    fillBody(msg);
    const meta = msg.metaEl;
    meta.textContent = '';
    meta.hidden = !msg.pending && !msg.failed;
    if (msg.failed) {
      meta.append('Not sent.');
      if (msg.retryable !== false) {
        const retry = h('button', { type: 'button', className: 'retry', text: 'Retry' });
        retry.addEventListener('click', () => retrySend(msg));
        meta.append(retry);
      }
    } else if (msg.pending) {
      meta.append('Sending…');
    }
  }

  function fillBody(msg) {
    const shown = msg.body + '\u0000' + (msg.html || '');
    if (msg.shown === shown) return;
    msg.shown = shown;
    const el = msg.bodyEl;
    el.textContent = '';
    const frag = msg.html ? sanitizeHtml(msg.html) : null;
    if (frag && frag.textContent.trim()) {
      el.className = 'body html';
      el.append(frag);
    } else {
      // No formatting, or nothing left of it: the plain body, as text.
      el.className = 'body';
      el.textContent = msg.body;
    }
  }

  function isNearBottom() {
    const log = view.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  }

  function scrollToBottom(force) {
    if (force) view.log.scrollTop = view.log.scrollHeight;
  }

  function clearConversationView() {
    state.messages = [];
    state.seenEventIds = new Set();
    state.byTxn = new Map();
    state.names = new Map();
    state.responders = new Set();
    state.memberships = new Map();
    state.afterMyJoin = false;
    state.myMembership = null;
    state.outbox = [];
    state.conversationOver = false;
    state.conv = null;
    state.typingUsers = [];
    view.log.textContent = '';
    renderTyping();
  }

  // --- sending --------------------------------------------------------------------

  function newTxnId() {
    // Generated once per message and kept with it: retries reuse it, so the homeserver
    // deduplicates a send whose response was lost instead of posting it twice.
    txnCounter += 1;
    return 'sbw-' + Date.now() + '-' + txnCounter;
  }

  function submitText(raw) {
    const body = raw.replace(/^\s+|\s+$/g, '');
    if (!body) return false;
    if (!state.session && !state.starting && state.conversationOver) clearConversationView();
    const msg = addMessage({
      eventId: null, txnId: newTxnId(), senderId: null, kind: 'me', body, pending: true,
      failed: false, local: true, echoed: false,
    });
    state.byTxn.set(msg.txnId, msg);
    state.outbox.push(msg);
    if (state.session) {
      flushOutbox();
    } else {
      // The first message starts the conversation with the selected topic.
      ensureStarted().then(flushOutbox, () => failOutbox());
    }
    return true;
  }

  function retrySend(msg) {
    if (!msg.failed || msg.retryable === false) return;
    msg.failed = false;
    msg.pending = true;
    updateMessage(msg);
    state.outbox.push(msg);
    if (state.session) flushOutbox();
    else ensureStarted().then(flushOutbox, () => failOutbox());
  }

  function failOutbox() {
    for (const msg of state.outbox) {
      msg.pending = false;
      msg.failed = true;
      updateMessage(msg);
    }
    state.outbox = [];
  }

  /** Sends queued messages one at a time so they arrive in the order they were typed. */
  async function flushOutbox() {
    if (state.sending || !state.session) return;
    state.sending = true;
    try {
      while (state.outbox.length && state.session) {
        const msg = state.outbox.shift();
        await deliver(msg, state.session, state.sessionCtrl.signal);
      }
    } finally {
      state.sending = false;
    }
  }

  async function deliver(msg, session, signal) {
    for (let attempt = 1; ; attempt++) {
      if (!msg.pending) return; // the echo from sync already confirmed it
      try {
        const res = await matrixApi.send(session, msg.txnId, { msgtype: 'm.text', body: msg.body }, signal);
        // The echo from sync is matched to this message by txnId or by this event ID.
        if (typeof res.event_id === 'string' && !msg.eventId) msg.eventId = res.event_id;
        msg.pending = false;
        msg.failed = false;
        updateMessage(msg);
        return;
      } catch (err) {
        if (isAbort(err) || session !== state.session) return;
        if (isSessionDead(err)) {
          sessionInvalid();
          return;
        }
        // No answer at all (offline): keep the message pending and keep trying, with
        // backoff, for as long as the session lasts; the same txnId makes it land once.
        if (isTransient(err) && (attempt < SEND_ATTEMPTS || err.status === 0)) {
          try {
            await sleep(err.retryAfterMs !== null ? err.retryAfterMs : backoffMs(attempt), signal);
          } catch (e) {
            return; // session ended while waiting
          }
          continue;
        }
        msg.pending = false;
        msg.failed = true;
        updateMessage(msg);
        return;
      }
    }
  }

  // --- starting a conversation ------------------------------------------------------

  function ensureStarted() {
    if (state.session) return Promise.resolve(state.session);
    if (!state.starting) {
      state.starting = startConversation().finally(() => {
        state.starting = null;
        view.startBtn.disabled = Date.now() < state.startHoldUntil;
      });
    }
    return state.starting;
  }

  async function startConversation() {
    view.startBtn.disabled = true;
    setStatus('starting');
    try {
      const cfg = await loadConfig();
      const topic = view.topicSelect.value || (cfg.topics[0] && cfg.topics[0].id);
      if (!topic) throw new ApiError(400, null, 'Chat is not available right now.');
      const hs = cfg.homeserver_url;

      // 2. A Matrix user is the visitor's identity for this conversation: a guest, or
      //    where the homeserver has no guests, a visitor account from Switchboard.
      let guest = state.draftGuest;
      if (!guest || guest.mode !== cfg.visitor_mode || (guest.mode === 'guest' && guest.homeserver_url !== hs)) {
        guest = cfg.visitor_mode === 'guest' ? await registerGuest(hs) : await provisionVisitor(hs, cfg.visitor_mode);
        state.draftGuest = guest;
      }

      // 3. Switchboard creates the room (and invites the guest). Not retried
      //    automatically: a lost response could otherwise create two conversations.
      let conv;
      try {
        conv = await switchboardApi.createConversation(guest.access_token, topic);
      } catch (err) {
        if (isSessionDead(err)) state.draftGuest = null;
        if (err.status === 429) holdStartButton(err.retryAfterMs);
        throw err;
      }
      const roomId = conv.room_id || conv.conversation_id;
      if (typeof roomId !== 'string' || !roomId) {
        throw new ApiError(500, null, 'The chat service gave an unexpected answer.');
      }

      // 4. Join the room (joining is idempotent, so retrying is safe).
      await withRetry(() => matrixApi.join(guest, roomId), 4);

      const session = {
        homeserver_url: guest.homeserver_url, user_id: guest.user_id,
        access_token: guest.access_token, device_id: guest.device_id,
        room_id: roomId, since: null, topic,
      };
      state.draftGuest = null;
      store.save(session);
      beginSession(session);
      return session;
    } catch (err) {
      if (isSessionDead(err)) state.draftGuest = null;
      setStatus('error', (err && err.message) || STATUS_TEXT.error);
      throw err;
    }
  }

  async function registerGuest(hs) {
    const reg = await withRetry(() => matrixApi.registerGuest(hs), 3);
    if (!reg.access_token || !reg.user_id) {
      throw new ApiError(500, null, 'Could not create a guest account.');
    }
    const guest = {
      mode: 'guest', homeserver_url: hs, user_id: reg.user_id, access_token: reg.access_token,
      device_id: reg.device_id || null,
    };
    // Guests get a random numeric name; show something neutral to responders.
    await matrixApi.setDisplayName(guest, 'Visitor').catch(() => {});
    return guest;
  }

  /**
   * "accounts" and "proxied" modes: Switchboard makes a user in its own namespace and hands us
   * a token for it alone (in "proxied" mode its own session token, with its visitor proxy as
   * the homeserver URL, so everything below works unchanged). Not retried automatically
   * (each call makes an account); 429 holds the Start button for retry_after_ms. Switchboard
   * names the user, so no display name is set here.
   */
  async function provisionVisitor(hs, mode) {
    let acc;
    try {
      acc = await switchboardApi.createVisitor();
    } catch (err) {
      if (err.status === 429) holdStartButton(err.retryAfterMs);
      throw err;
    }
    const home = normalizeHomeserver(acc.homeserver_url || hs);
    if (!home || typeof acc.access_token !== 'string' || !acc.access_token ||
        typeof acc.user_id !== 'string' || !acc.user_id) {
      throw new ApiError(500, null, 'Could not create a visitor account.');
    }
    return {
      mode, homeserver_url: home, user_id: acc.user_id, access_token: acc.access_token,
      device_id: typeof acc.device_id === 'string' ? acc.device_id : null,
    };
  }

  function holdStartButton(ms) {
    if (!ms) return;
    // Keep the button disabled through the rate limit so clicking cannot extend it.
    state.startHoldUntil = Date.now() + ms;
    setTimeout(() => {
      if (!state.starting && Date.now() >= state.startHoldUntil) view.startBtn.disabled = false;
    }, ms + 50);
  }

  function beginSession(session) {
    state.session = session;
    state.sessionCtrl = new AbortController();
    clearTimeout(state.typingOut.idleTimer);
    state.typingOut = { active: false, sentAt: 0, disabled: false, idleTimer: null };
    view.endBtn.hidden = false;
    showPicker(false);
    setStatus('waiting');
    syncLoop(session, state.sessionCtrl.signal);
  }

  /** Stops everything tied to the current session and forgets it. */
  function endSession() {
    if (state.sessionCtrl) state.sessionCtrl.abort();
    state.sessionCtrl = null;
    state.session = null;
    state.outbox = [];
    view.endBtn.hidden = true;
    store.clear();
  }

  function sessionInvalid() {
    // The token no longer works: nothing shown can be continued, start from the picker.
    endSession();
    clearConversationView();
    showPicker(true);
    setStatus('idle', 'Your chat session has expired. Choose a topic to start again.');
    loadConfig().catch(() => {});
  }

  /** The visitor ends the conversation: Switchboard closes it and tells the responder. */
  async function endByVisitor() {
    const session = state.session;
    if (!session || !session.room_id) return;
    try {
      await switchboardApi.endConversation(session.access_token, session.room_id);
    } catch (e) {
      // Already gone or not reachable: the visitor still wants to be done with it here.
    }
    conversationEnded();
  }

  function conversationEnded() {
    endSession();
    // Anything still unsent belonged to the old room: mark it, but offer no retry, which
    // would silently carry it into a different conversation.
    for (const msg of state.messages) {
      if (msg.pending) {
        msg.pending = false;
        msg.failed = true;
        msg.retryable = false;
        updateMessage(msg);
      }
    }
    state.conversationOver = true;
    state.typingUsers = [];
    renderTyping();
    addSystemNotice('This conversation has ended.');
    showPicker(true);
    setStatus('closed');
    loadConfig().catch(() => {});
  }

  // --- sync --------------------------------------------------------------------

  /**
   * Long-polls /sync for the conversation room until the signal aborts. The first
   * request never sends `since` (even when one is stored): a fresh sync returns the
   * room's state and recent timeline, which is how the history reappears after a reload.
   */
  async function syncLoop(session, signal) {
    let since = null;
    let failures = 0;
    while (!signal.aborted) {
      let res;
      // Each request can also be aborted when the browser's connectivity changes: a
      // long-poll in flight when the network dropped could otherwise hang until its
      // timeout, long after the network is back.
      const request = new AbortController();
      const abortRequest = () => request.abort();
      signal.addEventListener('abort', abortRequest, { once: true });
      connectivityWatchers.add(abortRequest);
      try {
        res = await matrixApi.sync(session, since, request.signal);
        if (typeof res.next_batch !== 'string') {
          throw new ApiError(502, null, 'The chat server gave an unexpected answer.');
        }
      } catch (err) {
        if (signal.aborted) return;
        if (isAbort(err)) continue; // connectivity changed: ask again at once
        if (isSessionDead(err)) {
          sessionInvalid();
          return;
        }
        failures += 1;
        if (isTransient(err)) setStatus('offline');
        else setStatus('error', err.message);
        const delay = err.retryAfterMs !== null ? err.retryAfterMs : backoffMs(failures);
        try {
          await sleep(delay, signal);
        } catch (e) {
          return;
        }
        continue;
      } finally {
        signal.removeEventListener('abort', abortRequest);
        connectivityWatchers.delete(abortRequest);
      }
      if (signal.aborted) return;
      const initial = since === null;
      failures = 0;
      since = res.next_batch;
      session.since = since;
      store.save(session);
      if (applySync(session, res, initial) === 'ended') {
        conversationEnded();
        return;
      }
      refreshConversationStatus();
      // Pending sends that were waiting for the network can go now.
      flushOutbox();
    }
  }

  /** Applies one /sync response; returns 'ended' if we are no longer in the room. */
  function applySync(session, res, initial) {
    const rooms = res.rooms || {};
    const roomId = session.room_id;
    const joined = rooms.join && rooms.join[roomId];
    const left = rooms.leave && rooms.leave[roomId];
    const room = joined || left;
    if (room) {
      if (room.timeline && room.timeline.limited && !initial) {
        // A gap: echoes of our sent messages may be in it and never arrive, so stop
        // holding later events above those messages.
        for (const m of state.messages) if (m.local && m.eventId) m.echoed = true;
      }
      const timeline = (room.timeline && room.timeline.events) || [];
      // If our own join is not in this timeline it happened earlier (or this is a later
      // sync), so every join in it is by someone who arrived after the visitor.
      if (!timeline.some((ev) => isMembership(ev, session.user_id, 'join'))) state.afterMyJoin = true;
      for (const ev of (room.state && room.state.events) || []) applyStateEvent(ev, false);
      for (const ev of timeline) applyTimelineEvent(ev, initial);
      if (joined) applyEphemeral(joined.ephemeral && joined.ephemeral.events);
    }
    if (left) return 'ended';
    if (state.conv && state.conv.state === 'closed') return 'ended';
    // A fresh sync lists every joined room: if ours is missing we were removed while the
    // tab was away (left rooms are not included in a fresh sync by default).
    if (initial && !joined) return 'ended';
    if (state.myMembership === 'leave' || state.myMembership === 'ban') return 'ended';
    return null;
  }

  function isMembership(ev, user, membership) {
    return ev && ev.type === 'm.room.member' && ev.state_key === user &&
      ev.content && ev.content.membership === membership;
  }

  /** Tracks display names and memberships. inTimeline: the event is in timeline order. */
  function applyStateEvent(ev, inTimeline) {
    if (ev && ev.type === CONVERSATION_EVENT && ev.state_key === '') {
      // Only the bot can send it (power levels), so it is the authority on the state.
      const c = ev.content;
      state.conv = c && typeof c === 'object' && typeof c.state === 'string' ? c : null;
      return;
    }
    if (!ev || ev.type !== 'm.room.member' || typeof ev.state_key !== 'string') return;
    const user = ev.state_key;
    const content = ev.content || {};
    const membership = content.membership;
    const prevContent = ev.unsigned && ev.unsigned.prev_content;
    const previous = state.memberships.get(user) || (prevContent && prevContent.membership);
    state.memberships.set(user, membership);
    if (typeof content.displayname === 'string' && content.displayname.trim()) {
      state.names.set(user, content.displayname.trim());
    } else {
      state.names.delete(user);
    }
    if (isMe(user)) {
      state.myMembership = membership;
      if (inTimeline && membership === 'join') state.afterMyJoin = true;
      return;
    }
    if (membership === 'join') {
      // join -> join is only a profile change (e.g. the bot renaming itself), not an arrival.
      if (inTimeline && state.afterMyJoin && previous !== 'join') state.responders.add(user);
    } else if (membership !== 'invite') {
      state.responders.delete(user); // leave, ban, knock
    }
  }

  function applyTimelineEvent(ev, initial) {
    if (!ev || typeof ev.event_id !== 'string') return;
    if (typeof ev.state_key === 'string') {
      applyStateEvent(ev, true);
      return;
    }
    if (ev.type !== 'm.room.message') return;
    if (state.seenEventIds.has(ev.event_id)) return;
    state.seenEventIds.add(ev.event_id);

    // Our own message coming back: confirm the bubble already shown instead of adding
    // another. Matched by the txnId we chose, or by the event ID the PUT returned.
    const txnId = ev.unsigned && ev.unsigned.transaction_id;
    const local =
      (txnId && state.byTxn.get(txnId)) ||
      state.messages.find((m) => m.local && m.eventId === ev.event_id);
    if (local) {
      local.eventId = ev.event_id;
      local.echoed = true;
      local.pending = false;
      local.failed = false;
      updateMessage(local);
      return;
    }

    const content = ev.content || {};
    if (typeof content.body !== 'string') return; // redacted or malformed

    // Edits replace the text of the message they refer to.
    const rel = content['m.relates_to'];
    if (rel && rel.rel_type === 'm.replace' && typeof rel.event_id === 'string') {
      const target = state.messages.find(
        (m) => m.eventId === rel.event_id && m.senderId === ev.sender,
      );
      const newContent = content['m.new_content'];
      if (target && newContent && typeof newContent.body === 'string') {
        target.body = newContent.body;
        target.html = target.kind === 'me' ? null : formattedBody(newContent);
        updateMessage(target);
      }
      return;
    }

    const mine = isMe(ev.sender);
    const kind = mine ? 'me' : content.msgtype === 'm.notice' ? 'system' : 'them';
    if (kind === 'them') state.responders.add(ev.sender);
    // Whoever just sent a message has stopped typing it.
    if (state.typingUsers.includes(ev.sender)) {
      state.typingUsers = state.typingUsers.filter((u) => u !== ev.sender);
      renderTyping();
    }
    let body = content.body;
    let html = mine ? null : formattedBody(content);
    if (content.msgtype === 'm.emote') {
      body = '* ' + (mine ? 'You' : displayNameFor(ev.sender)) + ' ' + body;
      html = null;
    }
    addMessage({
      eventId: ev.event_id,
      txnId: null,
      senderId: ev.sender,
      kind,
      body,
      html,
      name: kind === 'them' ? displayNameFor(ev.sender) : null,
      pending: false,
      failed: false,
    });
    if (!mine && !initial && !state.open) {
      state.unread += 1;
      renderBadge();
    }
  }

  /** The HTML of a message, if it has any in the one format Matrix defines. */
  function formattedBody(content) {
    return content && content.format === 'org.matrix.custom.html' &&
      typeof content.formatted_body === 'string' && content.formatted_body
      ? content.formatted_body
      : null;
  }

  // --- typing -------------------------------------------------------------------

  function applyEphemeral(events) {
    for (const ev of events || []) {
      if (!ev || ev.type !== 'm.typing' || !ev.content || !Array.isArray(ev.content.user_ids)) continue;
      state.typingUsers = ev.content.user_ids.filter((u) => typeof u === 'string' && !isMe(u));
      renderTyping();
    }
  }

  function renderTyping() {
    if (!view) return;
    // Display names only, never Matrix IDs (displayNameFor falls back to "Responder").
    const names = state.typingUsers.map(displayNameFor);
    let text = '';
    if (names.length === 1) text = names[0] + ' is typing…';
    else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
    else if (names.length > 2) text = 'Several people are typing…';
    view.typing.textContent = text;
  }

  /**
   * Tells Switchboard the visitor is (or stopped) typing; it shows that to the responder on
   * their platform. Renewed at most every TYPING_RENEW_MS while keys are pressed; stopped on
   * send, blur, closing the panel, and TYPING_TIMEOUT_MS after the last key. Failures never
   * affect the conversation; after a 4xx (other than 429) the widget stops trying for this
   * session.
   */
  function sendTyping(on) {
    const session = state.session;
    const t = state.typingOut;
    if (!session || t.disabled) return;
    const now = Date.now();
    clearTimeout(t.idleTimer);
    if (on) {
      t.idleTimer = setTimeout(() => sendTyping(false), TYPING_TIMEOUT_MS);
      if (t.active && now - t.sentAt < TYPING_RENEW_MS) return;
      t.active = true;
      t.sentAt = now;
    } else {
      if (!t.active) return;
      t.active = false;
    }
    switchboardApi.typing(session.access_token, session.room_id, on).catch((err) => {
      if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) {
        t.disabled = true;
      }
    });
  }

  // ---------------------------------------------------------------------------
  // 6. boot + test hook
  // ---------------------------------------------------------------------------

  function wireEvents() {
    view.launcher.addEventListener('click', () => (state.open ? closePanel() : openPanel()));
    view.closeBtn.addEventListener('click', closePanel);
    view.endBtn.addEventListener('click', endByVisitor);
    view.panel.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        closePanel();
      }
    });
    view.startBtn.addEventListener('click', () => {
      if (state.conversationOver) clearConversationView();
      ensureStarted().then(() => view.input.focus(), () => {});
    });
    view.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      sendTyping(false);
      if (submitText(view.input.value)) {
        view.input.value = '';
        autosize();
      }
      view.input.focus();
    });
    view.input.addEventListener('keydown', (e) => {
      // Enter sends, Shift+Enter inserts a newline; never send in the middle of an IME
      // composition (Japanese, Chinese... input confirms candidates with Enter).
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        if (view.composer.requestSubmit) view.composer.requestSubmit();
        else view.sendBtn.click();
      }
    });
    view.input.addEventListener('input', () => {
      autosize();
      sendTyping(view.input.value.trim() !== '');
    });
    view.input.addEventListener('blur', () => sendTyping(false));
  }

  function autosize() {
    const el = view.input;
    el.style.height = 'auto';
    el.style.height = Math.min(el.scrollHeight + 2, 120) + 'px';
  }

  function boot() {
    view = buildView();
    wireEvents();
    const saved = store.load();
    if (saved) {
      // Steps 1-4 already happened in this tab: continue the same conversation.
      beginSession(saved);
    } else {
      setStatus('idle');
    }
    pendingOpen.forEach((fn) => fn());
    pendingOpen.length = 0;
    mark('switchboard:ready');
  }

  /** User Timing marks, so the host page (and scripts/widget.sh bench) can see how fast we are. */
  function mark(name) {
    try {
      if (!performance.getEntriesByName(name, 'mark').length) performance.mark(name);
    } catch (e) {
      /* no User Timing: nothing to measure */
    }
  }

  const pendingOpen = [];
  function whenReady(fn) {
    if (view) fn();
    else pendingOpen.push(fn);
  }

  // Public surface for host pages and browser tests. Deliberately never exposes the
  // access token or anything else from the session beyond the room ID.
  window.SwitchboardWidget = Object.freeze({
    open() {
      whenReady(() => {
        if (!state.open) openPanel();
      });
    },
    close() {
      whenReady(() => {
        if (state.open) closePanel();
      });
    },
    state() {
      return {
        status: state.status,
        statusText: view ? view.status.textContent : '',
        typing: view ? view.typing.textContent : '',
        conversation: state.conv ? Object.assign({}, state.conv) : null,
        visitorMode: state.config ? state.config.visitor_mode : null,
        roomId: state.session ? state.session.room_id : null,
        messages: state.messages.map((m) => ({
          eventId: m.eventId,
          sender: m.kind,
          body: m.body,
          pending: !!m.pending,
          failed: !!m.failed,
        })),
      };
    },
    /** The allow-list sanitiser, as the HTML string it would insert (for tests and audits). */
    sanitizeHtml(html) {
      const div = document.createElement('div');
      div.append(sanitizeHtml(html));
      return div.innerHTML;
    },
  });

  if (document.body) boot();
  else document.addEventListener('DOMContentLoaded', boot, { once: true });
})();
