package testkit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// WebhookReceiver is a real HTTP endpoint on 127.0.0.1 that checks every
// webhook's method, headers and signature for app (a mismatch fails the test
// and is answered 401) and records its events.
type WebhookReceiver struct {
	t   testing.TB
	app App
	srv *httptest.Server
	// OneEventPerBody fails the test for a body with more than one event
	// (apps without batching). Set before Herald sends anything.
	OneEventPerBody bool

	events chan WebhookEvent
	mu     sync.Mutex
	all    []WebhookEvent
}

// WebhookEvent is one event of a webhook body, with the body's time_ms.
// Numbers in Fields are json.Number.
type WebhookEvent struct {
	TimeMs int64
	Fields map[string]any
	At     time.Time // arrival
}

// NewWebhookReceiver starts a receiver; it is closed when the test ends
// (after any Herald started later in the test has stopped).
func NewWebhookReceiver(t testing.TB, app App) *WebhookReceiver {
	t.Helper()
	w := &WebhookReceiver{t: t, app: app, events: make(chan WebhookEvent, 10000)}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	return w
}

// URL is where Herald should post.
func (w *WebhookReceiver) URL() string { return w.srv.URL + "/pusher/webhooks" }

func (w *WebhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(w.app.Secret))
	mac.Write(b)
	switch {
	case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Pusher-Key") != w.app.Key:
		w.t.Errorf("webhook request %s with headers %v", r.Method, r.Header)
		http.Error(rw, "bad request", http.StatusBadRequest)
		return
	case r.Header.Get("X-Pusher-Signature") != hex.EncodeToString(mac.Sum(nil)):
		w.t.Errorf("webhook signature does not match its body %s", b)
		http.Error(rw, "bad signature", http.StatusUnauthorized)
		return
	}
	var p struct {
		TimeMs int64            `json:"time_ms"`
		Events []map[string]any `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil || len(p.Events) == 0 || (w.OneEventPerBody && len(p.Events) != 1) {
		w.t.Errorf("webhook body %s: %v", b, err)
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range p.Events {
		ev := WebhookEvent{TimeMs: p.TimeMs, Fields: e, At: now}
		w.all = append(w.all, ev)
		select {
		case w.events <- ev:
		default:
			w.t.Errorf("webhook receiver: more than %d events unread", cap(w.events))
		}
	}
}

// Next returns the next event in arrival order, or false after d.
func (w *WebhookReceiver) Next(d time.Duration) (WebhookEvent, bool) {
	select {
	case e := <-w.events:
		return e, true
	case <-time.After(d):
		return WebhookEvent{}, false
	}
}

// Count returns how many events so far have name, channel and (unless "")
// user_id.
func (w *WebhookReceiver) Count(name, channel, userID string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.all {
		f := e.Fields
		if f["name"] == name && f["channel"] == channel && (userID == "" || f["user_id"] == userID) {
			n++
		}
	}
	return n
}
