package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

func TestAPITriggerExcludesSocket(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribe("room")
	b.subscribe("room")
	st, body := e.api("POST", "/events", nil, map[string]any{"name": "ev", "channel": "room", "data": "d", "socket_id": a.socketID})
	if st != 200 || body != "{}" {
		t.Fatalf("%d %s", st, body)
	}
	b.expectOn("ev", "room")
	a.expectNothing(150 * time.Millisecond)
}

func TestAPIMultiChannelAndInfo(t *testing.T) {
	e := start(t)
	a := e.connect("app-key")
	a.subscribe("c1")
	a.subscribePresence("presence-p", "u1", nil)
	st, body := e.api("POST", "/events", nil, map[string]any{"name": "ev", "channels": []string{"c1", "c2", "presence-p"}, "data": "d", "info": "user_count,subscription_count"})
	want := `{"channels":{"c1":{"subscription_count":1},"c2":{"subscription_count":0},"presence-p":{"user_count":1}}}`
	if st != 200 || body != want {
		t.Fatalf("%d %s", st, body)
	}
	a.expectOn("ev", "c1")
	a.expectOn("ev", "presence-p")
}

func TestAPIBatch(t *testing.T) {
	e := start(t)
	a := e.connect("app-key")
	a.subscribe("b1")
	a.subscribe("b2")
	batch := []map[string]any{{"name": "e1", "channel": "b1", "data": "1"}, {"name": "e2", "channel": "b2", "data": "2", "info": "subscription_count"}}
	st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": batch})
	if st != 200 || body != `{"batch":[{},{"subscription_count":1}]}` {
		t.Fatalf("%d %s", st, body)
	}
	a.expectOn("e1", "b1")
	a.expectOn("e2", "b2")
	// 11 events: refused whole; an invalid item refuses the whole batch.
	var eleven []map[string]any
	for i := 0; i < 11; i++ {
		eleven = append(eleven, map[string]any{"name": "x", "channel": "b1", "data": "d"})
	}
	if st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": eleven}); st != 400 {
		t.Fatalf("11 events: %d %s", st, body)
	}
	bad := []map[string]any{{"name": "ok", "channel": "b1", "data": "d"}, {"name": "bad", "channel": "bad name", "data": "d"}}
	if st, body := e.api("POST", "/batch_events", nil, map[string]any{"batch": bad}); st != 400 {
		t.Fatalf("bad batch: %d %s", st, body)
	}
	a.expectNothing(150 * time.Millisecond)
}

