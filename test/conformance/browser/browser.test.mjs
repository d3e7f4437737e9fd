// The browser build of pusher-js (dist/web/pusher.min.js) running in a real
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core) against
// Herald, with the `pusher` npm library as the application server.
//
// A small local HTTP server plays the web application: it serves page.html
// (which loads pusher.min.js from node_modules, never from a CDN), and a
// same-origin POST /auth endpoint that pusher-js calls with its default
// form-encoded body (socket_id, channel_name) and that signs with the `pusher`
// library's authorizeChannel. The page URL's ?user=<token> selects the
// presence user, so two pages can be two different users. Pages are loaded
// from that server because a page at about:blank cannot open ws://127.0.0.1.
//
// The test drives pusher-js inside the page through window.herald
// (page.evaluate) and observes it through window.heraldReport
// (page.exposeFunction); playwright's WebSocket events also show the raw
// frames on the wire.
//
// Environment: HERALD_HOST, HERALD_PORT, HERALD_APP_ID, HERALD_APP_KEY,
// HERALD_APP_SECRET (set by the Go runner, TestPusherJSBrowser); CHROMIUM
// overrides the browser path. The app must have client events enabled.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

import { chromium } from 'playwright-core';
import { HOST, PORT, APP_KEY, serverSDK, uniq, waitUntil } from '../lib/herald.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// How long we wait for something that should happen (the machine may be
// busy), and how long we listen for something that must not happen.
const WAIT_MS = 10000;
const QUIET_MS = 500;
const CASE_TIMEOUT_MS = 40000;

const server = serverSDK();


// ---------------------------------------------------------------------------
// The web application: page, pusher-js browser build, auth endpoint.

const require = createRequire(import.meta.url);
const PUSHER_JS = readFileSync(require.resolve('pusher-js/dist/web/pusher.min.js'));
const PAGE = readFileSync(new URL('./page.html', import.meta.url));

const users = new Map(); // token -> { id, info }

/** Registers a presence user; the page loaded with its token authorizes as it. */
function makeUser(name, info) {
  const user = { id: `${name}-${uniq()}`, info, token: randomBytes(8).toString('hex') };
  users.set(user.token, user);
  return user;
}

const authRequests = []; // every POST /auth the browser made

function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const send = (status, type, body) => {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    res.end(body);
  };
  const json = (status, obj) => send(status, 'application/json', JSON.stringify(obj));

  if (req.method === 'GET' && url.pathname === '/page.html') return send(200, 'text/html; charset=utf-8', PAGE);
  if (req.method === 'GET' && url.pathname === '/pusher.min.js') return send(200, 'text/javascript', PUSHER_JS);
  if (url.pathname !== '/auth') return send(404, 'text/plain', 'not found');

  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const params = new URLSearchParams(body);
    const rec = {
      method: req.method,
      contentType: req.headers['content-type'],
      user: url.searchParams.get('user'),
      socket_id: params.get('socket_id'),
      channel_name: params.get('channel_name'),
    };
    authRequests.push(rec);
    if (req.method !== 'POST' || !rec.socket_id || !rec.channel_name) return json(400, { error: 'bad request' });
    try {
      if (rec.channel_name.startsWith('presence-')) {
        const user = users.get(rec.user);
        if (!user) return json(403, { error: 'no such user' });
        return json(200, server.authorizeChannel(rec.socket_id, rec.channel_name, { user_id: user.id, user_info: user.info }));
      }
      if (rec.channel_name.startsWith('private-')) {
        return json(200, server.authorizeChannel(rec.socket_id, rec.channel_name));
      }
      return json(403, { error: 'not an authorizable channel' });
    } catch (err) {
      return json(500, { error: String(err) });
    }
  });
}

let http;
let base;
let browser;
const openTabs = new Set();

before(async () => {
  http = createServer(handle);
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', resolve);
  });
  base = `http://127.0.0.1:${http.address().port}`;
  // We run as root in CI containers, where Chromium's sandbox cannot start.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true, timeout: 30000 });
});

