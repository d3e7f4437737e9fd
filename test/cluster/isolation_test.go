package cluster

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/testkit"
)

// isolationConfig: two tenants on the same Redis shards and Herald nodes.
const isolationConfig = `node_timeout: 3
apps:
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
  - id: tenant-b
    key: tenant-b-key
    secret: tenant-b-secret
    client_events: true
`

var tenantB = testkit.App{ID: "tenant-b", Key: "tenant-b-key", Secret: "tenant-b-secret"}

// Tenant isolation across a cluster: apps A and B each have a socket on
// both edge nodes, on the same channel names and user ids, sharing the
// Redis shards (presence, counts, users, cache and pub/sub). Nothing crosses
// from one app to the other: API publishes, client events, presence members
// and counts, cached events, user messages and terminations; and B's
// credentials are refused on every A endpoint of the api node.
func TestClusterTenantIsolation(t *testing.T) {
	f := startFleetWith(t, isolationConfig)
	aA, aB := testkit.Dial(t, f.edgeA.Addr, app.Key), testkit.Dial(t, f.edgeB.Addr, app.Key)
	bA, bB := testkit.Dial(t, f.edgeA.Addr, tenantB.Key), testkit.Dial(t, f.edgeB.Addr, tenantB.Key)
	type sock struct {
		c   *testkit.WSClient
		app testkit.App
	}
	all := []sock{{aA, app}, {aB, app}, {bA, tenantB}, {bB, tenantB}}
	for _, s := range all {
		s.c.Subscribe("shared")
		s.c.SendSubscribe("private-shared", testkit.ChannelAuth(s.app, s.c.SocketID, "private-shared", ""), "")
		s.c.Expect("pusher_internal:subscription_succeeded", "private-shared")
	}
	// Presence: u1 on edge A and u2 on edge B in each app; each app's first
	// member hears of its own second member only.
	for i, s := range all {
		uid := []string{"u1", "u2"}[i%2]
		cd := `{"user_id":"` + uid + `","user_info":{"app":"` + s.app.ID + `"}}`
		s.c.SendSubscribe("presence-shared", testkit.ChannelAuth(s.app, s.c.SocketID, "presence-shared", cd), cd)
		sc := s.c.Expect("pusher_internal:subscription_succeeded", "presence-shared")
		if d := sc.DataString(t); strings.Contains(d, `"app":"`+otherApp(s.app).ID+`"`) || !strings.Contains(d, `"count":`+[]string{"1", "2"}[i%2]) {
			t.Fatalf("%s's presence-shared: %s", s.app.ID, d)
		}
		if i%2 == 1 {
			added := all[i-1].c.Expect("pusher_internal:member_added", "presence-shared")
			if !strings.Contains(added.DataString(t), `"app":"`+s.app.ID+`"`) {
				t.Fatalf("member_added across tenants: %s", added.Raw)
			}
		}
	}
	for i, s := range all {
		ud := `{"id":"` + []string{"u1", "u2"}[i%2] + `"}`
		s.c.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{"auth": testkit.UserAuth(s.app, s.c.SocketID, ud), "user_data": ud}})
		s.c.Expect("pusher:signin_success", "")
	}

	// A's API publish reaches A's sockets on both nodes, not B's.
	body, _ := json.Marshal(map[string]any{"name": "from-a", "channels": []string{"shared", "private-shared", "presence-shared", "#server-to-user-u1"}, "data": "A"})
	if code, rb := testkit.API(t, f.api.Addr, app, "POST", "/events", nil, body); code != http.StatusOK {
		t.Fatalf("A publish: %d %s", code, rb)
	}
	// The channels may live on different Redis shards, so the events of one
	// trigger arrive in any order across channels: collect, then compare.
	for _, c := range []*testkit.WSClient{aA, aB} {
		want := []string{"shared", "private-shared", "presence-shared"}
		if c == aA {
			want = append(want, "#server-to-user-u1")
		}
		got := map[string]int{}
		for range want {
			f := c.Next()
			if f.Event != "from-a" || f.DataString(t) != "A" || f.UserID != "" {
				t.Fatalf("socket %s: expected A's from-a event, got %s", c.SocketID, f.Raw)
			}
			got[f.Channel]++
		}
		for _, ch := range want {
			if got[ch] != 1 {
				t.Fatalf("socket %s: from-a on %q arrived %d times (all: %v)", c.SocketID, ch, got[ch], got)
			}
		}
	}
	// B's client event on edge A reaches B's socket on edge B only.
	bA.Send(`{"event":"client-b","channel":"private-shared","data":{"from":"B"}}`)
	bB.Expect("client-b", "private-shared")
	// A's cached event is not B's.
	body, _ = json.Marshal(map[string]any{"name": "cached", "channel": "cache-shared", "data": "A's"})
	if code, rb := testkit.API(t, f.api.Addr, app, "POST", "/events", nil, body); code != http.StatusOK {
		t.Fatalf("A cache publish: %d %s", code, rb)
	}
	bB.Subscribe("cache-shared")
	bB.Expect("pusher:cache_miss", "cache-shared")

	// B's credentials on A's endpoints: refused.
	for _, p := range []struct{ method, path string }{{"POST", "/events"}, {"GET", "/channels"},
		{"GET", "/channels/presence-shared/users"}, {"POST", "/users/u1/terminate_connections"}} {
		var b []byte
		if p.method == "POST" && p.path == "/events" {
			b = []byte(`{"name":"x","channel":"shared","data":"B"}`)
		}
		forged := testkit.App{ID: app.ID, Key: tenantB.Key, Secret: tenantB.Secret}
		if code, rb := testkit.API(t, f.api.Addr, forged, p.method, p.path, nil, b); code != http.StatusUnauthorized {
			t.Errorf("B's credentials on %s /apps/%s%s: %d %s", p.method, app.ID, p.path, code, rb)
		}
	}
	// Presence and counts are per app in the shared state.
	for _, tc := range []struct {
		a    testkit.App
		want string
	}{{app, `{"users":[{"id":"u1"},{"id":"u2"}]}`}, {tenantB, `{"users":[{"id":"u1"},{"id":"u2"}]}`}} {
		if code, rb := testkit.API(t, f.api.Addr, tc.a, "GET", "/channels/presence-shared/users", nil, nil); code != 200 || rb != tc.want {
			t.Errorf("%s users: %d %s", tc.a.ID, code, rb)
		}
		if code, rb := testkit.API(t, f.api.Addr, tc.a, "GET", "/channels/private-shared", url.Values{"info": {"subscription_count"}}, nil); code != 200 || !strings.Contains(rb, `"subscription_count":2`) {
			t.Errorf("%s private-shared count: %d %s", tc.a.ID, code, rb)
		}
	}
	// B terminates u1: B's u1 socket (edge A) closes, A's u1 (edge A) stays.
	if code, rb := testkit.API(t, f.api.Addr, tenantB, "POST", "/users/u1/terminate_connections", nil, nil); code != http.StatusOK {
		t.Fatalf("B terminate: %d %s", code, rb)
	}
	bA.ExpectError(4009)
	bA.ExpectClose(4009)
	// A's sockets saw nothing of B, and still work.
	testkit.ExpectQuiet(t, 300*time.Millisecond, aA, aB)
	aA.Ping()
	aB.Ping()
	// B's u1 left presence-shared in B only.
	if code, rb := testkit.API(t, f.api.Addr, app, "GET", "/channels/presence-shared/users", nil, nil); code != 200 || rb != `{"users":[{"id":"u1"},{"id":"u2"}]}` {
		t.Errorf("A's users after B's termination: %d %s", code, rb)
	}
}

func otherApp(a testkit.App) testkit.App {
	if a.ID == app.ID {
		return tenantB
	}
	return app
}
