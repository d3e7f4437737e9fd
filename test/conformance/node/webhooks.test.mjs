// Herald's webhooks validated by the `pusher` npm library (pusher-http-node):
// pusher.webhook({headers, rawBody}).isValid(), getEvents(), getTime().
//
// Environment (set by the Go runner, webhooks_test.go):
//   HERALD_HOST, HERALD_PORT, HERALD_APP_ID/KEY/SECRET   Herald and its app
//   WEBHOOK_PORT   this process listens on 127.0.0.1:WEBHOOK_PORT; Herald's
//                  config posts every webhook type to /all and only
//                  client_event to /client (with header X-Herald-Test: conformance)
//
// pusher-js clients (Node build) produce the events. The hold before
// channel_vacated/member_removed is Herald's real 3 s.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';

import PusherClient from 'pusher-js';
import { HOST, PORT, APP_KEY, serverSDK, uniq, waitUntil as waitFor } from '../lib/herald.mjs';

const WEBHOOK_PORT = Number(process.env.WEBHOOK_PORT);

const HOLD_MS = 3000; // Herald's default hold for channel_vacated/member_removed
const WAIT_MS = 5000;
const CASE_TIMEOUT_MS = 20000;

const server = serverSDK();
const wrongSecret = serverSDK({ secret: 'not-the-secret' });
const wrongKey = serverSDK({ key: 'other-key' });


// ---------------------------------------------------------------------------
// The receiver: every request Herald posts, validated on arrival.

/** @type {{path: string, at: number, headers: object, rawBody: string, valid: boolean, time: Date, events: object[]}[]} */
const received = [];
const waiters = new Set();
let receiver;

before(async () => {
  assert.ok(WEBHOOK_PORT > 0, 'WEBHOOK_PORT must be set');
  receiver = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const wh = server.webhook({ headers: req.headers, rawBody });
      const r = { path: req.url, at: Date.now(), headers: req.headers, rawBody, valid: wh.isValid() };
      if (r.valid) {
        r.time = wh.getTime();
        r.events = wh.getEvents();
      }
      received.push(r);
      for (const w of [...waiters]) w();
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve, reject) => {
    receiver.once('error', reject);
    receiver.listen(WEBHOOK_PORT, '127.0.0.1', resolve);
  });
});

after(async () => {
  for (const c of openClients) c.close();
  // Every channel that was occupied gets its channel_vacated once the hold
  // is over; waiting for them also lets Herald stop with nothing queued.
  const open = () => {
    const state = new Map();
    for (const e of eventsOn('/all')) {
      if (e.name === 'channel_occupied') state.set(e.channel, true);
      if (e.name === 'channel_vacated') state.set(e.channel, false);
    }
    return [...state].filter(([, occupied]) => occupied).map(([ch]) => ch);
  };
  try {
    await waitUntil(() => open().length === 0, 'channel_vacated for every channel', HOLD_MS + WAIT_MS);
    assert.deepEqual(received.filter((r) => !r.valid).map((r) => r.rawBody), [], 'every webhook validates');
  } finally {
    await new Promise((resolve) => receiver.close(resolve));
  }
});

/** Events received on path, each with its request. */
const eventsOn = (path) =>
  received.filter((r) => r.path === path && r.valid).flatMap((r) => r.events.map((e) => ({ ...e, request: r })));

/** Resolves with cond()'s value once it is truthy (checked on every webhook
 * and every 20 ms, for conditions on client-side state). */
function waitUntil(cond, what, ms = WAIT_MS) {
  return waitFor(cond, {
    ms,
    watchers: waiters,
    poll: 20,
    describe: () =>
      `timed out after ${ms} ms waiting for ${what}; received:\n` +
      received.map((r) => `${r.path} valid=${r.valid} ${r.rawBody}`).join('\n'),
  });
}

/** Waits for an event on path matching pred; returns it. */
const waitEvent = (path, pred, what, ms = WAIT_MS) =>
  waitUntil(() => eventsOn(path).find(pred), `${what} on ${path}`, ms);

const on = (name, channel, extra = {}) => (e) =>
  e.name === name && e.channel === channel && Object.entries(extra).every(([k, v]) => e[k] === v);

// ---------------------------------------------------------------------------
// pusher-js clients

