// Reconnection after the server closes with 4200 (driven by reconnect_test.go).
// Prints "READY <socket_id>" once subscribed; the Go test then restarts Herald
// (SIGINT → close 4200). pusher-js must reconnect by itself, get a new
// socket_id, resubscribe, and receive an event published after the restart.
// Prints "OK" and exits 0, or prints the reason and exits 1.
import { Agent } from 'node:http';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';

const HOST = process.env.HERALD_HOST;
const PORT = Number(process.env.HERALD_PORT);
const server = new PusherServer({
  appId: process.env.HERALD_APP_ID, key: process.env.HERALD_APP_KEY, secret: process.env.HERALD_APP_SECRET,
  host: HOST, port: String(PORT), useTLS: false, agent: new Agent({ keepAlive: false }),
});
const fail = (why) => {
  console.log(`FAIL ${why}\n  states=${JSON.stringify(states)}\n  errors=${JSON.stringify(errors)}`);
  process.exit(1);
};
setTimeout(() => fail('timed out after 40 s'), 40000);

const channelName = `reconnect-${Date.now()}`;
const states = [];
const errors = [];
const p = new PusherClient(process.env.HERALD_APP_KEY, {
  cluster: 'mt1', wsHost: HOST, wsPort: PORT, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
});
p.connection.bind('state_change', (s) => states.push(s.current));
p.connection.bind('error', (e) => errors.push(e));
const ch = p.subscribe(channelName);
let subscriptions = 0;
let firstSocket = '';
ch.bind('pusher:subscription_succeeded', async () => {
  subscriptions++;
  if (subscriptions === 1) {
    firstSocket = p.connection.socket_id;
    console.log(`READY ${firstSocket}`);
    return;
  }
  // Resubscribed after the restart.
  const codes = errors.map((e) => e?.data?.code ?? e?.error?.data?.code);
  if (!codes.includes(4200)) fail('no 4200 close seen before the reconnect');
  if (p.connection.socket_id === firstSocket) fail('socket_id did not change');
  const res = await server.trigger(channelName, 'after-restart', { ok: true });
  if (res.status !== 200) fail(`trigger status ${res.status}`);
});
ch.bind('after-restart', (data) => {
  if (JSON.stringify(data) !== '{"ok":true}') fail(`wrong data ${JSON.stringify(data)}`);
  console.log(`OK ${p.connection.socket_id} states=${JSON.stringify(states)}`);
  p.disconnect();
  process.exit(0);
});
