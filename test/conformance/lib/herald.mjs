// What every conformance test file shares: where Herald is (from the
// environment the Go runner sets), the `pusher` server SDK pointed at it, and
// a waiter that resolves when a condition holds.
import { Agent } from 'node:http';
import { randomBytes } from 'node:crypto';
import PusherServer from 'pusher';

export const HOST = process.env.HERALD_HOST || '127.0.0.1';
export const PORT = Number(process.env.HERALD_PORT || 6001);
export const APP_ID = process.env.HERALD_APP_ID || 'app-id';
export const APP_KEY = process.env.HERALD_APP_KEY || 'app-key';
export const APP_SECRET = process.env.HERALD_APP_SECRET || 'app-secret';
export const OTHER_KEY = process.env.HERALD_OTHER_APP_KEY || 'other-key';

/** The `pusher` server SDK for the test app (fields in over override). */
export function serverSDK(over = {}) {
  return new PusherServer({
    appId: APP_ID,
    key: APP_KEY,
    secret: APP_SECRET,
    host: HOST,
    port: String(PORT),
    useTLS: false,
    // No keep-alive: idle pooled sockets would hold the test process open.
    agent: new Agent({ keepAlive: false }),
    ...over,
  });
}

/** A unique suffix so that every case uses its own channels. */
export const uniq = () => `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;

/**
 * Resolves with pred()'s value once it is truthy; rejects with describe()'s
 * message after ms. pred is checked at once, whenever a check registered via
 * watchers (a Set) is called, and every poll ms when poll > 0.
 */
export function waitUntil(pred, { ms, watchers, poll = 0, describe }) {
  return new Promise((resolve, reject) => {
    const check = () => {
      let v;
      try {
        v = pred();
      } catch (err) {
        cleanup();
        reject(err);
        return;
      }
      if (v) {
        cleanup();
        resolve(v);
      }
    };
    const ticker = poll > 0 ? setInterval(check, poll) : null;
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(describe()));
    }, ms);
    const cleanup = () => {
      clearTimeout(timer);
      if (ticker) clearInterval(ticker);
      watchers.delete(check);
    };
    watchers.add(check);
    check();
  });
}