func TestAPIValidation(t *testing.T) {
	e := start(t)
	many := make([]string, 101)
	for i := range many {
		many[i] = "c" + strconv.Itoa(i)
	}
	cases := []struct {
		name string
		body any
		want int
	}{
		{"data 10 KB is fine", map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", 10240)}, 200},
		{"data over 10 KB", map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", 10241)}, 413},
		{"101 channels", map[string]any{"name": "e", "channels": many, "data": "d"}, 400},
		{"100 channels", map[string]any{"name": "e", "channels": many[:100], "data": "d"}, 200},
		{"name 201", map[string]any{"name": strings.Repeat("n", 201), "channel": "c", "data": "d"}, 400},
		{"no name", map[string]any{"channel": "c", "data": "d"}, 400},
		{"no data", map[string]any{"name": "e", "channel": "c"}, 400},
		{"no channels", map[string]any{"name": "e", "data": "d"}, 400},
		{"bad channel", map[string]any{"name": "e", "channel": "a b", "data": "d"}, 400},
		{"channel 200", map[string]any{"name": "e", "channel": strings.Repeat("c", 200), "data": "d"}, 400},
		{"reserved name", map[string]any{"name": "pusher:x", "channel": "c", "data": "d"}, 400},
		{"bad socket_id", map[string]any{"name": "e", "channel": "c", "data": "d", "socket_id": "abc"}, 400},
		{"not json", "{", 400},
		{"object data is delivered as JSON text", map[string]any{"name": "e", "channel": "c", "data": map[string]any{"a": 1}}, 200},
	}
	for _, tc := range cases {
		st, body := e.api("POST", "/events", nil, tc.body)
		if st != tc.want {
			t.Errorf("%s: %d %s", tc.name, st, body)
		}
		if st != 200 && !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s: error body is not JSON: %s", tc.name, body)
		}
	}
}

func TestAPIChannelQueries(t *testing.T) {
	e := start(t)
	a, b := e.connect("app-key"), e.connect("app-key")
	a.subscribe("pub")
	b.subscribe("pub")
	a.subscribePresence("presence-q", "u1", nil)
	b.subscribePresence("presence-q", "u2", nil)
	a.expect("pusher_internal:member_added")
	check := func(path string, params url.Values, wantStatus int, want string) {
		t.Helper()
		st, body := e.api("GET", path, params, nil)
		if st != wantStatus || (want != "" && body != want) {
			t.Fatalf("GET %s %v: %d %s", path, params, st, body)
		}
	}
	check("/channels", nil, 200, `{"channels":{"presence-q":{},"pub":{}}}`)
	check("/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, 200, `{"channels":{"presence-q":{"user_count":2}}}`)
	check("/channels", url.Values{"info": {"user_count"}}, 400, "")
	check("/channels", url.Values{"info": {"subscription_count"}, "filter_by_prefix": {"pu"}}, 200, `{"channels":{"pub":{"subscription_count":2}}}`)
	check("/channels/pub", nil, 200, `{"occupied":true}`)
	check("/channels/pub", url.Values{"info": {"subscription_count"}}, 200, `{"occupied":true,"subscription_count":2}`)
	check("/channels/pub", url.Values{"info": {"user_count"}}, 400, "")
	check("/channels/pub", url.Values{"info": {"cache"}}, 400, "")
	check("/channels/presence-q", url.Values{"info": {"user_count"}}, 200, `{"occupied":true,"user_count":2}`)
	check("/channels/empty", nil, 200, `{"occupied":false}`)
	check("/channels/presence-none/users", nil, 200, `{"users":[]}`)
	check("/channels/pub/users", nil, 400, "")
	// Unsubscribing everyone vacates the channel.
	a.send(`{"event":"pusher:unsubscribe","data":{"channel":"pub"}}`)
	b.conn.Close()
	waitFor(t, "pub vacated", func() bool {
		_, body := e.api("GET", "/channels/pub", nil, nil)
		return body == `{"occupied":false}`
	})
}

// raw sends an API request with hand-built query parameters.
func (e *env) raw(method, path, query string, body []byte) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.addr+path+"?"+query, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAPIAuthentication(t *testing.T) {
	e := start(t)
	body := []byte(`{"name":"e","channel":"c","data":"d"}`)
	sign := func(appPath, key, secret string, ts time.Time, b []byte) string {
		return auth.SignRequest("POST", appPath, nil, b, key, secret, ts).Encode()
	}
	path := "/apps/app-id/events"
	if st, b := e.raw("POST", path, sign(path, "app-key", "app-secret", time.Now(), body), body); st != 200 {
		t.Fatalf("good request: %d %s", st, b)
	}
	cases := map[string]struct {
		path, query string
		body        []byte
		want        int
	}{
		"wrong secret":      {path, sign(path, "app-key", "other-secret", time.Now(), body), body, 401},
		"other app's key":   {path, sign(path, "other-key", "other-secret", time.Now(), body), body, 401},
		"expired":           {path, sign(path, "app-key", "app-secret", time.Now().Add(-601*time.Second), body), body, 401},
		"future":            {path, sign(path, "app-key", "app-secret", time.Now().Add(601*time.Second), body), body, 401},
		"tampered body":     {path, sign(path, "app-key", "app-secret", time.Now(), body), []byte(`{"name":"e","channel":"c","data":"X"}`), 401},
		"unsigned":          {path, "", body, 401},
		"unknown app":       {"/apps/nope/events", sign("/apps/nope/events", "app-key", "app-secret", time.Now(), body), body, 404},
		"signed for app B":  {"/apps/other/events", sign("/apps/other/events", "app-key", "app-secret", time.Now(), body), body, 401},
		"disabled app":      {"/apps/off/events", sign("/apps/off/events", "off-key", "off-secret", time.Now(), body), body, 403},
		"path of other app": {"/apps/other/events", sign(path, "other-key", "other-secret", time.Now(), body), body, 401},
	}
	for name, tc := range cases {
		st, b := e.raw("POST", tc.path, tc.query, tc.body)
		if st != tc.want {
			t.Errorf("%s: %d %s", name, st, b)
		}
	}
	// Oversized bodies are refused before anything else.
	huge := bytes.Repeat([]byte("x"), 2<<20)
	if st, _ := e.raw("POST", path, sign(path, "app-key", "app-secret", time.Now(), huge), huge); st != 413 {
		t.Fatalf("huge body: %d", st)
	}
	if st, _ := e.raw("GET", "/apps/app-id/nothing", "", nil); st != 404 {
		t.Fatalf("unknown endpoint: %d", st)
	}
}

// Tenant isolation over the API: app B's credentials never see app A's channels.
func TestAPITenantIsolation(t *testing.T) {
	e := start(t)
	a := e.connect("app-key")
	a.subscribe("shared-name")
	o := e.connect("other-key")
	o.subscribe("shared-name")
	st, body := e.apiCall("other", "other-key", "other-secret", "GET", "/channels", nil, nil)
	if st != 200 || body != `{"channels":{"shared-name":{}}}` {
		t.Fatalf("%d %s", st, body)
	}
	st, _ = e.apiCall("other", "other-key", "other-secret", "POST", "/events", nil, map[string]any{"name": "e", "channel": "shared-name", "data": "B"})
	if st != 200 {
		t.Fatal(st)
	}
	o.expectOn("e", "shared-name")
	a.expectNothing(150 * time.Millisecond)
}
