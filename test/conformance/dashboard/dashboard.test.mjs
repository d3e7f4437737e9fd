// The operations dashboard in headless Chromium (playwright-core): loaded
// with the admin token it shows the delivered counter rising as events are
// published and draws its charts; without the token it is refused. Saves a
// screenshot to DASHBOARD_SCREENSHOT.
//
// Environment: HERALD_* (see harness_test.go), HERALD_INTERNAL (host:port of
// the internal listener), HERALD_ADMIN_TOKEN, CHROMIUM, DASHBOARD_SCREENSHOT.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';
import PusherServer from 'pusher';
import Pusher from 'pusher-js';

const INTERNAL = process.env.HERALD_INTERNAL;
const TOKEN = process.env.HERALD_ADMIN_TOKEN;
const SHOT = process.env.DASHBOARD_SCREENSHOT;
const server = new PusherServer({
  appId: process.env.HERALD_APP_ID, key: process.env.HERALD_APP_KEY, secret: process.env.HERALD_APP_SECRET,
  host: process.env.HERALD_HOST, port: process.env.HERALD_PORT, useTLS: false, agent: new Agent({ keepAlive: false }),
});

let browser;
const clients = [];
before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
});
after(async () => {
  for (const c of clients) c.disconnect();
  await browser?.close();
});

const counter = async (page) => Number((await page.textContent('#delivered')).replace(/[^0-9]/g, ''));

test('the dashboard without the token is refused', async () => {
  const page = await browser.newPage();
  const resp = await page.goto(`http://${INTERNAL}/dashboard`);
  assert.equal(resp.status(), 401);
  assert.match(await page.textContent('body'), /admin token/);
  await page.close();
});

test('the dashboard shows deliveries live and draws its charts', { timeout: 60000 }, async () => {
  // Three subscribers on one channel: each publish delivers three messages.
  for (let i = 0; i < 3; i++) {
    const c = new Pusher(process.env.HERALD_APP_KEY, {
      cluster: 'local', wsHost: process.env.HERALD_HOST, wsPort: Number(process.env.HERALD_PORT),
      forceTLS: false, enabledTransports: ['ws'], disableStats: true,
    });
    clients.push(c);
    await new Promise((ok) => c.subscribe('dashboard-demo').bind('pusher:subscription_succeeded', ok));
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const resp = await page.goto(`http://${INTERNAL}/dashboard?token=${encodeURIComponent(TOKEN)}`);
  assert.equal(resp.status(), 200);
  await page.waitForFunction(() => document.getElementById('status').textContent === 'live');
  await sleep(1500);
  const start = await counter(page);
  for (let i = 0; i < 20; i++) {
    await server.trigger('dashboard-demo', 'tick', { i });
    await sleep(150);
  }
  await page.waitForFunction((n) => Number(document.getElementById('delivered').textContent.replace(/[^0-9]/g, '')) >= n + 60, start, { timeout: 15000 });
  assert.ok((await counter(page)) >= start + 60);
  // A chart with points, and the busiest channel listed.
  await page.waitForFunction(() => Number(document.querySelector('#chart-rate path.ln')?.dataset.points) >= 3, null, { timeout: 15000 });
  const d = await page.getAttribute('#chart-conns path.ln', 'd');
  assert.match(d, /^M[\d.]+ [\d.]+( L[\d.]+ [\d.]+)+$/);
  assert.match(await page.textContent('#channels'), /dashboard-demo/);
  if (SHOT) await page.screenshot({ path: SHOT, fullPage: true });
  await page.close();
});