after(async () => {
  for (const t of [...openTabs]) await t.close();
  if (browser) await browser.close().catch(() => {});
  if (http) {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(() => resolve()));
  }
});

// ---------------------------------------------------------------------------
// One browser tab (its own context, so no shared storage) running pusher-js.

const isNoise = (f) => f.event === 'pusher:ping' || f.event === 'pusher:pong';

/** The wire-visible fields of a frame as pusher-js decoded it. */
const wire = (f) => {
  const o = { event: f.event };
  if (f.channel !== undefined) o.channel = f.channel;
  if (f.data !== undefined) o.data = f.data;
  if (f.user_id !== undefined) o.user_id = f.user_id;
  return o;
};

class Tab {
  constructor(name, user) {
    this.name = name;
    this.user = user;
    this.states = [];
    this.frames = []; // every frame pusher-js decoded (connection 'message')
    this.events = []; // events bound on channels: { channel, event, data, meta }
    this.errors = []; // connection 'error' events, page errors, console errors
    this.wsUrls = []; // WebSockets the page opened
    this.rawIn = []; // raw text frames the page received
    this.waiters = new Set();
  }

  async open() {
    openTabs.add(this);
    this.context = await browser.newContext();
    this.page = await this.context.newPage();
    this.page.on('pageerror', (err) => this._push(this.errors, { pageerror: String(err) }));
    this.page.on('console', (msg) => {
      if (msg.type() === 'error') this._push(this.errors, { console: msg.text() });
    });
    this.page.on('websocket', (ws) => {
      this._push(this.wsUrls, ws.url());
      ws.on('framereceived', (f) => this._push(this.rawIn, f.payload));
    });
    await this.page.exposeFunction('heraldReport', (kind, json) => {
      const v = JSON.parse(json);
      if (kind === 'state') this._push(this.states, v);
      else if (kind === 'frame') this._push(this.frames, v);
      else if (kind === 'event') this._push(this.events, v);
      else this._push(this.errors, { [kind]: v });
    });
    const page = `${base}/page.html${this.user ? `?user=${this.user.token}` : ''}`;
    const res = await this.page.goto(page, { waitUntil: 'load' });
    assert.equal(res.status(), 200, `${this.name}: GET ${page}`);
    assert.equal(await this.page.evaluate(() => typeof window.Pusher), 'function', `${this.name}: pusher-js loaded`);
    return this;
  }

  _push(list, v) {
    list.push(v);
    for (const w of [...this.waiters]) w();
  }

  /** Runs fn(window.herald, arg) in the page. */
  run(fn, arg) {
    return this.page.evaluate(([src, a]) => new Function('h', 'a', `return (${src})(h, a)`)(window.herald, a), [fn.toString(), arg]);
  }

  /** Resolves when pred() is truthy; rejects after ms with everything the tab saw. */
  until(pred, what, ms = WAIT_MS) {
    return waitUntil(pred, {
      ms,
      watchers: this.waiters,
      describe: () => `${this.name}: timed out after ${ms} ms waiting for ${what}\n${this.dump()}`,
    });
  }

  dump() {
    return (
      `  states=${JSON.stringify(this.states)}\n  frames=${JSON.stringify(this.frames)}\n` +
      `  events=${JSON.stringify(this.events)}\n  errors=${JSON.stringify(this.errors)}`
    );
  }

  async connect() {
    await this.run((h, cfg) => h.start(cfg), { key: APP_KEY, host: HOST, port: PORT });
    await this.until(() => this.states.includes('connected'), 'state connected');
    const socketId = await this.run((h) => h.socketId());
    assert.match(socketId, /^\d+\.\d+$/, `${this.name}: socket_id format`);
    this.socketId = socketId;
    return this;
  }

  /** Subscribes in the page, binding events, and waits for subscription_succeeded. */
  async subscribe(channel, events = []) {
    await this.run((h, a) => h.subscribe(a.channel, a.events), { channel, events });
    await this.until(
      () => this.events.find((e) => e.channel === channel && e.event.startsWith('pusher:subscription_')),
      `subscription result on ${channel}`,
    );
    const res = this.events.find((e) => e.channel === channel && e.event.startsWith('pusher:subscription_'));
    assert.equal(res.event, 'pusher:subscription_succeeded', `${this.name}: ${channel}: ${JSON.stringify(res)}`);
  }

