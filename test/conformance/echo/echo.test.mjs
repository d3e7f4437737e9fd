// Laravel Echo (npm laravel-echo, ES module build) with pusher-js (Node
// build) against Herald, configured the way a Laravel application does it:
//
//   new Echo({ broadcaster: 'pusher', key, wsHost, wsPort, forceTLS: false,
//              enabledTransports: ['ws'], cluster: 'mt1', authEndpoint, auth })
//
// Private and presence channels are authorized through a real HTTP endpoint
// that plays Laravel's POST /broadcasting/auth (routes/channels.php): Echo hands
// authEndpoint and auth.headers to pusher-js, which POSTs socket_id and
// channel_name; the endpoint identifies the user from the bearer token and
// signs with the `pusher` npm library's authorizeChannel, as
// Illuminate\Broadcasting\Broadcasters\PusherBroadcaster does with
// pusher-php-server. Server-side broadcasts use the `pusher` library with the
// names Laravel gives them (App\Events\OrderShipped, or broadcastAs()).
//
// Environment: HERALD_HOST, HERALD_PORT, HERALD_APP_ID, HERALD_APP_KEY,
// HERALD_APP_SECRET (set by the Go runner, TestLaravelEcho). The app must
// have client events enabled (whisper).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:http';

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { HOST, PORT, APP_KEY, serverSDK, waitUntil } from '../lib/herald.mjs';
// ECHO_DEBUG=1 prints pusher-js's own log.
Pusher.logToConsole = !!process.env.ECHO_DEBUG;


// How long we wait for something that should happen (the machine may be
// busy), and how long we listen for something that must not happen.
const WAIT_MS = 8000;
const QUIET_MS = 500;
const CASE_TIMEOUT_MS = 30000;

// The Laravel side: pusher-php-server's role is played by the `pusher` lib.
const laravel = serverSDK();

const uniq = () => `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

// Users of the fake Laravel app, looked up by bearer token. Laravel user ids
// are integers, and PusherBroadcaster puts them into channel_data as numbers.
const users = new Map(); // token -> { id, info, deny: Set<channel_name> }
let nextUserId = 1;

/** Registers a user; info is what the channel callback would return. */
function makeUser(name, { deny = [] } = {}) {
  const id = nextUserId++;
  const token = `token-${id}-${randomBytes(6).toString('hex')}`;
  const user = { id, token, info: { id, name }, deny: new Set(deny) };
  users.set(token, user);
  return user;
}

// ---------------------------------------------------------------------------
// POST /broadcasting/auth, as Laravel answers it.

const authRequests = []; // every request the endpoint saw
let authServer;
let authEndpoint;

function handleAuth(req, res) {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const params = new URLSearchParams(body);
    const rec = {
      method: req.method,
      url: req.url,
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      socket_id: params.get('socket_id'),
      channel_name: params.get('channel_name'),
    };
    authRequests.push(rec);
    const reply = (status, obj) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    if (req.method !== 'POST' || req.url !== '/broadcasting/auth') return reply(404, { message: 'Not Found' });
    const token = (rec.authorization || '').replace(/^Bearer /, '');
    const user = users.get(token);
    // Laravel: unauthenticated or a false channel callback is a 403.
    if (!user || !rec.socket_id || !rec.channel_name) return reply(403, { message: 'Unauthenticated.' });
    if (user.deny.has(rec.channel_name)) return reply(403, { message: 'This action is unauthorized.' });
    try {
      if (rec.channel_name.startsWith('presence-')) {
        return reply(200, laravel.authorizeChannel(rec.socket_id, rec.channel_name, { user_id: user.id, user_info: user.info }));
      }
      if (rec.channel_name.startsWith('private-')) {
        return reply(200, laravel.authorizeChannel(rec.socket_id, rec.channel_name));
      }
      return reply(403, { message: 'not an authorizable channel' });
    } catch (err) {
      return reply(500, { message: String(err) });
    }
  });
}

before(async () => {
  authServer = createServer(handleAuth);
  await new Promise((resolve, reject) => {
    authServer.once('error', reject);
    authServer.listen(0, '127.0.0.1', resolve);
  });
  authEndpoint = `http://127.0.0.1:${authServer.address().port}/broadcasting/auth`;
});

