package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// The API request rate is per app: past it, 429 with Retry-After and the
// X-RateLimit headers; unsigned requests use none of the quota; other apps are
// untouched; tokens come back with time.
func TestAPIRateLimit(t *testing.T) {
	e := start(t)
	ev := map[string]any{"name": "ev", "channel": "c", "data": "{}"}

	// Bad signatures are refused before the limiter, so they cannot exhaust it.
	for i := 0; i < 10; i++ {
		if status, _ := e.apiCall("limited", "limited-key", "wrong-secret", "POST", "/events", nil, ev); status != http.StatusUnauthorized {
			t.Fatalf("bad signature: status %d", status)
		}
	}
	for i := 0; i < 3; i++ {
		status, body, h := e.apiCallHeaders("limited", "limited-key", "limited-secret", "POST", "/events", nil, ev)
		if status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
		if h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Fatalf("request %d headers: limit %q remaining %q", i, h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"))
		}
	}
	status, body, h := e.apiCallHeaders("limited", "limited-key", "limited-secret", "GET", "/channels", nil, nil)
	if status != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d %s", status, body)
	}
	var eb struct {
		Error string `json:"error"`
		Code  int    `json:"code"`
	}
	if json.Unmarshal([]byte(body), &eb) != nil || eb.Code != 429 || eb.Error == "" {
		t.Fatalf("429 body: %s", body)
	}
	if h.Get("Retry-After") != "1" || h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Limit") != "3" {
		t.Fatalf("429 headers: %v", h)
	}
	// Another app is not affected.
	if status, body := e.api("POST", "/events", nil, ev); status != http.StatusOK {
		t.Fatalf("other app: %d %s", status, body)
	}
	// A token is back after 1/3 s.
	time.Sleep(400 * time.Millisecond)
	if status, body := e.apiCall("limited", "limited-key", "limited-secret", "POST", "/events", nil, ev); status != http.StatusOK {
		t.Fatalf("after refill: %d %s", status, body)
	}
}