  meaningful() {
    return this.frames.filter((f) => !isNoise(f)).map(wire);
  }

  /** Bound channel events other than the subscription result. */
  channelEvents(channel) {
    return this.events.filter((e) => e.channel === channel && e.event !== 'pusher:subscription_succeeded');
  }

  async close() {
    openTabs.delete(this);
    if (this.context) await this.context.close().catch(() => {});
  }
}

/** Waits QUIET_MS, then asserts the tab's exact frame list (ping/pong ignored) and no errors. */
async function assertFrames(tab, expected, msg) {
  await sleep(QUIET_MS);
  assert.deepEqual(tab.meaningful(), expected, `${tab.name}: ${msg}`);
  assert.deepEqual(tab.errors, [], `${tab.name}: unexpected errors`);
}

const subOK = (channel) => ({ event: 'pusher_internal:subscription_succeeded', channel, data: {} });

async function expectOK(promise, what) {
  const res = await promise;
  assert.equal(res.status, 200, `${what}: HTTP status`);
  return res.json();
}

// ---------------------------------------------------------------------------

test('connect: the browser reaches connected over ws:// with a socket_id', { timeout: CASE_TIMEOUT_MS }, async () => {
  const a = await new Tab('A').open();
  await a.connect();
  assert.deepEqual(a.states, ['connecting', 'connected']);
  assert.equal(await a.run((h) => h.state()), 'connected');

  // The one WebSocket the page opened is pusher-js's protocol-7 URL.
  assert.equal(a.wsUrls.length, 1, JSON.stringify(a.wsUrls));
  const u = new URL(a.wsUrls[0]);
  assert.equal(u.protocol, 'ws:');
  assert.equal(u.host, `${HOST}:${PORT}`);
  assert.equal(u.pathname, `/app/${APP_KEY}`);
  assert.equal(u.searchParams.get('protocol'), '7');
  assert.equal(u.searchParams.get('client'), 'js');

  // First raw frame: connection_established with double-encoded data.
  await a.until(() => a.rawIn.length > 0, 'first raw frame');
  const first = JSON.parse(a.rawIn[0]);
  assert.equal(first.event, 'pusher:connection_established');
  assert.equal(typeof first.data, 'string', `data must be a JSON string: ${a.rawIn[0]}`);
  const est = JSON.parse(first.data);
  assert.equal(est.socket_id, a.socketId);
  assert.equal(typeof est.activity_timeout, 'number');

  await assertFrames(a, [], 'frames after connection_established');
  await a.run((h) => h.disconnect());
  await a.until(() => a.states.at(-1) === 'disconnected', 'state disconnected');
  await a.close();
});

test('public channel: HTTP-triggered event reaches the subscribed page only', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `public-${uniq()}`;
  const other = `public-other-${uniq()}`;
  const a = await (await new Tab('A').open()).connect();
  const b = await (await new Tab('B').open()).connect();
  await a.subscribe(ch, ['ev']);
  await b.subscribe(other, ['ev']);

  const data = { a: 1, s: 'héllo <b>', n: [1, 2.5, null], t: true };
  assert.deepEqual(await expectOK(server.trigger(ch, 'ev', data), 'trigger'), {});
  await a.until(() => a.channelEvents(ch).length === 1, `ev on ${ch}`);
  assert.deepEqual(a.channelEvents(ch), [{ channel: ch, event: 'ev', data, meta: {} }]);

  // On the wire: data is the JSON string the server library sent.
  // (playwright's frame events and the page's reports are not ordered with each other.)
  const rawEv = () => a.rawIn.map((r) => JSON.parse(r)).filter((f) => f.event === 'ev');
  await a.until(() => rawEv().length > 0, 'raw ev frame');
  const raw = rawEv();
  assert.deepEqual(raw, [{ event: 'ev', channel: ch, data: JSON.stringify(data) }]);

  await assertFrames(a, [subOK(ch), { event: 'ev', channel: ch, data }], 'subscriber frames');
  await assertFrames(b, [subOK(other)], 'page on another channel');
  assert.deepEqual(b.channelEvents(other), []);
  // Public channels need no auth.
  assert.deepEqual(authRequests.filter((r) => r.channel_name === ch || r.channel_name === other), []);
  await a.close();
  await b.close();
});