const openClients = new Set();

after(async () => {
  for (const c of [...openClients]) c.close();
  openClients.clear();
  if (authServer) {
    authServer.closeAllConnections();
    await new Promise((resolve) => authServer.close(() => resolve()));
  }
});

// ---------------------------------------------------------------------------

const isNoise = (f) => f.event === 'pusher:ping' || f.event === 'pusher:pong';

/** Strips pusher-js internals to the wire-visible frame fields. */
const wire = (f) => {
  const o = { event: f.event };
  if (f.channel !== undefined) o.channel = f.channel;
  if (f.data !== undefined) o.data = f.data;
  if (f.user_id !== undefined) o.user_id = f.user_id;
  return o;
};

const subOK = (channel) => ({ event: 'pusher_internal:subscription_succeeded', channel, data: {} });

/**
 * One browser tab of the Laravel app: an Echo instance (which creates its own
 * pusher-js client) plus a log of every frame pusher-js decoded.
 */
class EchoClient {
  constructor(name, user) {
    this.name = name;
    this.user = user;
    this.frames = [];
    this.errors = [];
    this.states = [];
    this.waiters = new Set();

    this.echo = new Echo({
      broadcaster: 'pusher',
      key: APP_KEY,
      cluster: 'mt1',
      wsHost: HOST,
      wsPort: PORT,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      Pusher, // no window.Pusher in Node
      authEndpoint,
      // A fresh object per client: Echo's default auth.headers object is
      // shared between instances.
      auth: { headers: user ? { Authorization: `Bearer ${user.token}` } : {} },
    });
    openClients.add(this);
    this.pusher = this.echo.connector.pusher;
    const conn = this.pusher.connection;
    conn.bind('message', (f) => {
      // Deep copy: pusher-js keeps (and later mutates) the presence hash it
      // was handed as its members map.
      if (!isNoise(f)) this.frames.push(structuredClone(f));
      this._notify();
    });
    conn.bind('error', (err) => {
      this.errors.push(err);
      this._notify();
    });
    conn.bind('state_change', (s) => {
      this.states.push(s.current);
      this._notify();
    });
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolves when pred() is truthy; rejects after ms with the client's log.
   * pred is re-checked on every frame, error and state change, and polled
   * (Echo callbacks such as here()/joining() are not hooked).
   */
  until(pred, what, ms = WAIT_MS) {
    return waitUntil(pred, {
      ms,
      watchers: this.waiters,
      poll: 20,
      describe: () =>
        `${this.name}: timed out after ${ms} ms waiting for ${what}\n` +
        `  state=${this.pusher.connection.state} states=${JSON.stringify(this.states)}\n` +
        `  frames=${JSON.stringify(this.frames)}\n` +
        `  errors=${JSON.stringify(this.errors)}`,
    });
  }

  /** Echo connects on construction; wait until pusher-js is connected. */
  async connected() {
    await this.until(() => this.echo.connectionStatus() === 'connected', 'Echo connectionStatus() connected');
    assert.match(this.echo.socketId(), /^\d+\.\d+$/, `${this.name}: socket_id format`);
    return this;
  }

  /**
   * Waits for Echo's subscribed() callback on a channel object returned by
   * Echo.private()/Echo.join(). Must be called synchronously after creating
   * the channel (before the subscription can complete).
   */
  subscribed(channel, what) {
    let ok = false;
    channel.subscribed(() => (ok = true));
    channel.error((e) => this.errors.push({ subscription_error: channel.name, e }));
    return this.until(() => {
      if (this.errors.some((e) => e.subscription_error === channel.name)) {
        throw new Error(`${this.name}: subscription to ${channel.name} failed: ${JSON.stringify(this.errors)}`);
      }
      return ok;
    }, `subscribed() on ${what || channel.name}`);
  }

  meaningful() {
    return this.frames.map(wire);
  }

  close() {
    openClients.delete(this);
    try {
      this.echo.disconnect();
    } catch {
      /* ignore */
    }
  }

  async disconnect() {
    this.close();
    await this.until(() => this.pusher.connection.state === 'disconnected', 'state disconnected').catch(() => {});
  }
}

async function assertFrames(client, expected, msg) {
  await sleep(QUIET_MS);
  assert.deepEqual(client.meaningful(), expected, `${client.name}: ${msg}`);
  assert.deepEqual(client.errors, [], `${client.name}: unexpected errors`);
}

async function trigger(channel, event, data, params) {
  const res = await laravel.trigger(channel, event, data, params);
  assert.equal(res.status, 200, `trigger ${event} on ${channel}: HTTP status`);
  assert.deepEqual(await res.json(), {}, `trigger ${event} on ${channel}: body`);
}

/** The auth requests pusher-js made for one socket. */
const authFor = (client) =>
  authRequests
    .filter((r) => r.socket_id === client.echo.socketId())
    .map((r) => ({ method: r.method, url: r.url, contentType: r.contentType, authorization: r.authorization, channel_name: r.channel_name }));

const authReq = (user, channel_name) => ({
  method: 'POST',
  url: '/broadcasting/auth',
  contentType: 'application/x-www-form-urlencoded',
  authorization: `Bearer ${user.token}`,
  channel_name,
});

const byId = (a, b) => a.id - b.id;

// ---------------------------------------------------------------------------

test('private channel: Echo.private().listen() gets App\\Events\\* and .broadcastAs names; others get nothing', { timeout: CASE_TIMEOUT_MS }, async () => {
  const n = uniq();
  const name = `orders.${n}`;
  const ch = `private-${name}`;
  const ua = makeUser('Ana');
  const ub = makeUser('Bo');
  const a = await new EchoClient('A', ua).connected();
  const b = await new EchoClient('B (not subscribed)', ub).connected();

  const shipped = [];
  const custom = [];
  const channel = a.echo.private(name);
  const ready = a.subscribed(channel);
  channel
    .listen('OrderShipped', (e) => shipped.push(e))
    .listen('.custom-name', (e) => custom.push(e));
  await ready;
  assert.equal(channel.name, ch);

  // broadcast(new OrderShipped($order)) with public $order.
  const payload = { order: { id: 7, status: 'shipped', total: 12.5, tags: ['a', 'b'] } };
  await trigger(ch, 'App\\Events\\OrderShipped', payload);
  // broadcastAs() { return 'custom-name'; }
  await trigger(ch, 'custom-name', { note: 'Ümlaut ✓', n: null });
  // Neither listener may catch these.
  await trigger(ch, 'OrderShipped', { wrong: 'not namespaced' });
  await trigger(ch, 'App\\Events\\custom-name', { wrong: 'namespaced' });

  await a.until(() => shipped.length >= 1 && custom.length >= 1, 'OrderShipped and custom-name');
  await assertFrames(a, [
    subOK(ch),
    { event: 'App\\Events\\OrderShipped', channel: ch, data: payload },
    { event: 'custom-name', channel: ch, data: { note: 'Ümlaut ✓', n: null } },
    { event: 'OrderShipped', channel: ch, data: { wrong: 'not namespaced' } },
    { event: 'App\\Events\\custom-name', channel: ch, data: { wrong: 'namespaced' } },
  ], 'frames on the subscribed client');
  assert.deepEqual(shipped, [payload], 'listen(OrderShipped) callbacks');
  assert.deepEqual(custom, [{ note: 'Ümlaut ✓', n: null }], "listen('.custom-name') callbacks");

  // The auth went through Echo's authEndpoint and headers, once, for A only.
  assert.deepEqual(authFor(a), [authReq(ua, ch)]);
  assert.deepEqual(authFor(b), []);
  await assertFrames(b, [], 'B is not subscribed');

  await a.disconnect();
  await b.disconnect();
});

test('private channel: broadcast(...)->toOthers() skips the sender socket (Echo.socketId())', { timeout: CASE_TIMEOUT_MS }, async () => {
  const name = `orders.${uniq()}`;
  const ch = `private-${name}`;
  const a = await new EchoClient('A (sender)', makeUser('Ana')).connected();
  const b = await new EchoClient('B', makeUser('Bo')).connected();
  const gotA = [];
  const gotB = [];
  const chA = a.echo.private(name);
  const readyA = a.subscribed(chA);
  chA.listen('OrderShipped', (e) => gotA.push(e));
  const chB = b.echo.private(name);
  const readyB = b.subscribed(chB);
  chB.listen('OrderShipped', (e) => gotB.push(e));
  await Promise.all([readyA, readyB]);

  // What Laravel does with the X-Socket-ID header Echo's interceptors add.
  await trigger(ch, 'App\\Events\\OrderShipped', { order: { id: 1 } }, { socket_id: a.echo.socketId() });
  await b.until(() => gotB.length >= 1, 'OrderShipped on B');
  await assertFrames(b, [subOK(ch), { event: 'App\\Events\\OrderShipped', channel: ch, data: { order: { id: 1 } } }], 'B frames');
  await assertFrames(a, [subOK(ch)], 'A (excluded) frames');
  assert.deepEqual(gotB, [{ order: { id: 1 } }]);
  assert.deepEqual(gotA, []);
  await a.disconnect();
  await b.disconnect();
});

test('private channel: a 403 from /broadcasting/auth calls error() and nothing is delivered', { timeout: CASE_TIMEOUT_MS }, async () => {
  const name = `orders.${uniq()}`;
  const ch = `private-${name}`;
  const a = await new EchoClient('A (denied)', makeUser('Mallory', { deny: [ch] })).connected();
  const errs = [];
  const got = [];
  const subs = [];
  a.echo
    .private(name)
    .subscribed(() => subs.push(1))
    .error((e) => errs.push(e))
    .listen('OrderShipped', (e) => got.push(e));
  await a.until(() => errs.length === 1, 'error() callback');
  assert.equal(errs[0].type, 'AuthError');
  assert.equal(errs[0].status, 403);
  assert.deepEqual(authFor(a), [authReq(a.user, ch)]);
  await trigger(ch, 'App\\Events\\OrderShipped', { order: { id: 1 } });
  await sleep(QUIET_MS);
  assert.deepEqual(subs, []);
  assert.deepEqual(got, []);
  assert.deepEqual(a.meaningful(), [], 'no frames: the subscription never reached the server');
  assert.equal(a.echo.connectionStatus(), 'connected');
  await a.disconnect();
});

test('presence channel: Echo.join() here/joining/leaving with exact user info', { timeout: CASE_TIMEOUT_MS }, async () => {
  const name = `room.${uniq()}`;
  const ch = `presence-${name}`;
  const ua = makeUser('Ana');
  const ub = makeUser('Bo');
  const uc = makeUser('Cy');
  const [a, b, c] = await Promise.all([
    new EchoClient('A', ua).connected(),
    new EchoClient('B', ub).connected(),
    new EchoClient('C', uc).connected(),
  ]);

  const log = { A: { here: [], joining: [], leaving: [], ev: [] }, B: { here: [], joining: [], leaving: [], ev: [] }, C: { here: [], joining: [], leaving: [], ev: [] } };
  const join = (client, key) => {
    const l = log[key];
    const channel = client.echo.join(name);
    const ready = client.subscribed(channel, `join(${name})`);
    channel
      .here((users) => l.here.push(users))
      .joining((user) => l.joining.push(user))
      .leaving((user) => l.leaving.push(user))
      .listen('RoomUpdated', (e) => l.ev.push(e));
    return ready;
  };

  await join(a, 'A');
  assert.deepEqual(log.A.here, [[ua.info]], 'A here() with only A');

  await join(b, 'B');
  assert.deepEqual(log.B.here.length, 1);
  assert.deepEqual([...log.B.here[0]].sort(byId), [ua.info, ub.info], 'B here()');
  await a.until(() => log.A.joining.length === 1, 'A joining(B)');
  assert.deepEqual(log.A.joining, [ub.info]);

  await join(c, 'C');
  assert.deepEqual([...log.C.here[0]].sort(byId), [ua.info, ub.info, uc.info], 'C here()');
  await a.until(() => log.A.joining.length === 2, 'A joining(C)');
  await b.until(() => log.B.joining.length === 1, 'B joining(C)');
  assert.deepEqual(log.A.joining, [ub.info, uc.info]);
  assert.deepEqual(log.B.joining, [uc.info]);

  // B leaves the room (Echo.leave unsubscribes presence-room.N).
  b.echo.leave(name);
  await a.until(() => log.A.leaving.length === 1, 'A leaving(B)');
  await c.until(() => log.C.leaving.length === 1, 'C leaving(B)');
  assert.deepEqual(log.A.leaving, [ub.info]);
  assert.deepEqual(log.C.leaving, [ub.info]);

  // After leaving, B gets nothing more from the room.
  await trigger(ch, 'App\\Events\\RoomUpdated', { topic: 'after B left' });
  await a.until(() => log.A.ev.length === 1, 'RoomUpdated on A');
  await c.until(() => log.C.ev.length === 1, 'RoomUpdated on C');
  await sleep(QUIET_MS);

  // Exact callbacks, nothing extra.
  assert.deepEqual(log.A.here, [[ua.info]]);
  assert.deepEqual(log.B.here.length, 1);
  assert.deepEqual(log.C.here.length, 1);
  assert.deepEqual(log.B.leaving, [], 'B must not see itself leave');
  assert.deepEqual(log.C.joining, [], 'C joined last');
  assert.deepEqual(log.A.ev, [{ topic: 'after B left' }]);
  assert.deepEqual(log.C.ev, [{ topic: 'after B left' }]);
  assert.deepEqual(log.B.ev, [], 'B left before RoomUpdated');

  // Wire frames: user ids are normalised to strings (§3.6), info is exact.
  const id = (u) => String(u.id);
  const added = (u) => ({ event: 'pusher_internal:member_added', channel: ch, data: { user_id: id(u), user_info: u.info } });
  const removed = (u) => ({ event: 'pusher_internal:member_removed', channel: ch, data: { user_id: id(u) } });
  const updated = { event: 'App\\Events\\RoomUpdated', channel: ch, data: { topic: 'after B left' } };
  const presenceOK = (members) => ({
    event: 'pusher_internal:subscription_succeeded',
    channel: ch,
    data: { presence: { count: members.length, ids: members.map(id), hash: Object.fromEntries(members.map((u) => [id(u), u.info])) } },
  });
  const sortIds = (frames) =>
    frames.map((f) => (f.event === 'pusher_internal:subscription_succeeded' ? { ...f, data: { presence: { ...f.data.presence, ids: [...f.data.presence.ids].sort() } } } : f));
  assert.deepEqual(sortIds(a.meaningful()), sortIds([presenceOK([ua]), added(ub), added(uc), removed(ub), updated]), 'A frames');
  assert.deepEqual(sortIds(b.meaningful()), sortIds([presenceOK([ua, ub]), added(uc)]), 'B frames');
  assert.deepEqual(sortIds(c.meaningful()), sortIds([presenceOK([ua, ub, uc]), removed(ub), updated]), 'C frames');
  for (const cl of [a, b, c]) assert.deepEqual(cl.errors, [], `${cl.name} errors`);

  // One presence auth per client, with its own bearer token.
  assert.deepEqual(authFor(a), [authReq(ua, ch)]);
  assert.deepEqual(authFor(b), [authReq(ub, ch)]);
  assert.deepEqual(authFor(c), [authReq(uc, ch)]);

  await Promise.all([a.disconnect(), b.disconnect(), c.disconnect()]);
});

test('whisper/listenForWhisper on a private channel: exact data to the other tab, no echo', { timeout: CASE_TIMEOUT_MS }, async () => {
  const name = `chat.${uniq()}`;
  const ch = `private-${name}`;
  const [a, b] = await Promise.all([new EchoClient('A', makeUser('Ana')).connected(), new EchoClient('B', makeUser('Bo')).connected()]);
  const gotA = [];
  const gotB = [];
  const chA = a.echo.private(name);
  const readyA = a.subscribed(chA);
  chA.listenForWhisper('typing', (d, meta) => gotA.push({ d, meta }));
  const chB = b.echo.private(name);
  const readyB = b.subscribed(chB);
  chB.listenForWhisper('typing', (d, meta) => gotB.push({ d, meta }));
  await Promise.all([readyA, readyB]);

  const data = { name: 'Ana', typing: true, at: [1, 2.5], nested: { s: 'é"\\' } };
  chA.whisper('typing', data);
  await b.until(() => gotB.length === 1, 'whisper typing on B');
  await sleep(QUIET_MS);
  assert.deepEqual(gotB, [{ d: data, meta: {} }], 'B listenForWhisper: data, no user_id on a private channel');
  assert.deepEqual(gotA, [], 'A must not receive its own whisper');
  await assertFrames(b, [subOK(ch), { event: 'client-typing', channel: ch, data }], 'B frames');
  await assertFrames(a, [subOK(ch)], 'A frames (no echo)');
  await a.disconnect();
  await b.disconnect();
});

test('whisper/listenForWhisper on a presence channel: exact data with the sender user_id, no echo', { timeout: CASE_TIMEOUT_MS }, async () => {
  const name = `room.${uniq()}`;
  const ch = `presence-${name}`;
  const ua = makeUser('Ana');
  const ub = makeUser('Bo');
  const a = await new EchoClient('A', ua).connected();
  const b = await new EchoClient('B', ub).connected();
  const gotA = [];
  const gotB = [];
  const other = [];
  const chA = a.echo.join(name);
  const readyA = a.subscribed(chA, `join(${name})`);
  chA.listenForWhisper('typing', (d, meta) => gotA.push({ d, meta }));
  await readyA;
  const chB = b.echo.join(name);
  const readyB = b.subscribed(chB, `join(${name})`);
  chB.listenForWhisper('typing', (d, meta) => gotB.push({ d, meta })).listenForWhisper('stopped', (d) => other.push(d));
  await readyB;
  await a.until(() => a.frames.some((f) => f.event === 'pusher_internal:member_added'), 'member_added on A');

  chA.whisper('typing', { user: ua.info, typing: true });
  await b.until(() => gotB.length === 1, 'whisper typing on B');
  await sleep(QUIET_MS);
  assert.deepEqual(gotB, [{ d: { user: ua.info, typing: true }, meta: { user_id: String(ua.id) } }]);
  assert.deepEqual(gotA, [], 'A must not receive its own whisper');
  assert.deepEqual(other, [], 'listenForWhisper(stopped) must not fire for typing');
  const last = b.meaningful().at(-1);
  assert.deepEqual(last, { event: 'client-typing', channel: ch, data: { user: ua.info, typing: true }, user_id: String(ua.id) });
  assert.ok(!a.frames.some((f) => f.event.startsWith('client-')), `echo to sender: ${JSON.stringify(a.frames)}`);
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.disconnect();
  await b.disconnect();
});
