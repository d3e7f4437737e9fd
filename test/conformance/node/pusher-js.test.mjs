// End-to-end tests of Herald with the official Pusher libraries:
// pusher-js (client, Node build) and pusher (pusher-http-node, server SDK).
//
// Environment:
//   HERALD_HOST, HERALD_PORT              server address (default 127.0.0.1:6001)
//   HERALD_APP_ID, HERALD_APP_KEY,
//   HERALD_APP_SECRET                     app credentials (default app-id/app-key/app-secret)
//
// The app must have client events enabled.
//
// Run: node --test e2e.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import PusherClient from 'pusher-js';
import { HOST, PORT, APP_KEY, OTHER_KEY, serverSDK, uniq, waitUntil } from '../lib/herald.mjs';


// How long we wait for something that should happen, and how long we listen
// for something that must not happen.
const WAIT_MS = 5000;
const QUIET_MS = 300;
const CASE_TIMEOUT_MS = 15000;

const server = serverSDK({
  // Enables private-encrypted- channels: authorizeChannel adds shared_secret
  // and trigger encrypts the data end to end (Herald only relays it).
  encryptionMasterKeyBase64: randomBytes(32).toString('base64'),
});


const openClients = new Set();

after(async () => {
  for (const c of openClients) c.close();
  openClients.clear();
});

// Frames that carry no information for these tests (liveness traffic).
const isNoise = (f) => f.event === 'pusher:ping' || f.event === 'pusher:pong';

/**
 * A pusher-js client plus a log of every frame it received after the
 * handshake (pusher_internal:* included, exactly as decoded by pusher-js).
 */
class Client {
  constructor(name, { user } = {}) {
    this.name = name;
    this.user = user; // { id, info } for presence auth and signin
    this.frames = [];
    this.errors = [];
    this.states = [];
    this.waiters = new Set();

    this.pusher = new PusherClient(APP_KEY, {
      cluster: 'mt1', // required by pusher-js >= 8 even with wsHost
      wsHost: HOST,
      wsPort: PORT,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: (params, cb) => {
          try {
            const presence = params.channelName.startsWith('presence-');
            if (presence && !this.user) throw new Error(`${name}: no user for presence auth`);
            const data = presence
              ? server.authorizeChannel(params.socketId, params.channelName, {
                  user_id: this.user.id,
                  user_info: this.user.info,
                })
              : server.authorizeChannel(params.socketId, params.channelName);
            cb(null, data);
          } catch (err) {
            cb(err, null);
          }
        },
      },
      userAuthentication: {
        customHandler: (params, cb) => {
          try {
            if (!this.user) throw new Error(`${name}: no user for signin`);
            const user = { id: this.user.id, user_info: this.user.info };
            if (this.user.watchlist) user.watchlist = this.user.watchlist;
            cb(null, server.authenticateUser(params.socketId, user));
          } catch (err) {
            cb(err, null);
          }
        },
      },
    });
    openClients.add(this);