test('presence channel across pages: members, member_added, member_removed', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `presence-${uniq()}`;
  const u1 = makeUser('u1', { name: 'Ana' });
  const u2 = makeUser('u2', { name: 'Bo', tags: ['x'] });
  const u3 = makeUser('u3', { name: 'Cy' });

  const a = await (await new Tab('A', u1).open()).connect();
  await a.subscribe(ch);
  assert.deepEqual(await a.run((h, c) => h.members(c), ch), {
    count: 1,
    me: { id: u1.id, info: u1.info },
    all: { [u1.id]: u1.info },
  });

  // The browser POSTed the auth request form-encoded, as pusher-js does by default.
  const authA = authRequests.filter((r) => r.channel_name === ch);
  assert.equal(authA.length, 1, JSON.stringify(authRequests));
  assert.equal(authA[0].method, 'POST');
  assert.match(authA[0].contentType, /^application\/x-www-form-urlencoded/);
  assert.equal(authA[0].socket_id, a.socketId);
  assert.equal(authA[0].user, u1.token);

  const b = await (await new Tab('B', u2).open()).connect();
  await b.subscribe(ch);
  await a.until(() => a.channelEvents(ch).length === 1, 'pusher:member_added for B');
  assert.deepEqual(a.channelEvents(ch), [
    { channel: ch, event: 'pusher:member_added', data: { id: u2.id, info: u2.info }, meta: null },
  ]);
  const both = { [u1.id]: u1.info, [u2.id]: u2.info };
  assert.deepEqual(await a.run((h, c) => h.members(c), ch), { count: 2, me: { id: u1.id, info: u1.info }, all: both });
  assert.deepEqual(await b.run((h, c) => h.members(c), ch), { count: 2, me: { id: u2.id, info: u2.info }, all: both });
  const bSub = b.meaningful();
  assert.equal(bSub.length, 1, JSON.stringify(bSub));
  assert.equal(bSub[0].event, 'pusher_internal:subscription_succeeded');
  assert.equal(bSub[0].data.presence.count, 2);
  assert.deepEqual([...bSub[0].data.presence.ids].sort(), [u1.id, u2.id].sort());
  assert.deepEqual(bSub[0].data.presence.hash, both);

  // A third page joins, then B unsubscribes and C's tab is closed.
  const c = await (await new Tab('C', u3).open()).connect();
  await c.subscribe(ch);
  await a.until(() => a.channelEvents(ch).length === 2, 'pusher:member_added for C');
  await b.until(() => b.channelEvents(ch).length === 1, 'pusher:member_added for C on B');

  await b.run((h, cn) => h.unsubscribe(cn), ch);
  await a.until(() => a.channelEvents(ch).length === 3, 'pusher:member_removed for B (unsubscribe)');
  await c.until(() => c.channelEvents(ch).length === 1, 'pusher:member_removed for B on C');
  await c.close();
  await a.until(() => a.channelEvents(ch).length === 4, 'pusher:member_removed for C (tab closed)');

  assert.deepEqual(a.channelEvents(ch), [
    { channel: ch, event: 'pusher:member_added', data: { id: u2.id, info: u2.info }, meta: null },
    { channel: ch, event: 'pusher:member_added', data: { id: u3.id, info: u3.info }, meta: null },
    { channel: ch, event: 'pusher:member_removed', data: { id: u2.id, info: u2.info }, meta: null },
    { channel: ch, event: 'pusher:member_removed', data: { id: u3.id, info: u3.info }, meta: null },
  ]);
  assert.deepEqual(await a.run((h, cn) => h.members(cn), ch), {
    count: 1,
    me: { id: u1.id, info: u1.info },
    all: { [u1.id]: u1.info },
  });
  await assertFrames(
    a,
    [
      { event: 'pusher_internal:subscription_succeeded', channel: ch, data: { presence: { count: 1, ids: [u1.id], hash: { [u1.id]: u1.info } } } },
      { event: 'pusher_internal:member_added', channel: ch, data: { user_id: u2.id, user_info: u2.info } },
      { event: 'pusher_internal:member_added', channel: ch, data: { user_id: u3.id, user_info: u3.info } },
      { event: 'pusher_internal:member_removed', channel: ch, data: { user_id: u2.id } },
      { event: 'pusher_internal:member_removed', channel: ch, data: { user_id: u3.id } },
    ],
    'A presence frames',
  );
  // B left: it hears nothing more on the channel (C's departure included).
  await assertFrames(
    b,
    [bSub[0], { event: 'pusher_internal:member_added', channel: ch, data: { user_id: u3.id, user_info: u3.info } }],
    'B frames after unsubscribing',
  );
  assert.equal(b.channelEvents(ch).length, 1);
  await a.close();
  await b.close();
});

