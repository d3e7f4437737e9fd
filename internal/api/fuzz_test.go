package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	pathpkg "path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/state"
)

// recConn records what reaches one connection.
type recConn struct {
	id     string
	mu     sync.Mutex
	frames []string
	closed bool
}

func (c *recConn) SocketID() string { return c.id }
func (c *recConn) Send(w []byte)    { c.mu.Lock(); c.frames = append(c.frames, string(w)); c.mu.Unlock() }
func (c *recConn) SendPayload(p []byte) {
	c.Send(p)
}
func (c *recConn) Terminate()                  { c.Close(0, "") }
func (c *recConn) Close(protocol.Code, string) { c.mu.Lock(); c.closed = true; c.mu.Unlock() }

func (c *recConn) count() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames), c.closed
}

var fuzzNow = time.Unix(1700000000, 0)

// fuzzAPI is an API over in-memory state with two apps, "a" and "b", each
// with one connection subscribed to "shared", presence-shared and signed in
// as user "u".
type fuzzAPI struct {
	api   *API
	apps  map[string]*apps.App
	conns map[string]*recConn
}

func newFuzzAPI(t *testing.T) *fuzzAPI {
	a := &apps.App{ID: "a", Key: "a-key", Secret: "a-secret", MaxBatchSize: 3, MaxChannelsPerEvent: 3, MaxEventSize: 64}
	b := &apps.App{ID: "b", Key: "b-key", Secret: "b-secret"}
	a.ApplyDefaults()
	b.ApplyDefaults()
	reg, err := apps.NewRegistry([]*apps.App{a, b})
	if err != nil {
		t.Fatal(err)
	}
	hb := hub.New(nil, func(p []byte) []byte { return p }, 0)
	br := broker.NewMemory(hb.Deliver)
	hb.SetBroker(br)
	n := &session.Node{Apps: reg, Hub: hb, Broker: br, Presence: state.NewMemoryPresence(),
		Occupancy: state.NewMemoryOccupancy(), Users: state.NewMemoryUsers(), Cache: state.NewMemoryCache()}
	f := &fuzzAPI{api: New(Config{Now: func() time.Time { return fuzzNow }}, n, nil),
		apps: map[string]*apps.App{"a": a, "b": b}, conns: map[string]*recConn{}}
	for _, app := range []*apps.App{a, b} {
		c := &recConn{}
		s, err := n.Start(app, c)
		if err != nil {
			t.Fatal(err)
		}
		c.id = s.SocketID()
		msg := func(v any) []byte { b, _ := json.Marshal(v); return b }
		s.HandleMessage(msg(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "shared"}}))
		ud := `{"id":"u"}`
		s.HandleMessage(msg(map[string]any{"event": "pusher:signin", "data": map[string]any{
			"auth": app.Key + ":" + auth.Sign(app.Secret, auth.UserString(c.id, ud)), "user_data": ud}}))
		cd := `{"user_id":"u"}`
		s.HandleMessage(msg(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": "presence-shared",
			"auth": app.Key + ":" + auth.Sign(app.Secret, auth.ChannelString(c.id, "presence-shared", cd)), "channel_data": cd}}))
		if !s.IsSubscribed("shared") || !s.IsSubscribed("presence-shared") {
			t.Fatal("fixture connection did not subscribe")
		}
		f.conns[app.ID] = c
	}
	return f
}