    const conn = this.pusher.connection;
    conn.bind('message', (frame) => {
      this.frames.push(frame);
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

  get socketId() {
    return this.pusher.connection.socket_id;
  }

  get state() {
    return this.pusher.connection.state;
  }

  _notify() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves when pred() is truthy; rejects after ms with a descriptive error. */
  until(pred, what, ms = WAIT_MS) {
    return waitUntil(pred, {
      ms,
      watchers: this.waiters,
      describe: () =>
        `${this.name}: timed out after ${ms} ms waiting for ${what}\n` +
        `  state=${this.state} states=${JSON.stringify(this.states)}\n` +
        `  frames=${JSON.stringify(this.frames)}\n` +
        `  errors=${JSON.stringify(this.errors)}`,
    });
  }

  async connect() {
    this.pusher.connect();
    await this.until(() => this.state === 'connected', 'state connected');
    assert.match(this.socketId, /^\d+\.\d+$/, `${this.name}: socket_id format`);
    return this;
  }

  /** Waits for the n-th frame (0-based) that matches pred. */
  frameWhere(pred, what) {
    return this.until(() => this.frames.find((f) => !isNoise(f) && pred(f)), what);
  }

  /** Subscribes and waits for pusher:subscription_succeeded on the channel. */
  async subscribe(name) {
    const ch = this.pusher.subscribe(name);
    const got = [];
    ch.bind('pusher:subscription_succeeded', (d) => got.push(d));
    ch.bind('pusher:subscription_error', (d) => this.errors.push({ subscription_error: name, data: d }));
    await this.until(() => got.length > 0, `pusher:subscription_succeeded on ${name}`);
    return ch;
  }

  /** Frames without liveness noise. */
  meaningful() {
    return this.frames.filter((f) => !isNoise(f));
  }

  close() {
    openClients.delete(this);
    try {
      this.pusher.disconnect();
    } catch {
      /* ignore */
    }
  }

  async disconnect() {
    this.close();
    await this.until(() => this.state === 'disconnected', 'state disconnected').catch(() => {});
  }
}

/** Strips pusher-js internals to the wire-visible frame fields. */
const wire = (f) => {
  const o = { event: f.event };
  if (f.channel !== undefined) o.channel = f.channel;
  if (f.data !== undefined) o.data = f.data;
  if (f.user_id !== undefined) o.user_id = f.user_id;
  return o;
};

/** Asserts the exact frame list a client received (ping/pong ignored), after a quiet period. */
async function assertFrames(client, expected, msg) {
  await sleep(QUIET_MS);
  assert.deepEqual(client.meaningful().map(wire), expected, `${client.name}: ${msg}`);
  assert.deepEqual(client.errors, [], `${client.name}: unexpected connection errors`);
}

const subOK = (channel) => ({ event: 'pusher_internal:subscription_succeeded', channel, data: {} });

async function expectOK(promise, what) {
  const res = await promise;
  assert.equal(res.status, 200, `${what}: HTTP status`);
  return res.json();
}

// ---------------------------------------------------------------------------

test('public channel: subscribe and receive an HTTP-triggered event', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `public-${uniq()}`;
  const a = await new Client('A').connect();
  const channel = await a.subscribe(ch);
  const got = [];
  channel.bind('ev', (data, meta) => got.push({ data, meta }));

  const body = await expectOK(server.trigger(ch, 'ev', { a: 1 }), 'trigger');
  assert.deepEqual(body, {});
  await a.until(() => got.length === 1, 'ev on public channel');
  assert.deepEqual(got[0].data, { a: 1 });

  await assertFrames(a, [subOK(ch), { event: 'ev', channel: ch, data: { a: 1 } }], 'public channel frames');
  assert.equal(got.length, 1);
  await a.disconnect();
});

test('private channel: customHandler auth and HTTP-triggered event', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `private-${uniq()}`;
  const a = await new Client('A').connect();
  const channel = await a.subscribe(ch);
  const got = [];
  channel.bind('ev', (data) => got.push(data));

  await expectOK(server.trigger(ch, 'ev', { a: 1 }), 'trigger');
  await a.until(() => got.length === 1, 'ev on private channel');
  assert.deepEqual(got, [{ a: 1 }]);
  await assertFrames(a, [subOK(ch), { event: 'ev', channel: ch, data: { a: 1 } }], 'private channel frames');
  await a.disconnect();
});

test('private channel: bad signature is rejected, socket stays open', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `private-${uniq()}`;
  const a = await new Client('A').connect();
  // Sign for a different socket id: the server must refuse the subscription.
  a.pusher.config.channelAuthorizer = (params, cb) => cb(null, server.authorizeChannel('1.1', params.channelName));
  const channel = a.pusher.subscribe(ch);
  const ok = [];
  channel.bind('pusher:subscription_succeeded', () => ok.push(1));
  await a.until(() => a.frames.some((f) => f.event === 'pusher:error' || f.event === 'pusher:subscription_error'),
    'pusher:error or pusher:subscription_error');
  await sleep(QUIET_MS);
  assert.deepEqual(ok, [], 'subscription must not succeed');
  assert.equal(a.state, 'connected', 'socket must stay connected');
  // Nothing published there may reach us.
  await expectOK(server.trigger(ch, 'ev', { a: 1 }), 'trigger');
  await sleep(QUIET_MS);
  assert.ok(!a.frames.some((f) => f.event === 'ev'), `event leaked to unauthorized socket: ${JSON.stringify(a.frames)}`);
  await a.disconnect();
});

