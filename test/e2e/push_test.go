package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// receipt is the answer of a direct push.
type receipt struct {
	Delivered  int      `json:"delivered"`
	Sockets    []string `json:"sockets"`
	TimedOut   bool     `json:"timed_out"`
	Unanswered []string `json:"unanswered_nodes"`
}

func (e *env) push(path string, body any) (int, string, receipt) {
	e.t.Helper()
	st, b := e.api("POST", path, nil, body)
	var r receipt
	if st == 200 {
		if err := json.Unmarshal([]byte(b), &r); err != nil {
			e.t.Fatalf("receipt %q: %v", b, err)
		}
	}
	return st, b, r
}

// Direct push to a user: every signed-in connection of the user gets the
// event on its user channel, and the answer lists exactly those sockets;
// an offline user gets {"delivered":0}.
func TestPushToUser(t *testing.T) {
	e := start(t)
	phone, laptop, other, anon := e.connect("app-key"), e.connect("app-key"), e.connect("app-key"), e.connect("app-key")
	phone.signin(`{"id":"alice"}`)
	laptop.signin(`{"id":"alice","user_info":{"device":"laptop"}}`)
	other.signin(`{"id":"bob"}`)

	st, body, r := e.push("/users/alice/events", map[string]any{"name": "order-shipped", "data": map[string]any{"order": 7}})
	want := []string{phone.socketID, laptop.socketID}
	slices.Sort(want)
	if st != 200 || r.Delivered != 2 || !slices.Equal(r.Sockets, want) || r.TimedOut {
		t.Fatalf("push to alice: %d %s, want delivered 2 to %v", st, body, want)
	}
	for _, c := range []*client{phone, laptop} {
		f := c.expectOn("order-shipped", "#server-to-user-alice")
		if f.dataString() != `{"order":7}` {
			t.Fatalf("pushed data: %s", f.raw)
		}
	}
	other.expectNothing(100 * time.Millisecond)
	anon.expectNothing(0)

	// Offline, and a user who signed out by closing.
	if st, body, _ := e.push("/users/carol/events", map[string]any{"name": "x", "data": "y"}); st != 200 || body != `{"delivered":0}` {
		t.Fatalf("offline user: %d %s", st, body)
	}
	other.conn.Close()
	toBob, pushes := 0, 0 // until the server noticed the close, bob may still get them
	waitFor(t, "bob offline", func() bool {
		_, b, r := e.push("/users/bob/events", map[string]any{"name": "x", "data": "y"})
		toBob += r.Delivered
		pushes++
		return b == `{"delivered":0}`
	})
	// String data is delivered as is, like a trigger.
	if st, body, r := e.push("/users/alice/events", map[string]any{"name": "s", "data": "plain"}); st != 200 || r.Delivered != 2 {
		t.Fatalf("string data: %d %s", st, body)
	}
	if f := phone.expectOn("s", "#server-to-user-alice"); f.dataString() != "plain" {
		t.Fatalf("string data arrived as %s", f.raw)
	}
	laptop.expectOn("s", "#server-to-user-alice")

	// The metrics count the pushes and the deliveries of their receipts.
	mfs, err := e.srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil && len(m.GetLabel()) == 0 {
				got[mf.GetName()] = c.GetValue()
			}
		}
	}
	if got["herald_push_requests_total"] != float64(3+pushes) || got["herald_push_delivered_total"] != float64(4+toBob) || got["herald_push_timed_out_total"] != 0 {
		t.Fatalf("push metrics: requests %v, delivered %v, timed out %v", got["herald_push_requests_total"],
			got["herald_push_delivered_total"], got["herald_push_timed_out_total"])
	}
}

// Direct push to one socket: only that connection gets it, with no channel;
// a socket id that is not connected (closed, never existed, another app's)
// is 404.
func TestPushToSocket(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	st, body, r := e.push("/sockets/"+a.socketID+"/events", map[string]any{"name": "nudge", "data": "{}"})
	if st != 200 || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{a.socketID}) {
		t.Fatalf("push to socket: %d %s", st, body)
	}
	f := a.expect("nudge")
	if f.Channel != "" || f.dataString() != "{}" {
		t.Fatalf("socket push frame: %s", f.raw)
	}
	b.expectNothing(100 * time.Millisecond)

	// Another app cannot reach this app's socket, even knowing its id.
	if st, body := e.apiCall("other", "other-key", "other-secret", "POST", "/sockets/"+a.socketID+"/events", nil,
		map[string]any{"name": "x", "data": "y"}); st != 404 {
		t.Fatalf("other app's push to the socket: %d %s", st, body)
	}
	a.expectNothing(100 * time.Millisecond)
	if st, body, _ := e.push("/sockets/123.456/events", map[string]any{"name": "x", "data": "y"}); st != 404 || !strings.Contains(body, `"code":404`) {
		t.Fatalf("unknown socket: %d %s", st, body)
	}
	b.conn.Close()
	waitFor(t, "closed socket gone", func() bool {
		st, _, _ := e.push("/sockets/"+b.socketID+"/events", map[string]any{"name": "x", "data": "y"})
		return st == 404
	})
}

