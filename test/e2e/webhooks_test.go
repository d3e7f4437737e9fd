package e2e

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/internal/testkit"
	"github.com/heraldrt/herald/internal/webhooks"
)

// hookReceiver checks every webhook of the dev app and queues its events.
type hookReceiver struct {
	*testkit.WebhookReceiver
	t *testing.T
}

type hookEvent = testkit.WebhookEvent

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	w := testkit.NewWebhookReceiver(t, testkit.App{ID: "app-id", Key: "app-key", Secret: "app-secret"})
	w.OneEventPerBody = true // no batching
	return &hookReceiver{WebhookReceiver: w, t: t}
}

// expect waits for the next event and compares its fields.
func (hr *hookReceiver) expect(want map[string]any) hookEvent {
	hr.t.Helper()
	if e, ok := hr.Next(10 * time.Second); ok {
		got := map[string]any{}
		for k, v := range e.Fields {
			if n, ok := v.(json.Number); ok {
				i, _ := n.Int64()
				v = int(i)
			}
			got[k] = v
		}
		if !reflect.DeepEqual(got, want) {
			hr.t.Fatalf("webhook event %v, want %v", got, want)
		}
		return e
	}
	hr.t.Fatalf("no webhook event, want %v", want)
	return hookEvent{}
}

// startWithWebhooks starts Herald with the e2e apps, the dev app posting
// every webhook to hr.
func startWithWebhooks(t *testing.T, hr *hookReceiver, wh webhooks.Config) *env {
	t.Helper()
	cfg := testConfig()
	cfg.Apps[0].Webhooks = []apps.Webhook{{URL: hr.URL()}}
	cfg.Apps[0].SubscriptionCount = true
	return startWith(t, server.Options{Config: cfg, Webhooks: wh})
}

func occupied(ch string) map[string]any {
	return map[string]any{"name": "channel_occupied", "channel": ch}
}
func vacated(ch string) map[string]any {
	return map[string]any{"name": "channel_vacated", "channel": ch}
}
func member(name, ch, user string) map[string]any {
	return map[string]any{"name": name, "channel": ch, "user_id": user}
}
func count(ch string, n int) map[string]any {
	return map[string]any{"name": "subscription_count", "channel": ch, "subscription_count": n}
}

// Every webhook type, driven by real WebSocket clients (hold shortened to
// 300 ms; TestWebhookHoldAtRealDelay runs the real 3 s).
func TestWebhooksFromClients(t *testing.T) {
	hr := newHookReceiver(t)
	hold := 300 * time.Millisecond
	e := startWithWebhooks(t, hr, webhooks.Config{Delay: hold})

	a := e.connect("app-key")
	b := e.connect("app-key")

	// Public channel: occupied, and a subscription count per change.
	a.subscribe("news")
	a.expectCount("news", 1)
	hr.expect(occupied("news"))
	hr.expect(count("news", 1))
	b.subscribe("news")
	b.expectCount("news", 2)
	a.expectCount("news", 2)
	hr.expect(count("news", 2))

	// Presence: occupied + member_added; the second socket of the same user
	// adds nothing; a client event carries data as a string and user_id.
	a.subscribePresence("presence-room", "u1", map[string]any{"name": "Ana"})
	hr.expect(occupied("presence-room"))
	hr.expect(member("member_added", "presence-room", "u1"))
	a.send(`{"event":"client-typing","channel":"presence-room","data":{"on":true}}`)
	hr.expect(map[string]any{"name": "client_event", "channel": "presence-room", "event": "client-typing",
		"data": `{"on":true}`, "socket_id": a.socketID, "user_id": "u1"})

	// Private: a client event without user_id; string data stays as sent.
	b.subscribePrivate("private-chat")
	b.expectCount("private-chat", 1)
	hr.expect(occupied("private-chat"))
	hr.expect(count("private-chat", 1))
	b.send(`{"event":"client-note","channel":"private-chat","data":"plain \"text\""}`)
	hr.expect(map[string]any{"name": "client_event", "channel": "private-chat", "event": "client-note",
		"data": `plain "text"`, "socket_id": b.socketID})

	// Cache channel with nothing cached: occupied, cache_miss, count.
	b.send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "cache-prices"}})
	b.expectOn("pusher_internal:subscription_succeeded", "cache-prices")
	b.expectOn("pusher:cache_miss", "cache-prices")
	hr.expect(occupied("cache-prices"))
	hr.expect(map[string]any{"name": "cache_miss", "channel": "cache-prices"})
	hr.expect(count("cache-prices", 1))

	// Leaving: member_removed and channel_vacated, after the hold.
	left := time.Now()
	a.send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": "presence-room"}})
	r := hr.expect(member("member_removed", "presence-room", "u1"))
	hr.expect(vacated("presence-room"))
	if el := r.At.Sub(left); el < hold {
		t.Errorf("member_removed after %v, want ≥ %v", el, hold)
	}
	if r.TimeMs < left.Add(hold).UnixMilli() || r.TimeMs > time.Now().UnixMilli() {
		t.Errorf("time_ms %d outside [%d, now]", r.TimeMs, left.Add(hold).UnixMilli())
	}
	// An unsubscribe that leaves others behind is a count change only.
	b.send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": "news"}})
	hr.expect(count("news", 1))
	// A disconnect vacates everything the socket held.
	b.conn.Close()
	got := map[string]bool{}
	for range 2 {
		ev, ok := hr.Next(5 * time.Second)
		if !ok {
			t.Fatalf("no vacated webhooks after the disconnect; got %v", got)
		}
		got[ev.Fields["name"].(string)+" "+ev.Fields["channel"].(string)] = true
	}
	if !got["channel_vacated private-chat"] || !got["channel_vacated cache-prices"] {
		t.Errorf("after disconnect got %v", got)
	}
	if s := e.srv.Webhooks().Stats("app-id"); s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("webhook stats = %+v", s)
	}
}

// The real 3 s hold: a leave and re-join within it sends nothing; a leave for
// good sends member_removed and channel_vacated 3 s later.
func TestWebhookHoldAtRealDelay(t *testing.T) {
	hr := newHookReceiver(t)
	e := startWithWebhooks(t, hr, webhooks.Config{})
	stats := func() webhooks.Stats { return e.srv.Webhooks().Stats("app-id") }

	a := e.connect("app-key")
	a.subscribePresence("presence-hold", "u1", nil)
	hr.expect(occupied("presence-hold"))
	hr.expect(member("member_added", "presence-hold", "u1"))

	// Drop the connection, and come back on a new one as the same user.
	a.conn.Close()
	waitFor(t, "member_removed and channel_vacated to be held", func() bool { return stats().Held == 2 })
	b := e.connect("app-key")
	b.subscribePresence("presence-hold", "u1", nil)
	waitFor(t, "the re-join to cancel both", func() bool { s := stats(); return s.Held == 0 && s.Cancelled == 2 })
	// Nothing is held and the queue is FIFO: the next webhook must be the
	// sentinel's.
	b.subscribe("sentinel")
	hr.expect(occupied("sentinel"))
	hr.expect(count("sentinel", 1))

	left := time.Now()
	b.send(map[string]any{"event": "pusher:unsubscribe", "data": map[string]any{"channel": "presence-hold"}})
	r := hr.expect(member("member_removed", "presence-hold", "u1"))
	hr.expect(vacated("presence-hold"))
	if el := r.At.Sub(left); el < webhooks.DefaultDelay || el > webhooks.DefaultDelay+2*time.Second {
		t.Errorf("member_removed after %v, want about %v", el, webhooks.DefaultDelay)
	}
}
