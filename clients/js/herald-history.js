// herald-history.js: channel history and recovery for pusher-js on Herald.
//
// An ES module with no dependencies and no build step, for Node and the
// browser. It wraps a pusher-js instance (tested with pusher-js 8.6):
//
//   import Pusher from 'pusher-js';
//   import { withHistory } from './herald-history.js';
//
//   const pusher = new Pusher('app-key', { wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false,
//     enabledTransports: ['ws'], cluster: 'local' });
//   const recovery = withHistory(pusher, {
//     onRecoveryFailed(channel, info) {
//       // info = { reason, message, last_serial }: reload this channel's state.
//     },
//   });
//   pusher.subscribe('chat-42').bind('message', (data) => render(data));
//
// What it does:
//  - remembers, per channel, the serial of the last event received (Herald
//    adds a top-level "serial" to every event of a history channel; pusher-js
//    drops unknown fields, so the helper reads the raw frames);
//  - when pusher-js (re)subscribes, after a reconnect or pusher.connect(), it
//    adds "last_serial" to the pusher:subscribe data, and Herald replays what
//    the client missed, in order, before live events; pusher-js dispatches the
//    replayed events to your bindings like any other;
//  - when the missed events are no longer retained, Herald sends
//    herald:recovery_failed on the channel (pusher-js emits it on the channel
//    like any event) and the helper calls onRecoveryFailed(channel, info).
//    The helper keeps the old serial until a new event arrives, so a client
//    that drops again before that is told again (never silence).
//
// A deliberate pusher.unsubscribe(name) forgets the channel's serial: a later
// subscribe starts fresh. resumeFrom(name, serial) seeds a serial before
// subscribing, e.g. one saved in localStorage across a page reload.
//
// The serial of an event is recorded right after pusher-js has dispatched it
// to your callbacks: inside a callback, lastSerial() still returns the
// previous one. If a callback throws, the event's serial is not recorded and
// the event is replayed after the next reconnect (at least once).
//
// pusher-js internals used (stable since pusher-js 4): pusher.send_event,
// pusher.connection.connection.transport (a Dispatcher emitting 'message'
// with the raw WebSocket MessageEvent).

const SUBSCRIBE = 'pusher:subscribe';
const UNSUBSCRIBE = 'pusher:unsubscribe';
const RECOVERY_FAILED = 'herald:recovery_failed';

/**
 * Wraps pusher with history tracking and automatic recovery.
 * @param {object} pusher a pusher-js Pusher instance
 * @param {{onRecoveryFailed?: (channel: string, info: {reason: string, message: string, last_serial: number|null}) => void}} [options]
 * @returns {HeraldHistory}
 */
export function withHistory(pusher, options = {}) {
  return new HeraldHistory(pusher, options);
}

export class HeraldHistory {
  /**
   * @param {object} pusher a pusher-js Pusher instance
   * @param {{onRecoveryFailed?: Function}} [options]
   */
  constructor(pusher, options = {}) {
    if (!pusher || typeof pusher.send_event !== 'function' || !pusher.connection || typeof pusher.connection.bind !== 'function') {
      throw new TypeError('herald-history: expected a pusher-js Pusher instance');
    }
    this.pusher = pusher;
    this.onRecoveryFailed = options.onRecoveryFailed || null;
    /** @type {Map<string, number>} */
    this.serials = new Map();
    this.transport = null;

    const original = pusher.send_event;
    this.originalSendEvent = original;
    const serials = this.serials;
    pusher.send_event = function (name, data, channel) {
      if (data && typeof data === 'object' && typeof data.channel === 'string') {
        if (name === SUBSCRIBE && serials.has(data.channel)) {
          data = { ...data, last_serial: serials.get(data.channel) };
        } else if (name === UNSUBSCRIBE) {
          serials.delete(data.channel);
        }
      }
      return original.call(this, name, data, channel);
    };

    this.onMessage = (messageEvent) => this.handleRaw(messageEvent);
    this.onConnected = () => this.attachTransport();
    pusher.connection.bind('connected', this.onConnected);
    if (pusher.connection.state === 'connected') this.attachTransport();
  }

  /** The serial of the last event received on channel, or undefined. */
  lastSerial(channel) {
    return this.serials.get(channel);
  }

  /**
   * Makes the next subscription to channel resume after serial (a number
   * from lastSerial(), e.g. saved across a page reload).
   */
  resumeFrom(channel, serial) {
    if (!Number.isSafeInteger(serial) || serial < 0) {
      throw new RangeError('herald-history: a serial is a non-negative safe integer');
    }
    this.serials.set(channel, serial);
  }

  /** Forgets channel's serial: its next subscription starts fresh. */
  forget(channel) {
    this.serials.delete(channel);
  }

  /** Undoes withHistory: pusher behaves as before. */
  detach() {
    this.pusher.send_event = this.originalSendEvent;
    this.pusher.connection.unbind('connected', this.onConnected);
    if (this.transport) this.transport.unbind('message', this.onMessage);
    this.transport = null;
  }

  /** Binds to the raw frames of the current connection (after each connect). */
  attachTransport() {
    const conn = this.pusher.connection.connection;
    const transport = conn && conn.transport;
    if (!transport || typeof transport.bind !== 'function') {
      throw new Error('herald-history: unsupported pusher-js version (no connection.connection.transport)');
    }
    if (this.transport === transport) return;
    if (this.transport) this.transport.unbind('message', this.onMessage);
    this.transport = transport;
    transport.bind('message', this.onMessage);
  }

  handleRaw(messageEvent) {
    const raw = messageEvent && messageEvent.data;
    if (typeof raw !== 'string') return;
    const hasSerial = raw.includes('"serial":');
    if (!hasSerial && !raw.includes(RECOVERY_FAILED)) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (!msg || typeof msg.channel !== 'string') return;
    if (hasSerial && Number.isSafeInteger(msg.serial)) {
      this.serials.set(msg.channel, msg.serial);
      return;
    }
    if (msg.event === RECOVERY_FAILED && this.onRecoveryFailed) {
      let info = msg.data;
      if (typeof info === 'string') {
        try {
          info = JSON.parse(info);
        } catch {
          info = { reason: 'unknown', message: String(info), last_serial: null };
        }
      }
      this.onRecoveryFailed(msg.channel, info);
    }
  }
}