test('presence channel: members, member_added, member_removed', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `presence-${uniq()}`;
  const u1 = { id: `u1-${uniq()}`, info: { name: 'Ana' } };
  const u2 = { id: `u2-${uniq()}`, info: { name: 'Bo', tags: ['x'] } };

  const a = await new Client('A', { user: u1 }).connect();
  const chA = await a.subscribe(ch);
  assert.equal(chA.members.count, 1);
  assert.equal(chA.members.me.id, u1.id);
  assert.deepEqual(chA.members.me.info, u1.info);

  const added = [];
  const removed = [];
  chA.bind('pusher:member_added', (m) => added.push({ id: m.id, info: m.info }));
  chA.bind('pusher:member_removed', (m) => removed.push({ id: m.id, info: m.info }));

  const b = await new Client('B', { user: u2 }).connect();
  const chB = await b.subscribe(ch);
  await a.until(() => added.length === 1, 'pusher:member_added');
  assert.deepEqual(added, [{ id: u2.id, info: u2.info }]);

  assert.equal(chA.members.count, 2, 'A members.count');
  assert.equal(chB.members.count, 2, 'B members.count');
  assert.equal(chB.members.me.id, u2.id);
  const membersOf = (c) => {
    const out = {};
    c.members.each((m) => (out[m.id] = m.info));
    return out;
  };
  assert.deepEqual(membersOf(chA), { [u1.id]: u1.info, [u2.id]: u2.info });
  assert.deepEqual(membersOf(chB), { [u1.id]: u1.info, [u2.id]: u2.info });

  // Wire check of B's subscription_succeeded presence payload.
  const bSub = b.meaningful().map(wire);
  assert.equal(bSub.length, 1, `B frames: ${JSON.stringify(bSub)}`);
  assert.equal(bSub[0].event, 'pusher_internal:subscription_succeeded');
  assert.equal(bSub[0].channel, ch);
  const p = bSub[0].data.presence;
  assert.equal(p.count, 2);
  assert.deepEqual([...p.ids].sort(), [u1.id, u2.id].sort());
  assert.deepEqual(p.hash, { [u1.id]: u1.info, [u2.id]: u2.info });

  await b.disconnect();
  await a.until(() => removed.length === 1, 'pusher:member_removed');
  assert.deepEqual(removed, [{ id: u2.id, info: u2.info }]);
  assert.equal(chA.members.count, 1);

  await sleep(QUIET_MS);
  const aFrames = a.meaningful().map(wire);
  assert.equal(aFrames.length, 3, `A frames: ${JSON.stringify(aFrames)}`);
  assert.equal(aFrames[0].event, 'pusher_internal:subscription_succeeded');
  assert.deepEqual(aFrames[0].data, { presence: { count: 1, ids: [u1.id], hash: { [u1.id]: u1.info } } });
  assert.deepEqual(aFrames[1], {
    event: 'pusher_internal:member_added',
    channel: ch,
    data: { user_id: u2.id, user_info: u2.info },
  });
  assert.deepEqual(aFrames[2], { event: 'pusher_internal:member_removed', channel: ch, data: { user_id: u2.id } });
  assert.deepEqual(a.errors, []);
  await a.disconnect();
});

test('client events: relayed to the other subscriber, not echoed to the sender', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `private-${uniq()}`;
  const a = await new Client('A').connect();
  const b = await new Client('B').connect();
  const chA = await a.subscribe(ch);
  const chB = await b.subscribe(ch);
  const gotA = [];
  const gotB = [];
  chA.bind('client-typing', (d, meta) => gotA.push({ d, meta }));
  chB.bind('client-typing', (d, meta) => gotB.push({ d, meta }));

  assert.equal(chA.trigger('client-typing', { on: true }), true, 'trigger accepted by pusher-js');
  await b.until(() => gotB.length === 1, 'client-typing on B');
  assert.deepEqual(gotB[0].d, { on: true });
  assert.deepEqual(gotB[0].meta, {}, 'no user_id on a private channel client event');

  await assertFrames(b, [subOK(ch), { event: 'client-typing', channel: ch, data: { on: true } }], 'B frames');
  await assertFrames(a, [subOK(ch)], 'A frames (no echo)');
  assert.deepEqual(gotA, []);
  await a.disconnect();
  await b.disconnect();
});