test('client events on a private channel: relayed to the other page, not echoed', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `private-${uniq()}`;
  const a = await (await new Tab('A').open()).connect();
  const b = await (await new Tab('B').open()).connect();
  await a.subscribe(ch, ['client-typing']);
  await b.subscribe(ch, ['client-typing']);
  for (const t of [a, b]) {
    const auth = authRequests.filter((r) => r.channel_name === ch && r.socket_id === t.socketId);
    assert.equal(auth.length, 1, `${t.name}: auth requests ${JSON.stringify(authRequests)}`);
    assert.match(auth[0].contentType, /^application\/x-www-form-urlencoded/);
  }

  const data = { on: true, who: 'A', text: 'ünïcødé' };
  assert.equal(await a.run((h, x) => h.trigger(x.ch, 'client-typing', x.data), { ch, data }), true, 'trigger accepted');
  await b.until(() => b.channelEvents(ch).length === 1, 'client-typing on B');
  assert.deepEqual(b.channelEvents(ch), [{ channel: ch, event: 'client-typing', data, meta: {} }]);

  await assertFrames(b, [subOK(ch), { event: 'client-typing', channel: ch, data }], 'receiver frames');
  await assertFrames(a, [subOK(ch)], 'sender frames (no echo)');
  assert.deepEqual(a.channelEvents(ch), []);
  await a.close();
  await b.close();
});

test('client events on a presence channel carry the sender user_id', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `presence-${uniq()}`;
  const u1 = makeUser('u1', {});
  const u2 = makeUser('u2', {});
  const a = await (await new Tab('A', u1).open()).connect();
  const b = await (await new Tab('B', u2).open()).connect();
  await a.subscribe(ch, ['client-move']);
  await b.subscribe(ch, ['client-move']);
  await a.until(() => a.channelEvents(ch).length === 1, 'member_added for B');

  assert.equal(await b.run((h, x) => h.trigger(x, 'client-move', { x: 3 }), ch), true, 'trigger accepted');
  await a.until(() => a.channelEvents(ch).length === 2, 'client-move on A');
  // pusher-js dispatches to the channel before the page's connection 'message' listener.
  await a.until(() => a.frames.some((f) => f.event === 'client-move'), 'client-move frame on A');
  assert.deepEqual(a.channelEvents(ch)[1], { channel: ch, event: 'client-move', data: { x: 3 }, meta: { user_id: u2.id } });
  assert.deepEqual(a.meaningful().at(-1), { event: 'client-move', channel: ch, data: { x: 3 }, user_id: u2.id });
  await sleep(QUIET_MS);
  assert.deepEqual(b.channelEvents(ch), [], 'no echo to the sender');
  assert.ok(!b.frames.some((f) => f.event === 'client-move'), `echo: ${JSON.stringify(b.frames)}`);
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.close();
  await b.close();
});
