package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
)

// wait bounds every wait for something that should happen.
const wait = 5 * time.Second

// request is one webhook POST as the receiver saw it.
type request struct {
	n      int // 1-based arrival number
	header http.Header
	body   []byte
}

// payload is a decoded webhook body.
type payload struct {
	TimeMs int64            `json:"time_ms"`
	Events []map[string]any `json:"events"`
}

func (r request) decode(t *testing.T) payload {
	t.Helper()
	var p payload
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("webhook body is not JSON: %v\n%s", err, r.body)
	}
	return p
}

// names lists the event names of r, with the channel: "channel_occupied:c".
func (r request) names(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, e := range r.decode(t).Events {
		out = append(out, e["name"].(string)+":"+e["channel"].(string))
	}
	return out
}

// receiver is a real HTTP server on 127.0.0.1 that records webhooks. Its
// status function decides the answer to request n (default 200).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	reqs   chan request
	count  atomic.Int64
	status func(n int, r *http.Request) int
}

func newReceiver(t *testing.T, status func(n int, r *http.Request) int) *receiver {
	t.Helper()
	rc := &receiver{t: t, reqs: make(chan request, 10_000), status: status}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		n := int(rc.count.Add(1))
		code := http.StatusOK
		if rc.status != nil {
			code = rc.status(n, r)
		}
		if code == 0 { // the status function gave up waiting (test over)
			return
		}
		if code/100 == 2 {
			rc.reqs <- request{n: n, header: r.Header.Clone(), body: b}
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

// next waits for the next successful request.
func (rc *receiver) next() request {
	rc.t.Helper()
	select {
	case r := <-rc.reqs:
		return r
	case <-time.After(wait):
		rc.t.Fatalf("no webhook within %v", wait)
	}
	return request{}
}

// none checks that no successful request is waiting.
func (rc *receiver) none() {
	rc.t.Helper()
	select {
	case r := <-rc.reqs:
		rc.t.Fatalf("unexpected webhook: %s", r.body)
	default:
	}
}

// testConfig is a Dispatcher config with short times for unit tests.
func testConfig() Config {
	return Config{
		Delay:          150 * time.Millisecond,
		RequestTimeout: time.Second,
		RetryFor:       5 * time.Second,
		RetryMin:       20 * time.Millisecond,
		RetryMax:       100 * time.Millisecond,
	}
}

// testApp returns an app with webhooks to urls (all event types).
func testApp(id string, urls ...string) *apps.App {
	a := &apps.App{ID: id, Key: id + "-key", Secret: id + "-secret"}
	for _, u := range urls {
		a.Webhooks = append(a.Webhooks, apps.Webhook{URL: u})
	}
	return a
}

// start builds a Dispatcher closed when the test ends (with a short bounded
// wait: tests that check Close call it themselves).
func start(t *testing.T, cfg Config, list ...*apps.App) *Dispatcher {
	t.Helper()
	if err := (&apps.Config{Apps: list}).Validate(); err != nil {
		t.Fatalf("test apps do not validate: %v", err)
	}
	d := New(cfg, list, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_ = d.Close(ctx)
	})
	return d
}

// sign is the receiver's own HMAC-SHA256 check, independent of package auth.
func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// eventually polls cond until it holds or wait passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