test('client events on presence channel carry user_id', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `presence-${uniq()}`;
  const u1 = { id: `u1-${uniq()}`, info: {} };
  const u2 = { id: `u2-${uniq()}`, info: {} };
  const a = await new Client('A', { user: u1 }).connect();
  const chA = await a.subscribe(ch);
  const b = await new Client('B', { user: u2 }).connect();
  const chB = await b.subscribe(ch);
  const gotB = [];
  chB.bind('client-move', (d, meta) => gotB.push({ d, meta }));
  chA.trigger('client-move', { x: 3 });
  await b.until(() => gotB.length === 1, 'client-move on B');
  assert.deepEqual(gotB, [{ d: { x: 3 }, meta: { user_id: u1.id } }]);
  const last = b.meaningful().map(wire).at(-1);
  assert.deepEqual(last, { event: 'client-move', channel: ch, data: { x: 3 }, user_id: u1.id });
  await sleep(QUIET_MS);
  assert.ok(!a.frames.some((f) => f.event === 'client-move'), 'no echo to sender');
  await a.disconnect();
  await b.disconnect();
});

test('HTTP API: triggerBatch, GET /channels, /channels/{name}, /channels/{name}/users', { timeout: CASE_TIMEOUT_MS }, async () => {
  const id = uniq();
  const pub = `batch-${id}`;
  const prv = `private-batch-${id}`;
  const prefix = `presence-batch-${id}-`;
  const pres = `${prefix}room`;
  const u1 = { id: `u1-${id}`, info: { n: 1 } };
  const u2 = { id: `u2-${id}`, info: { n: 2 } };

  const a = await new Client('A', { user: u1 }).connect();
  const b = await new Client('B', { user: u2 }).connect();
  await a.subscribe(pub);
  await a.subscribe(prv);
  await a.subscribe(pres);
  await b.subscribe(pres);

  const body = await expectOK(
    server.triggerBatch([
      { channel: pub, name: 'b1', data: { n: 1 } },
      { channel: prv, name: 'b2', data: 'plain string' },
      { channel: pres, name: 'b3', data: { n: 3 } },
    ]),
    'triggerBatch',
  );
  assert.deepEqual(body, {});
  await a.frameWhere((f) => f.event === 'b3', 'b3 on A');
  await b.frameWhere((f) => f.event === 'b3', 'b3 on B');
  await sleep(QUIET_MS);
  const aEvents = a.meaningful().map(wire).filter((f) => !f.event.startsWith('pusher'));
  assert.deepEqual(aEvents, [
    { event: 'b1', channel: pub, data: { n: 1 } },
    { event: 'b2', channel: prv, data: 'plain string' },
    { event: 'b3', channel: pres, data: { n: 3 } },
  ]);
  const bEvents = b.meaningful().map(wire).filter((f) => !f.event.startsWith('pusher'));
  assert.deepEqual(bEvents, [{ event: 'b3', channel: pres, data: { n: 3 } }]);

  // Exact answer for our own unique prefix.
  assert.deepEqual(
    await expectOK(server.get({ path: '/channels', params: { filter_by_prefix: prefix, info: 'user_count' } }), 'GET /channels (unique prefix)'),
    { channels: { [pres]: { user_count: 2 } } },
  );
  // The brief's query: every presence channel, with user_count.
  const all = await expectOK(
    server.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } }),
    'GET /channels (presence-)',
  );
  assert.deepEqual(Object.keys(all), ['channels']);
  assert.deepEqual(all.channels[pres], { user_count: 2 });
  for (const [name, attrs] of Object.entries(all.channels)) {
    assert.ok(name.startsWith('presence-'), `unexpected channel ${name}`);
    assert.deepEqual(Object.keys(attrs), ['user_count'], `${name}: ${JSON.stringify(attrs)}`);
  }
  // Without info: values are {} and only the prefix matches.
  assert.deepEqual(
    await expectOK(server.get({ path: '/channels', params: { filter_by_prefix: `batch-${id}` } }), 'GET /channels (no info)'),
    { channels: { [pub]: {} } },
  );
  // user_count without a presence- prefix is a 400.
  // (pusher-http-node rejects the promise with a RequestError on non-2xx.)
  const bad = await server.get({ path: '/channels', params: { info: 'user_count' } }).then(
    (res) => ({ status: res.status }),
    (err) => ({ status: err.status, body: err.body }),
  );
  assert.equal(bad.status, 400, `user_count without presence- filter must be 400: ${JSON.stringify(bad)}`);

  assert.deepEqual(
    await expectOK(server.get({ path: `/channels/${pres}`, params: { info: 'user_count' } }), 'GET /channels/{name}'),
    { occupied: true, user_count: 2 },
  );
  assert.deepEqual(
    await expectOK(server.get({ path: `/channels/none-${id}` }), 'GET /channels/{unoccupied}'),
    { occupied: false },
  );

  const users = await expectOK(server.get({ path: `/channels/${pres}/users` }), 'GET /channels/{name}/users');
  assert.deepEqual(Object.keys(users), ['users']);
  assert.deepEqual(
    [...users.users].sort((x, y) => x.id.localeCompare(y.id)),
    [{ id: u1.id }, { id: u2.id }],
  );
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.disconnect();
  await b.disconnect();
});