const openClients = new Set();

class Client {
  constructor(user) {
    this.user = user;
    this.pusher = new PusherClient(APP_KEY, {
      cluster: 'mt1',
      wsHost: HOST,
      wsPort: PORT,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: (params, cb) => {
          try {
            const presence = params.channelName.startsWith('presence-');
            cb(null, presence
              ? server.authorizeChannel(params.socketId, params.channelName, { user_id: this.user, user_info: { n: 1 } })
              : server.authorizeChannel(params.socketId, params.channelName));
          } catch (err) {
            cb(err, null);
          }
        },
      },
    });
    openClients.add(this);
  }

  get socketId() {
    return this.pusher.connection.socket_id;
  }

  async connect() {
    this.pusher.connect();
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('not connected')), WAIT_MS);
      this.pusher.connection.bind('connected', () => {
        clearTimeout(t);
        resolve();
      });
    });
    return this;
  }

  async subscribe(name) {
    const ch = this.pusher.subscribe(name);
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no subscription_succeeded on ${name}`)), WAIT_MS);
      ch.bind('pusher:subscription_succeeded', () => {
        clearTimeout(t);
        resolve();
      });
    });
    return ch;
  }

  close() {
    openClients.delete(this);
    this.pusher.disconnect();
  }
}

// ---------------------------------------------------------------------------

test('channel_occupied, member_added, member_removed, channel_vacated (after the 3 s hold)', { timeout: CASE_TIMEOUT_MS }, async () => {
  const pub = `wh-public-${uniq()}`;
  const pres = `presence-wh-${uniq()}`;
  const a = await new Client('user-a').connect();
  await a.subscribe(pub);
  await a.subscribe(pres);

  const occ = await waitEvent('/all', on('channel_occupied', pub), 'channel_occupied');
  await waitEvent('/all', on('channel_occupied', pres), 'channel_occupied (presence)');
  const added = await waitEvent('/all', on('member_added', pres, { user_id: 'user-a' }), 'member_added');
  assert.deepEqual(Object.keys(occ).filter((k) => k !== 'request').sort(), ['channel', 'name']);
  assert.deepEqual(Object.keys(added).filter((k) => k !== 'request').sort(), ['channel', 'name', 'user_id']);

  // getTime(): when the webhook was created, as a Date.
  const t = occ.request.time;
  assert.ok(t instanceof Date && Math.abs(t.getTime() - occ.request.at) < 2000, `getTime() ${t} vs arrival ${occ.request.at}`);
  assert.equal(occ.request.headers['content-type'], 'application/json');
  assert.equal(occ.request.headers['x-pusher-key'], APP_KEY);
  assert.equal(occ.request.headers['x-herald-test'], 'conformance');
  // One event per request without batching.
  assert.equal(occ.request.events.length, 1);

  const left = Date.now();
  a.pusher.unsubscribe(pub);
  a.pusher.unsubscribe(pres);
  const removed = await waitEvent('/all', on('member_removed', pres, { user_id: 'user-a' }), 'member_removed', HOLD_MS + WAIT_MS);
  const vac = await waitEvent('/all', on('channel_vacated', pub), 'channel_vacated', HOLD_MS + WAIT_MS);
  await waitEvent('/all', on('channel_vacated', pres), 'channel_vacated (presence)', HOLD_MS + WAIT_MS);
  for (const e of [removed, vac]) {
    const after = e.request.at - left;
    assert.ok(after >= HOLD_MS - 50 && after < HOLD_MS + 2000, `${e.name} arrived ${after} ms after the leave`);
  }
  a.close();
});

test('leaving and re-joining within 3 s sends nothing', { timeout: CASE_TIMEOUT_MS }, async () => {
  const pres = `presence-flap-${uniq()}`;
  const a = await new Client('user-f').connect();
  await a.subscribe(pres);
  await waitEvent('/all', on('member_added', pres), 'member_added');
  // Frames are processed in order: the server sees the leave, then the join.
  a.pusher.unsubscribe(pres);
  await a.subscribe(pres);
  // Past the hold, a sentinel channel's webhook arrives; nothing for pres in between.
  await new Promise((r) => setTimeout(r, HOLD_MS + 300));
  const sentinel = `wh-sentinel-${uniq()}`;
  await a.subscribe(sentinel);
  await waitEvent('/all', on('channel_occupied', sentinel), 'sentinel');
  const forPres = eventsOn('/all').filter((e) => e.channel === pres).map((e) => e.name);
  assert.deepEqual(forPres, ['channel_occupied', 'member_added'], 'the flap must be invisible');
  a.close();
});

test('client_event: data is a string, socket_id, user_id on presence only', { timeout: CASE_TIMEOUT_MS }, async () => {
  const priv = `private-wh-${uniq()}`;
  const pres = `presence-wh-ce-${uniq()}`;
  const a = await new Client('user-c').connect();
  const pc = await a.subscribe(priv);
  const ps = await a.subscribe(pres);
  pc.trigger('client-obj', { text: 'hi "there"', n: [1, 2] });
  ps.trigger('client-str', 'plain');

  const e1 = await waitEvent('/all', on('client_event', priv, { event: 'client-obj' }), 'client_event (private)');
  assert.equal(typeof e1.data, 'string');
  assert.deepEqual(JSON.parse(e1.data), { text: 'hi "there"', n: [1, 2] });
  assert.equal(e1.socket_id, a.socketId);
  assert.equal(e1.user_id, undefined, 'no user_id on a private channel');

  const e2 = await waitEvent('/all', on('client_event', pres, { event: 'client-str' }), 'client_event (presence)');
  assert.equal(e2.data, 'plain');
  assert.equal(e2.socket_id, a.socketId);
  assert.equal(e2.user_id, 'user-c');

  // The /client webhook takes client_event only; its body (and signature,
  // checked by isValid) is the filtered one.
  await waitEvent('/client', on('client_event', priv, { event: 'client-obj' }), 'filtered client_event');
  await waitEvent('/client', on('client_event', pres, { event: 'client-str' }), 'filtered client_event');
  const filtered = received.filter((r) => r.path === '/client');
  assert.ok(filtered.every((r) => r.valid), 'every filtered webhook validates');
  assert.deepEqual([...new Set(filtered.flatMap((r) => r.events.map((e) => e.name)))], ['client_event']);
  a.close();
});

test('cache_miss on an empty cache channel', { timeout: CASE_TIMEOUT_MS }, async () => {
  const cache = `cache-wh-${uniq()}`;
  const a = await new Client('user-m').connect();
  const ch = a.pusher.subscribe(cache);
  const misses = [];
  ch.bind('pusher:cache_miss', () => misses.push(1));
  const e = await waitEvent('/all', on('cache_miss', cache), 'cache_miss');
  assert.deepEqual(Object.keys(e).filter((k) => k !== 'request').sort(), ['channel', 'name']);
  // The webhook and the client's frame race each other: wait for the frame.
  await waitUntil(() => misses.length > 0, 'pusher-js saw pusher:cache_miss too');
  assert.equal(misses.length, 1);
  a.close();
});

test('subscription_count is an integer', { timeout: CASE_TIMEOUT_MS }, async () => {
  const ch = `wh-count-${uniq()}`;
  const a = await new Client('u1').connect();
  const b = await new Client('u2').connect();
  await a.subscribe(ch);
  await b.subscribe(ch);
  const e = await waitEvent('/all', on('subscription_count', ch, { subscription_count: 2 }), 'subscription_count 2');
  assert.equal(typeof e.subscription_count, 'number');
  a.close();
  b.close();
});

test('every webhook validates with the right secret, and none with a wrong secret or key', { timeout: CASE_TIMEOUT_MS }, async () => {
  assert.ok(received.length > 0);
  for (const r of received) {
    assert.ok(r.valid, `invalid webhook: ${JSON.stringify(r.headers)} ${r.rawBody}`);
    assert.equal(wrongSecret.webhook({ headers: r.headers, rawBody: r.rawBody }).isValid(), false);
    assert.equal(wrongKey.webhook({ headers: r.headers, rawBody: r.rawBody }).isValid(), false);
    // One altered byte breaks the signature.
    const tampered = r.rawBody.replace('"name"', '"name" ');
    assert.equal(server.webhook({ headers: r.headers, rawBody: tampered }).isValid(), false);
  }
});