// FuzzAPIRequest sends arbitrary requests through the HTTP API handler:
// method, path (under /apps/{a|b} or raw), query and body, either unsigned,
// signed by the app in the path, or signed by the other app. Invariants: no
// panic; every answer under /apps/ is JSON, errors are {"error","code"} with
// the HTTP status; a request signed by its own app is never refused as
// unauthenticated, and one signed with the other app's credentials always
// is; and nothing a request for one app does reaches the other app's
// connection.
func FuzzAPIRequest(f *testing.F) {
	f.Add("POST", "/events", "", []byte(`{"name":"e","channels":["shared"],"data":"x"}`), uint8(1))
	f.Add("POST", "/events", "", []byte(`{"name":"e","channel":"shared","data":{"a":1},"socket_id":"1.2","info":"subscription_count"}`), uint8(1))
	f.Add("POST", "/batch_events", "", []byte(`{"batch":[{"name":"e","channel":"shared","data":"x"},{"name":"f","channel":"presence-shared","data":"y","info":"user_count"}]}`), uint8(1))
	f.Add("POST", "/batch_events", "", []byte(`{"batch":[null,{}]}`), uint8(5))
	f.Add("GET", "/channels", "filter_by_prefix=presence-&info=user_count", []byte(nil), uint8(1))
	f.Add("GET", "/channels/presence-shared", "info=user_count,subscription_count", []byte(nil), uint8(5))
	f.Add("GET", "/channels/cache-x", "info=cache", []byte(nil), uint8(1))
	f.Add("GET", "/channels/presence-shared/users", "", []byte(nil), uint8(1))
	f.Add("POST", "/users/u/terminate_connections", "", []byte(nil), uint8(1))
	f.Add("POST", "/users/u/terminate_connections", "", []byte(nil), uint8(2))
	f.Add("POST", "/events", "auth_version=1.0&auth_key=a-key", []byte(`{`), uint8(0))
	f.Add("GET", "/apps/a/../b/channels", "", []byte(nil), uint8(0x10|1))
	f.Add("PUT", "/%zz", "a=%", []byte("\xff"), uint8(0x10))
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, body []byte, mode uint8) {
		if !validMethod(method) {
			return // net/http refuses such requests before any handler
		}
		fa := newFuzzAPI(t)
		target := fa.apps["a"]
		if mode&4 != 0 {
			target = fa.apps["b"]
		}
		other := fa.apps["a"]
		if target == other {
			other = fa.apps["b"]
		}
		full := "/apps/" + target.ID + path
		if mode&0x10 != 0 {
			full = path // raw path
		}
		if !strings.HasPrefix(full, "/") {
			full = "/" + full
		}
		q, _ := url.ParseQuery(rawQuery)
		signedBy := ""
		switch mode & 3 {
		case 1:
			q = auth.SignRequest(method, full, q, body, target.Key, target.Secret, fuzzNow)
			signedBy = target.ID
		case 2:
			q = auth.SignRequest(method, full, q, body, other.Key, other.Secret, fuzzNow)
			signedBy = other.ID
		case 3:
			q = auth.SignRequest(method, full, q, body, target.Key, other.Secret, fuzzNow)
			signedBy = "forged"
		}
		req := &http.Request{Method: method, URL: &url.URL{Path: full, RawQuery: q.Encode()}, Header: http.Header{},
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), RemoteAddr: "127.0.0.1:1"}
		req = req.WithContext(t.Context())
		before := map[string]int{}
		for id, c := range fa.conns {
			before[id], _ = c.count()
		}
		rec := httptest.NewRecorder()
		fa.api.ServeHTTP(rec, req)
		st := rec.Code

		if strings.HasPrefix(full, "/apps/") && rec.Header().Get("Content-Type") == "application/json" {
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %s: invalid JSON answer %q", method, full, rec.Body.String())
			}
			if st != http.StatusOK {
				var e struct {
					Error *string `json:"error"`
					Code  int     `json:"code"`
				}
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == nil || *e.Error == "" || e.Code != st {
					t.Fatalf("%s %s: error answer %d %q is not {error, code}", method, full, st, rec.Body.String())
				}
			}
		}
		switch st {
		case 200, 301, 307, 308, 400, 401, 403, 404, 405, 413, 429, 503:
		default:
			t.Fatalf("%s %s: unexpected status %d %q", method, full, st, rec.Body.String())
		}
		// The app the (cleaned) path addresses, if any.
		addressed := ""
		if rest, ok := strings.CutPrefix(pathpkg.Clean(full), "/apps/"); ok {
			addressed, _, _ = strings.Cut(rest, "/")
		}
		routed := fa.apps[addressed] != nil && st != 404 && st/100 != 3 && st != http.StatusRequestEntityTooLarge
		if routed && signedBy == addressed && st == http.StatusUnauthorized {
			t.Fatalf("%s %s signed by its app: 401 %s", method, full, rec.Body.String())
		}
		if routed && signedBy != addressed && st != http.StatusUnauthorized {
			t.Fatalf("%s %s signed by %q: %d %s", method, full, signedBy, st, rec.Body.String())
		}
		// Whatever the request did, the other app is untouched.
		for id, c := range fa.conns {
			n, closed := c.count()
			if id != addressed && (n != before[id] || closed) {
				t.Fatalf("%s %s (app %q) reached app %s's connection", method, full, addressed, id)
			}
		}
	})
}

// validMethod reports whether m is an HTTP token (net/http's rule).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