test('socket_id exclusion: trigger with socket_id skips that socket', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `excl-${uniq()}`;
  const a = await new Client('A').connect();
  const b = await new Client('B').connect();
  await a.subscribe(ch);
  await b.subscribe(ch);
  await expectOK(server.trigger(ch, 'ev', { s: 1 }, { socket_id: a.socketId }), 'trigger with socket_id');
  await b.frameWhere((f) => f.event === 'ev', 'ev on B');
  await assertFrames(b, [subOK(ch), { event: 'ev', channel: ch, data: { s: 1 } }], 'B frames');
  await assertFrames(a, [subOK(ch)], 'A frames (excluded)');
  await a.disconnect();
  await b.disconnect();
});

/** Signs in and waits until the #server-to-user channel is subscribed. */
async function signin(client) {
  client.pusher.signin();
  await client.until(() => client.pusher.user.user_data, 'pusher:signin_success');
  assert.equal(client.pusher.user.user_data.id, client.user.id);
  await client.until(
    () => client.pusher.user.serverToUserChannel && client.pusher.user.serverToUserChannel.subscribed,
    `#server-to-user-${client.user.id} subscription`,
  );
  // Watchlist status frames (§4.4) may come in between; the watchlist case checks them.
  const f = client.meaningful().filter((x) => x.event !== 'pusher_internal:watchlist_events').map(wire);
  assert.equal(f[0].event, 'pusher:signin_success');
  assert.deepEqual(Object.keys(f[0].data), ['user_data']);
  const expected = { id: client.user.id, user_info: client.user.info };
  if (client.user.watchlist) expected.watchlist = client.user.watchlist;
  assert.deepEqual(JSON.parse(f[0].data.user_data), expected);
  assert.deepEqual(f[1], subOK(`#server-to-user-${client.user.id}`));
}

test('signin + sendToUser', { timeout: CASE_TIMEOUT_MS }, async () => {
  const a = await new Client('A', { user: { id: 'user-1', info: { name: 'One' } } }).connect();
  const b = await new Client('B', { user: { id: `user-2-${uniq()}`, info: {} } }).connect();
  await signin(a);
  await signin(b);
  const gotA = [];
  const gotB = [];
  a.pusher.user.bind('hello', (d) => gotA.push(d));
  b.pusher.user.bind('hello', (d) => gotB.push(d));

  await expectOK(server.sendToUser('user-1', 'hello', { x: 1 }), 'sendToUser');
  await a.until(() => gotA.length === 1, 'hello on user-1');
  assert.deepEqual(gotA, [{ x: 1 }]);
  await sleep(QUIET_MS);
  const aFrames = a.meaningful().map(wire);
  assert.equal(aFrames.length, 3, JSON.stringify(aFrames));
  assert.deepEqual(aFrames[2], { event: 'hello', channel: '#server-to-user-user-1', data: { x: 1 } });
  assert.deepEqual(gotB, [], 'other user must not receive it');
  assert.equal(b.meaningful().length, 2, JSON.stringify(b.meaningful()));
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.disconnect();
  await b.disconnect();
});

