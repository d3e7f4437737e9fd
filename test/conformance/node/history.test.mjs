// The JavaScript history helper (clients/js/herald-history.js) with the real
// pusher-js client in Node, against Herald with history rules (run by
// history_test.go): app-id keeps chat-* (1000 events) and short-* (5 events).
//
// A TCP proxy sits between pusher-js and Herald so that a case can cut the
// client's connection the way a network does (no close frame) and hold its
// reconnection while events are published.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import PusherClient from 'pusher-js';
import { withHistory, HeraldHistory } from '../../../clients/js/herald-history.js';
import { HOST, PORT, APP_KEY, serverSDK, uniq, waitUntil } from '../lib/herald.mjs';

const WAIT_MS = 10000;
const server = serverSDK();

/** A TCP proxy to Herald that can cut every connection and hold new ones. */
class Proxy {
  constructor() {
    this.sockets = new Set();
    this.held = [];
    this.holding = false;
    this.server = net.createServer((client) => {
      if (this.holding) this.held.push(client);
      else this.pipe(client);
    });
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
  }

  pipe(client) {
    const upstream = net.connect(PORT, HOST);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every open connection (no WebSocket close frame) and holds new ones. */
  cut() {
    this.holding = true;
    for (const s of this.sockets) s.destroy();
  }

  /** Lets held and new connections through. */
  release() {
    this.holding = false;
    for (const c of this.held.splice(0)) this.pipe(c);
  }

  close() {
    for (const s of this.sockets) s.destroy();
    for (const c of this.held) c.destroy();
    this.server.close();
  }
}

const cleanups = [];
after(() => {
  for (const f of cleanups.splice(0)) f();
});

/** A pusher-js client through port, wrapped by the helper, logging what it gets. */
function client(port) {
  const pusher = new PusherClient(APP_KEY, {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
  });
  const c = { pusher, events: [], failures: [], states: [], watchers: new Set() };
  const notify = () => {
    for (const w of [...c.watchers]) w();
  };
  c.history = withHistory(pusher, {
    onRecoveryFailed(channel, info) {
      c.failures.push({ channel, info });
      notify();
    },
  });
  pusher.connection.bind('state_change', (s) => {
    c.states.push(s.current);
    notify();
  });
  c.notify = notify;
  c.until = (pred, what) =>
    waitUntil(pred, {
      ms: WAIT_MS,
      watchers: c.watchers,
      describe: () =>
        `timed out waiting for ${what}: states=${JSON.stringify(c.states)} ` +
        `events=${JSON.stringify(c.events.map((e) => e.data))} failures=${JSON.stringify(c.failures)}`,
    });
  c.succeeded = {};
  c.subscribe = async (name) => {
    const ch = pusher.subscribe(name);
    const before = c.succeeded[name] || 0;
    ch.bind('pusher:subscription_succeeded', () => {
      c.succeeded[name] = (c.succeeded[name] || 0) + 1;
      notify();
    });
    ch.bind('msg', (data) => {
      c.events.push({ channel: name, data });
      notify();
    });
    await c.until(() => (c.succeeded[name] || 0) > before, `subscription to ${name}`);
    return ch;
  };
  cleanups.push(() => pusher.disconnect());
  return c;
}

async function publish(channel, from, to) {
  for (let i = from; i < to; i++) {
    const res = await server.trigger(channel, 'msg', { n: i });
    assert.equal(res.status, 200);
  }
}

/** The channel's retained history through the signed API (the pusher library). */
async function historyOf(channel) {
  const res = await server.get({ path: `/channels/${channel}/history` });
  assert.equal(res.status, 200);
  return res.json();
}

const numbers = (c, channel) => c.events.filter((e) => e.channel === channel).map((e) => e.data.n);
const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

test('resumes by itself after the network drops: the 100 missed events, in order, then live ones', async () => {
  const proxy = new Proxy();
  cleanups.push(() => proxy.close());
  const port = await proxy.listen();
  const c = client(port);
  const name = `chat-${uniq()}`;
  await c.subscribe(name);
  await publish(name, 0, 5);
  await c.until(() => c.events.length === 5, '5 live events');
  const seen = c.history.lastSerial(name);
  assert.ok(Number.isSafeInteger(seen) && seen > 0, `a serial is remembered (${seen})`);

  proxy.cut(); // the client sees its socket close and retries, held by the proxy
  await c.until(() => c.pusher.connection.state !== 'connected', 'the client noticing the drop');
  await publish(name, 5, 105);
  proxy.release();
  await c.until(() => c.events.length === 105, 'the 100 missed events');
  await publish(name, 105, 110);
  await c.until(() => c.events.length === 110, 'live events after the recovery');
  await sleep(200);
  assert.deepEqual(numbers(c, name), range(0, 110), 'every event once, in publish order');
  assert.deepEqual(c.failures, []);
  const h = await historyOf(name);
  assert.equal(c.history.lastSerial(name), h.last_serial, 'the helper holds the newest serial');
  assert.ok(c.history.lastSerial(name) > seen);
});

test('pusher.disconnect() then connect() resumes too', async () => {
  const c = client(PORT);
  const name = `chat-${uniq()}`;
  await c.subscribe(name);
  await publish(name, 0, 3);
  await c.until(() => c.events.length === 3, '3 events');
  c.pusher.disconnect();
  await c.until(() => c.pusher.connection.state === 'disconnected', 'disconnected');
  await publish(name, 3, 10);
  c.pusher.connect();
  await c.until(() => c.events.length === 10, 'the missed events');
  await sleep(200);
  assert.deepEqual(numbers(c, name), range(0, 10));
});

test('a gap is surfaced: onRecoveryFailed and the herald:recovery_failed channel event, never silence', async () => {
  const proxy = new Proxy();
  cleanups.push(() => proxy.close());
  const port = await proxy.listen();
  const c = client(port);
  const name = `short-${uniq()}`; // keeps 5 events
  const ch = await c.subscribe(name);
  const channelEvents = [];
  ch.bind('herald:recovery_failed', (data) => {
    channelEvents.push(data);
    c.notify();
  });
  await publish(name, 0, 1);
  await c.until(() => c.events.length === 1, 'the first event');
  const seen = c.history.lastSerial(name);

  proxy.cut();
  await c.until(() => c.pusher.connection.state !== 'connected', 'the drop');
  await publish(name, 1, 21);
  proxy.release();
  await c.until(() => c.failures.length === 1 && channelEvents.length === 1, 'the recovery failure');
  const { channel, info } = c.failures[0];
  assert.equal(channel, name);
  assert.equal(info.reason, 'gap');
  assert.equal(info.last_serial, seen);
  assert.match(info.message, /no longer retained/);
  assert.deepEqual(channelEvents[0], info);
  assert.deepEqual(numbers(c, name), [0], 'no partial history is delivered');
  assert.equal(c.history.lastSerial(name), seen, 'the stale serial is kept until a new event arrives');

  await publish(name, 21, 22);
  await c.until(() => c.events.length === 2, 'a live event after the failure');
  assert.ok(c.history.lastSerial(name) > seen);
});

test('resumeFrom() seeds a serial (a page reload); unsubscribe forgets it', async () => {
  const name = `chat-${uniq()}`;
  const first = client(PORT);
  await first.subscribe(name);
  await publish(name, 0, 4);
  await first.until(() => first.events.length === 4, '4 events');
  const saved = first.history.lastSerial(name);
  first.pusher.disconnect();
  await publish(name, 4, 8);

  const second = client(PORT); // a new page: a new Pusher instance
  second.history.resumeFrom(name, saved);
  await second.subscribe(name);
  await second.until(() => second.events.length === 4, 'the events after the saved serial');
  assert.deepEqual(numbers(second, name), range(4, 8));

  second.pusher.unsubscribe(name);
  assert.equal(second.history.lastSerial(name), undefined, 'unsubscribe forgets');
  await second.subscribe(name); // fresh: nothing replayed
  await publish(name, 8, 9);
  await second.until(() => second.events.length === 5, 'the live event');
  assert.deepEqual(numbers(second, name), range(4, 9));

  assert.throws(() => second.history.resumeFrom(name, -1), RangeError);
  assert.throws(() => new HeraldHistory({}), TypeError);
});

test('detach() restores pusher-js', async () => {
  const c = client(PORT);
  const name = `chat-${uniq()}`;
  await c.subscribe(name);
  await publish(name, 0, 2);
  await c.until(() => c.events.length === 2, '2 events');
  const sendEvent = c.history.originalSendEvent;
  c.history.detach();
  assert.equal(c.pusher.send_event, sendEvent);
  c.pusher.disconnect();
  await c.until(() => c.pusher.connection.state === 'disconnected', 'disconnected');
  await publish(name, 2, 4);
  c.pusher.connect();
  await c.until(() => c.succeeded[name] === 2, 'the resubscription');
  await publish(name, 4, 5); // nothing replayed, only live
  await c.until(() => c.events.length >= 3, 'a live event');
  await sleep(200);
  assert.ok(!numbers(c, name).includes(2) && !numbers(c, name).includes(3), 'no replay once detached');
});
