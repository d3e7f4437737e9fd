// Direct push (POST /apps/{id}/users/{user_id}/events and
// …/sockets/{socket_id}/events) with the real `pusher` npm library's post()
// and the real pusher-js client: where pusher-js delivers the pushed events,
// and what the receipt says (run by push_test.go).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import PusherClient from 'pusher-js';
import { HOST, PORT, APP_KEY, serverSDK, uniq, waitUntil } from '../lib/herald.mjs';

const WAIT_MS = 10000;
const server = serverSDK();
const open = [];
after(() => {
  for (const p of open.splice(0)) p.disconnect();
});

/** A pusher-js client that signs in as userId when asked. */
function client(userId) {
  const pusher = new PusherClient(APP_KEY, {
    cluster: 'mt1',
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    userAuthentication: {
      customHandler: (params, cb) => cb(null, server.authenticateUser(params.socketId, { id: userId })),
    },
  });
  open.push(pusher);
  return pusher;
}

const until = (pred, what) =>
  waitUntil(pred, { ms: WAIT_MS, watchers: new Set(), poll: 10, describe: () => `timed out waiting for ${what}` });

async function connected(p) {
  await until(() => p.connection.state === 'connected', 'connected');
  return p;
}

async function signedIn(p) {
  p.signin();
  await until(() => p.user.serverToUserChannel && p.user.serverToUserChannel.subscribed, 'signin');
  return p;
}

test('push to a user: every device gets it through pusher.user.bind; the receipt lists them', async () => {
  const user = `alice-${uniq()}`;
  const phone = await signedIn(await connected(client(user)));
  const laptop = await signedIn(await connected(client(user)));
  const stranger = await signedIn(await connected(client(`bob-${uniq()}`)));
  const got = [];
  for (const p of [phone, laptop, stranger]) p.user.bind('order-shipped', (d) => got.push([p.connection.socket_id, d]));

  const res = await server.post({ path: `/users/${user}/events`, body: { name: 'order-shipped', data: { order: 7 } } });
  assert.equal(res.status, 200);
  const ids = [phone.connection.socket_id, laptop.connection.socket_id].sort();
  assert.deepEqual(await res.json(), { delivered: 2, sockets: ids });
  await until(() => got.length === 2, 'both devices');
  assert.deepEqual(got.map(([id]) => id).sort(), ids);
  assert.deepEqual(got.map(([, d]) => d), [{ order: 7 }, { order: 7 }]);
});

test('push to an offline user: {"delivered":0}', async () => {
  const res = await server.post({ path: `/users/nobody-${uniq()}/events`, body: { name: 'x', data: 'y' } });
  assert.deepEqual(await res.json(), { delivered: 0 });
});

test('push to a socket: pusher.bind gets it (no channel); the receipt names it', async () => {
  const p = await connected(client('unused'));
  const got = [];
  p.bind('nudge', (d) => got.push(d));
  const id = p.connection.socket_id;
  const res = await server.post({ path: `/sockets/${id}/events`, body: { name: 'nudge', data: { n: 1 }, timeout_ms: 1000 } });
  assert.deepEqual(await res.json(), { delivered: 1, sockets: [id] });
  await until(() => got.length === 1, 'nudge');
  assert.deepEqual(got, [{ n: 1 }]);
});

test('errors: unknown socket 404, invalid user id 400, oversized data 413', async () => {
  const status = (p) => p.then(() => 200, (err) => err.status);
  assert.equal(await status(server.post({ path: '/sockets/123.456/events', body: { name: 'x', data: 'y' } })), 404);
  assert.equal(await status(server.post({ path: '/users/a,b;c=d@e:f/events', body: { name: 'x', data: 'y' } })), 400);
  assert.equal(await status(server.post({ path: '/users/u/events', body: { name: 'x', data: 'y'.repeat(10241) } })), 413);
});