test('terminateUserConnections closes the signed-in user, pusher-js does not reconnect', { timeout: CASE_TIMEOUT_MS }, async () => {
  const a = await new Client('A', { user: { id: 'user-1', info: {} } }).connect();
  const b = await new Client('B', { user: { id: `user-3-${uniq()}`, info: {} } }).connect();
  await signin(a);
  await signin(b);

  assert.deepEqual(await expectOK(server.terminateUserConnections('user-1'), 'terminateUserConnections'), {});
  await a.until(() => a.state === 'disconnected' || a.state === 'failed', 'A disconnected/failed');
  // pusher-js reports the close code as a connection error: 4001-4099 means "do not reconnect".
  const codes = a.errors.map((e) => e?.data?.code).filter((c) => c !== undefined);
  assert.ok(codes.some((c) => c >= 4000 && c < 4100), `expected a 40xx close code, got errors ${JSON.stringify(a.errors)}`);
  await sleep(1500); // pusher-js would reconnect after ~1 s for non-fatal codes
  assert.ok(a.state === 'disconnected' || a.state === 'failed', `A reconnected: state=${a.state} states=${JSON.stringify(a.states)}`);
  assert.ok(!a.states.slice(a.states.lastIndexOf('disconnected')).includes('connecting'), `A states ${JSON.stringify(a.states)}`);

  // B is a different user and must be untouched.
  assert.equal(b.state, 'connected');
  assert.deepEqual(b.errors, []);
  const ch = `after-term-${uniq()}`;
  await b.subscribe(ch);
  await a.disconnect();
  await b.disconnect();
});

test('private-encrypted channel: end-to-end encrypted event decrypted by pusher-js; client events refused by pusher-js', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `private-encrypted-${uniq()}`;
  const a = await new Client('A').connect();
  const channel = await a.subscribe(ch);
  const got = [];
  channel.bind('secret', (data) => got.push(data));

  await expectOK(server.trigger(ch, 'secret', { card: '4242', n: 7 }), 'trigger encrypted');
  await a.until(() => got.length === 1, 'decrypted secret');
  assert.deepEqual(got, [{ card: '4242', n: 7 }]);
  // On the wire the data is ciphertext: {nonce, ciphertext}, never the plaintext.
  const raw = a.frames.find((f) => f.event === 'secret');
  assert.ok(raw, 'raw frame');
  const wireData = typeof raw.data === 'string' ? JSON.parse(raw.data) : raw.data;
  assert.deepEqual(Object.keys(wireData).sort(), ['ciphertext', 'nonce']);
  assert.ok(!JSON.stringify(raw).includes('4242'), 'plaintext leaked on the wire');

  // Client events are not allowed on encrypted channels (PROTOCOL.md §5).
  const b = await new Client('B').connect();
  const chB = await b.subscribe(ch);
  const bGot = [];
  chB.bind('client-x', (d) => bGot.push(d));
  // pusher-js refuses client events on encrypted channels locally (PROTOCOL.md
  // §3.4: the protocol allows them, so Herald relays them like private ones).
  assert.throws(() => channel.trigger('client-x', { no: 1 }), /not currently supported/);
  await sleep(QUIET_MS);
  assert.deepEqual(bGot, []);
  assert.equal(a.state, 'connected');
  await a.disconnect();
  await b.disconnect();
});

test('cache channel: last event replayed on subscribe, pusher:cache_miss when empty', { timeout: CASE_TIMEOUT_MS }, async () => {
  const empty = `cache-${uniq()}`;
  const full = `cache-${uniq()}`;
  const a = await new Client('A').connect();

  const misses = [];
  const chEmpty = a.pusher.subscribe(empty);
  chEmpty.bind('pusher:cache_miss', () => misses.push(empty));
  await a.until(() => misses.length === 1, 'pusher:cache_miss on empty cache channel');

  await expectOK(server.trigger(full, 'price', { v: 1 }), 'trigger 1');
  await expectOK(server.trigger(full, 'price', { v: 2 }), 'trigger 2');
  const got = [];
  const missFull = [];
  const chFull = a.pusher.subscribe(full);
  chFull.bind('price', (d) => got.push(d));
  chFull.bind('pusher:cache_miss', () => missFull.push(1));
  await a.until(() => got.length === 1, 'cached price replayed');
  await sleep(QUIET_MS);
  assert.deepEqual(got, [{ v: 2 }], 'only the last event is replayed');
  assert.deepEqual(missFull, []);

  // Private and presence cache variants replay too.
  const priv = `private-cache-${uniq()}`;
  await expectOK(server.trigger(priv, 'state', { s: 'on' }), 'trigger private-cache');
  const gotPriv = [];
  a.pusher.subscribe(priv).bind('state', (d) => gotPriv.push(d));
  await a.until(() => gotPriv.length === 1, 'private-cache replay');
  assert.deepEqual(gotPriv, [{ s: 'on' }]);
  assert.deepEqual(a.errors, []);
  await a.disconnect();
});

