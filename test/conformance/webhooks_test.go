package conformance

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	pusher "github.com/pusher/pusher-http-go/v5"
)

// Herald's webhooks checked by the official server SDKs' validators: the
// `pusher` npm library (node/webhooks.test.mjs) and pusher-http-go v5.1.1's
// Client.Webhook. Both run against Herald's real 3 s hold.

// webhookConfig is DefaultConfig's apps with webhooks: app-id posts every
// type to base+"/all" and client_event only to base+"/client" (with a custom
// header), other-id batches (500 ms) to base+"/other".
func webhookConfig(base string) string {
	return fmt.Sprintf(`apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
    subscription_count: true
    webhooks:
      - url: %[1]s/all
        headers: {X-Herald-Test: conformance}
      - url: %[1]s/client
        event_types: [client_event]
        headers: {X-Herald-Test: conformance}
  - id: other-id
    key: other-key
    secret: other-secret
    client_events: true
    webhook_batching: 500ms
    webhooks:
      - url: %[1]s/other
  - id: disabled-id
    key: disabled-key
    secret: disabled-secret
    enabled: false
`, base)
}

// TestWebhooksPusherNode: the Node receiver listens on a port chosen here,
// because Herald's config must name it before Herald starts.
func TestWebhooksPusherNode(t *testing.T) {
	port := freePort(t)
	h := StartHerald(t, webhookConfig("http://127.0.0.1:"+port))
	RunNode(t, h, "node/webhooks.test.mjs", "WEBHOOK_PORT="+port)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// hookRequest is one webhook as received.
type hookRequest struct {
	path   string
	header http.Header
	body   []byte
	at     time.Time
}

// hookSink is a Go receiver on 127.0.0.1 that answers 200 and queues requests.
type hookSink struct {
	srv  *httptest.Server
	reqs chan hookRequest
}

func newHookSink(t *testing.T) *hookSink {
	s := &hookSink{reqs: make(chan hookRequest, 1000)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.reqs <- hookRequest{path: r.URL.Path, header: r.Header.Clone(), body: b, at: time.Now()}
	}))
	t.Cleanup(s.srv.Close) // registered before StartHerald: Herald stops first
	return s
}

// next waits for the next webhook on path (others are kept in order for
// later calls through pending).
func (s *hookSink) next(t *testing.T, pending map[string][]hookRequest, path string) hookRequest {
	t.Helper()
	if q := pending[path]; len(q) > 0 {
		pending[path] = q[1:]
		return q[0]
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-s.reqs:
			if r.path == path {
				return r
			}
			pending[r.path] = append(pending[r.path], r)
		case <-deadline:
			t.Fatalf("no webhook on %s within 10s", path)
		}
	}
}

// validate runs the SDK's validator on r and checks that a client with the
// wrong secret, or the wrong key, rejects it.
func validate(t *testing.T, pc *pusher.Client, r hookRequest) *pusher.Webhook {
	t.Helper()
	wh, err := pc.Webhook(r.header, r.body)
	if err != nil {
		t.Fatalf("pusher-http-go rejects Herald's webhook %s %v: %v", r.body, r.header, err)
	}
	wrongSecret := &pusher.Client{AppID: pc.AppID, Key: pc.Key, Secret: "wrong-secret"}
	if _, err := wrongSecret.Webhook(r.header, r.body); err == nil {
		t.Fatalf("a client with the wrong secret accepts %s", r.body)
	}
	wrongKey := &pusher.Client{AppID: pc.AppID, Key: "wrong-key", Secret: pc.Secret}
	if _, err := wrongKey.Webhook(r.header, r.body); err == nil {
		t.Fatalf("a client with the wrong key accepts %s", r.body)
	}
	if _, err := pc.Webhook(r.header, append(bytes.Clone(r.body), ' ')); err == nil {
		t.Fatalf("an altered body validates: %s", r.body)
	}
	if ct := r.header.Values("Content-Type"); !reflect.DeepEqual(ct, []string{"application/json"}) {
		t.Fatalf("Content-Type %q", ct)
	}
	if now := time.Now().UnixMilli(); int64(wh.TimeMs) > now || int64(wh.TimeMs) < now-10_000 {
		t.Fatalf("time_ms %d is not recent (now %d)", wh.TimeMs, now)
	}
	return wh
}