// Bad input gets the documented errors and never reaches a connection.
func TestPushBadInput(t *testing.T) {
	e := start(t)
	c := e.connect("app-key")
	c.signin(`{"id":"u"}`)
	ok := map[string]any{"name": "e", "data": "d"}
	// Signed over the decoded path, as the server verifies it, so that the
	// id itself is what is refused.
	call := func(path string, body any) (int, string) {
		t.Helper()
		b, _ := json.Marshal(body)
		if s, isStr := body.(string); isStr {
			b = []byte(s)
		}
		escaped := "/apps/app-id" + path
		decoded, err := url.PathUnescape(escaped)
		if err != nil {
			t.Fatal(err)
		}
		q := auth.SignRequest("POST", decoded, nil, b, "app-key", "app-secret", time.Now())
		resp, err := http.Post("http://"+e.addr+escaped+"?"+q.Encode(), "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(rb)
	}
	for _, tc := range []struct {
		name, path string
		body       any
		status     int
	}{
		{"user id with a space", "/users/a%20b/events", ok, 400},
		{"user id with a slash", "/users/a%2Fb/events", ok, 400},
		{"user id with a hash", "/users/%23server-to-user-u/events", ok, 400},
		{"user id too long", "/users/" + strings.Repeat("u", 129) + "/events", ok, 400},
		{"user id with a quote", "/users/u%22%7D/events", ok, 400},
		{"socket id not two integers", "/sockets/abc/events", ok, 400},
		{"socket id with three parts", "/sockets/1.2.3/events", ok, 400},
		{"socket id too long", "/sockets/" + strings.Repeat("1", 70) + ".1/events", ok, 400},
		{"no name", "/users/u/events", map[string]any{"data": "d"}, 400},
		{"reserved name", "/users/u/events", map[string]any{"name": "pusher:x", "data": "d"}, 400},
		{"name too long", "/users/u/events", map[string]any{"name": strings.Repeat("n", 201), "data": "d"}, 400},
		{"no data", "/users/u/events", map[string]any{"name": "e"}, 400},
		{"data over max_event_size", "/users/u/events", map[string]any{"name": "e", "data": strings.Repeat("x", 10241)}, 413},
		{"not JSON", "/users/u/events", "{", 400},
		{"timeout 0", "/users/u/events", map[string]any{"name": "e", "data": "d", "timeout_ms": 0}, 400},
		{"timeout over 10 s", "/users/u/events", map[string]any{"name": "e", "data": "d", "timeout_ms": 10001}, 400},
		{"timeout not a number", "/users/u/events", map[string]any{"name": "e", "data": "d", "timeout_ms": "1s"}, 400},
	} {
		st, body := call(tc.path, tc.body)
		if st != tc.status || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want %d with an error", tc.name, st, body, tc.status)
		}
	}
	// A bad signature, and a body over 1 MiB.
	if st, body := e.apiCall("app-id", "app-key", "wrong-secret", "POST", "/users/u/events", nil, ok); st != 401 {
		t.Errorf("bad signature: %d %s", st, body)
	}
	if st, body := e.api("POST", "/users/u/events", nil, map[string]any{"name": "e", "data": strings.Repeat("x", 1<<20)}); st != 413 {
		t.Errorf("body over 1 MiB: %d %s", st, body)
	}
	// GET is not a push.
	if st, _ := e.api("GET", "/users/u/events", url.Values{}, nil); st != 404 {
		t.Errorf("GET: %d", st)
	}
	c.expectNothing(100 * time.Millisecond)
	// A valid timeout is accepted.
	if st, body, r := e.push("/users/u/events", map[string]any{"name": "e", "data": "d", "timeout_ms": 500}); st != 200 || r.Delivered != 1 {
		t.Fatalf("with timeout_ms: %d %s", st, body)
	}
}
