// clients/js/herald-history.js as an ES module in a real Chromium page, with
// the browser build of pusher-js, against Herald with history on chat-*
// (run by history_test.go, TestHistoryJSHelperBrowser): the page loads the
// helper with a plain <script type="module"> import (no build step), misses
// events while disconnected, and gets them back in order when pusher-js
// reconnects.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

import { chromium } from 'playwright-core';
import { HOST, PORT, APP_KEY, serverSDK, uniq } from '../lib/herald.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const server = serverSDK();
const require = createRequire(import.meta.url);
const PUSHER_JS = readFileSync(require.resolve('pusher-js/dist/web/pusher.min.js'));
const HELPER = readFileSync(new URL('../../../clients/js/herald-history.js', import.meta.url));

const PAGE = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script src="/pusher.min.js"></script>
<script type="module">
import { withHistory } from '/herald-history.js';
window.got = [];
window.failures = [];
window.start = (key, host, port, channel) => {
  const pusher = new Pusher(key, { cluster: 'mt1', wsHost: host, wsPort: port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true });
  window.pusher = pusher;
  window.herald = withHistory(pusher, { onRecoveryFailed: (ch, info) => window.failures.push({ ch, info }) });
  window.subscribed = 0;
  const ch = pusher.subscribe(channel);
  ch.bind('pusher:subscription_succeeded', () => window.subscribed++);
  ch.bind('msg', (data) => window.got.push(data.n));
};
window.ready = true;
</script>`;

let browser;
let web;
let base;

before(async () => {
  web = createServer((req, res) => {
    const send = (type, body) => {
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (req.url === '/page.html') return send('text/html; charset=utf-8', PAGE);
    if (req.url === '/pusher.min.js') return send('text/javascript', PUSHER_JS);
    if (req.url === '/herald-history.js') return send('text/javascript', HELPER);
    res.writeHead(404);
    res.end();
  });
  await new Promise((resolve) => web.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${web.address().port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true, timeout: 30000 });
});

after(async () => {
  await browser?.close();
  web?.close();
});

async function publish(channel, from, to) {
  for (let i = from; i < to; i++) {
    const res = await server.trigger(channel, 'msg', { n: i });
    assert.equal(res.status, 200);
  }
}

test('the helper loads as a browser ES module and resumes after a reconnect', { timeout: 60000 }, async () => {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/page.html`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.ready === true, null, { timeout: 10000 });
  const channel = `chat-${uniq()}`;
  await page.evaluate(([k, h, p, c]) => window.start(k, h, p, c), [APP_KEY, HOST, PORT, channel]);
  await page.waitForFunction(() => window.subscribed === 1, null, { timeout: 10000 });

  await publish(channel, 0, 3);
  await page.waitForFunction(() => window.got.length === 3, null, { timeout: 10000 });
  const serial = await page.evaluate((c) => window.herald.lastSerial(c), channel);
  assert.ok(Number.isSafeInteger(serial) && serial > 0, `serial ${serial}`);

  await page.evaluate(() => window.pusher.disconnect());
  await page.waitForFunction(() => window.pusher.connection.state === 'disconnected', null, { timeout: 10000 });
  await publish(channel, 3, 10);
  await page.evaluate(() => window.pusher.connect());
  await page.waitForFunction(() => window.got.length === 10, null, { timeout: 10000 });
  await publish(channel, 10, 12);
  await page.waitForFunction(() => window.got.length === 12, null, { timeout: 10000 });

  assert.deepEqual(await page.evaluate(() => window.got), Array.from({ length: 12 }, (_, i) => i));
  assert.deepEqual(await page.evaluate(() => window.failures), []);
  const res = await server.get({ path: `/channels/${channel}/history` });
  const h = await res.json();
  assert.equal(await page.evaluate((c) => window.herald.lastSerial(c), channel), h.last_serial);
  assert.deepEqual(pageErrors, []);
  await page.close();
});