func TestWebhooksPusherHTTPGo(t *testing.T) {
	sink := newHookSink(t)
	h := StartHerald(t, webhookConfig(sink.srv.URL))
	pc := appClient(h)
	pending := map[string][]hookRequest{}
	expect := func(path string, want ...pusher.WebhookEvent) hookRequest {
		t.Helper()
		r := sink.next(t, pending, path)
		if got := validate(t, pc, r).Events; !reflect.DeepEqual(got, want) {
			t.Fatalf("webhook on %s: events %+v, want %+v", path, got, want)
		}
		return r
	}

	a := DialWS(t, h, AppKey)
	joinPresence(t, pc, a, "presence-go", pusher.MemberData{UserID: "go-1", UserInfo: map[string]string{"n": "x"}},
		map[string]any{"go-1": map[string]any{"n": "x"}})
	expect("/all", pusher.WebhookEvent{Name: "channel_occupied", Channel: "presence-go"})
	expect("/all", pusher.WebhookEvent{Name: "member_added", Channel: "presence-go", UserID: "go-1"})

	a.Send(map[string]any{"event": "client-hello", "channel": "presence-go", "data": map[string]any{"hi": 1}})
	ce := pusher.WebhookEvent{Name: "client_event", Channel: "presence-go", Event: "client-hello",
		Data: `{"hi":1}`, SocketID: a.SocketID, UserID: "go-1"}
	expect("/all", ce)
	expect("/client", ce)

	subscribePrivate(t, pc, a, "private-go")
	a.Expect("pusher_internal:subscription_count", "private-go")
	expect("/all", pusher.WebhookEvent{Name: "channel_occupied", Channel: "private-go"})
	// subscription_count has no field in pusher-http-go's WebhookEvent.
	expect("/all", pusher.WebhookEvent{Name: "subscription_count", Channel: "private-go"})
	a.Send(map[string]any{"event": "client-note", "channel": "private-go", "data": "text"})
	ce = pusher.WebhookEvent{Name: "client_event", Channel: "private-go", Event: "client-note", Data: "text", SocketID: a.SocketID}
	expect("/all", ce)
	expect("/client", ce)

	a.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "cache-go"}})
	a.Expect("pusher_internal:subscription_succeeded", "cache-go")
	a.Expect("pusher:cache_miss", "cache-go")
	expect("/all", pusher.WebhookEvent{Name: "channel_occupied", Channel: "cache-go"})
	expect("/all", pusher.WebhookEvent{Name: "cache_miss", Channel: "cache-go"})
	expect("/all", pusher.WebhookEvent{Name: "subscription_count", Channel: "cache-go"})

	left := time.Now()
	a.Unsubscribe("presence-go")
	r := expect("/all", pusher.WebhookEvent{Name: "member_removed", Channel: "presence-go", UserID: "go-1"})
	expect("/all", pusher.WebhookEvent{Name: "channel_vacated", Channel: "presence-go"})
	if el := r.at.Sub(left); el < 3*time.Second || el > 5*time.Second {
		t.Errorf("member_removed %v after the leave, want about 3s", el)
	}

	// The batching app: events within 500 ms share one request, validated
	// with that app's credentials.
	oc := sdkClient(h, OtherID, OtherKey, OtherSecret)
	b := DialWS(t, h, OtherKey)
	b.Subscribe("batch-1")
	b.Subscribe("batch-2")
	got := validate(t, oc, sink.next(t, pending, "/other")).Events
	want := []pusher.WebhookEvent{{Name: "channel_occupied", Channel: "batch-1"}, {Name: "channel_occupied", Channel: "batch-2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("batched request carries %+v, want %+v", got, want)
	}
}