test('watchlist: online/offline events for watched users', { timeout: CASE_TIMEOUT_MS }, async () => {
  const watched = `w-${uniq()}`;
  const a = await new Client('A', { user: { id: `watcher-${uniq()}`, info: {}, watchlist: [watched] } }).connect();
  const events = [];
  a.pusher.user.watchlist.bind('online', (e) => events.push({ name: 'online', ids: e.user_ids }));
  a.pusher.user.watchlist.bind('offline', (e) => events.push({ name: 'offline', ids: e.user_ids }));
  await signin(a);
  // Right after signin: the current status of every watched id.
  await a.until(() => events.length === 1, 'initial watchlist status');
  assert.deepEqual(events, [{ name: 'offline', ids: [watched] }]);

  const b = await new Client('B', { user: { id: watched, info: {} } }).connect();
  await signin(b);
  await a.until(() => events.some((e) => e.name === 'online'), 'watchlist online');
  assert.deepEqual(events, [{ name: 'offline', ids: [watched] }, { name: 'online', ids: [watched] }]);

  await b.disconnect();
  await a.until(() => events.some((e) => e.name === 'offline'), 'watchlist offline');
  await sleep(QUIET_MS);
  assert.deepEqual(events, [
    { name: 'offline', ids: [watched] },
    { name: 'online', ids: [watched] },
    { name: 'offline', ids: [watched] },
  ]);
  await a.disconnect();
});

test('unknown app key: 4001, pusher-js does not reconnect', { timeout: CASE_TIMEOUT_MS }, async () => {
  const p = new PusherClient('no-such-key', {
    cluster: 'mt1', wsHost: HOST, wsPort: PORT, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
  });
  const states = [p.connection.state];
  const errors = [];
  p.connection.bind('state_change', (s) => states.push(s.current));
  p.connection.bind('error', (e) => errors.push(e));
  const deadline = Date.now() + WAIT_MS;
  while (!errors.length && Date.now() < deadline) await sleep(20);
  await sleep(1500); // pusher-js retries non-fatal codes after ~1 s
  const final = [...states];
  p.disconnect();
  const codes = errors.map((e) => e?.data?.code ?? e?.error?.data?.code);
  assert.ok(codes.includes(4001), `expected 4001, got ${JSON.stringify(errors)}`);
  // One attempt, refused (pusher-js: 4000–4099 → "refused" → disconnected),
  // never connecting again.
  assert.deepEqual(final, ['connecting', 'disconnected'], `states: ${JSON.stringify(final)}`);
});

test('other app: same channel name in another app receives nothing', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `shared-${uniq()}`;
  const a = await new Client('A').connect();
  await a.subscribe(ch);
  const other = new PusherClient(OTHER_KEY, {
    cluster: 'mt1', wsHost: HOST, wsPort: PORT, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
  });
  const otherGot = [];
  const oc = other.subscribe(ch);
  const subscribed = new Promise((resolve) => oc.bind('pusher:subscription_succeeded', resolve));
  oc.bind('ev', (d) => otherGot.push(d));
  await subscribed;
  await expectOK(server.trigger(ch, 'ev', { app: 'main' }), 'trigger');
  await a.frameWhere((f) => f.event === 'ev', 'ev on main app');
  await sleep(QUIET_MS);
  assert.deepEqual(otherGot, [], 'event crossed apps');
  other.disconnect();
  await a.disconnect();
});
