package cluster

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/session"
	"github.com/heraldrt/herald/internal/testkit"
)

type receipt struct {
	Delivered  int      `json:"delivered"`
	Sockets    []string `json:"sockets"`
	TimedOut   bool     `json:"timed_out"`
	Unanswered []string `json:"unanswered_nodes"`
}

// push sends a direct push through addr and decodes a 200 answer.
func push(t *testing.T, addr, path string, body map[string]any) (int, string, receipt) {
	t.Helper()
	b, _ := json.Marshal(body)
	code, resp := testkit.API(t, addr, app, "POST", path, nil, b)
	var r receipt
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(resp), &r); err != nil {
			t.Fatalf("receipt %q: %v", resp, err)
		}
	}
	return code, resp, r
}

func sorted(ids ...string) []string {
	s := slices.Clone(ids)
	slices.Sort(s)
	return s
}

func expectPushed(t *testing.T, c *testkit.WSClient, event, channel, data string) {
	t.Helper()
	f := nextEvent(t, c, event)
	if f.Channel != channel || f.DataString(t) != data {
		t.Fatalf("socket %s: pushed %s", c.SocketID, f.Raw)
	}
}

// Receipts across nodes: a user signed in on both edges (three devices)
// gets one push on every device and the api node answers with exactly those
// sockets; an offline user gets {"delivered":0}; a socket on another node is
// reached by its id; a device that moves to the other edge is counted where
// it is now, right after its signin succeeded.
func TestClusterPushReceipts(t *testing.T) {
	f := startFleet(t)
	a1 := testkit.Dial(t, f.edgeA.Addr, app.Key)
	b1 := testkit.Dial(t, f.edgeB.Addr, app.Key)
	b2 := testkit.Dial(t, f.edgeB.Addr, app.Key)
	bob := testkit.Dial(t, f.edgeB.Addr, app.Key)
	for _, c := range []*testkit.WSClient{a1, b1, b2} {
		signin(t, c, `{"id":"alice"}`)
	}
	signin(t, bob, `{"id":"bob"}`)
	// Socket ids carry their node's tag: the two edges' differ.
	ta, _ := session.SocketIDTagOf(a1.SocketID)
	tb, _ := session.SocketIDTagOf(b1.SocketID)
	if ta == 0 || tb == 0 || ta == tb {
		t.Fatalf("socket ids %s and %s: tags %d and %d, want two distinct non-zero tags", a1.SocketID, b1.SocketID, ta, tb)
	}

	start := time.Now()
	code, body, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "shipped", "data": `{"order":1}`})
	took := time.Since(start)
	if code != 200 || r.Delivered != 3 || !slices.Equal(r.Sockets, sorted(a1.SocketID, b1.SocketID, b2.SocketID)) || r.TimedOut {
		t.Fatalf("push to alice on two nodes: %d %s", code, body)
	}
	for _, c := range []*testkit.WSClient{a1, b1, b2} {
		expectPushed(t, c, "shipped", "#server-to-user-alice", `{"order":1}`)
	}
	t.Logf("receipt for 3 devices on 2 edge nodes in %v", took.Round(100*time.Microsecond))

	start = time.Now()
	if code, body, _ := push(t, f.api.Addr, "/users/carol/events", map[string]any{"name": "x", "data": "y"}); code != 200 || body != `{"delivered":0}` {
		t.Fatalf("offline user: %d %s", code, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("offline answer took %v", d)
	}

	code, body, r = push(t, f.api.Addr, "/sockets/"+b1.SocketID+"/events", map[string]any{"name": "nudge", "data": "{}"})
	if code != 200 || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{b1.SocketID}) {
		t.Fatalf("socket push across nodes: %d %s", code, body)
	}
	expectPushed(t, b1, "nudge", "", "{}")
	// Unknown sockets: a live node's tag with an id it never gave, and a tag
	// no node holds.
	for _, id := range []string{strconv.FormatUint(tb, 10) + "000000000001.1", "17999999000000000001.1"} {
		if code, body, _ := push(t, f.api.Addr, "/sockets/"+id+"/events", map[string]any{"name": "x", "data": "y"}); code != 404 {
			t.Fatalf("unknown socket %s: %d %s", id, code, body)
		}
	}

	// b2 leaves edge B and signs in again on edge A: the next push, right
	// after signin_success, counts it there.
	b2.Close()
	a2 := testkit.Dial(t, f.edgeA.Addr, app.Key)
	signin(t, a2, `{"id":"alice"}`)
	waitFor(t, 5*time.Second, "b2's signout", func() bool {
		_, _, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "probe", "data": "{}"})
		return !slices.Contains(r.Sockets, b2.SocketID)
	})
	code, body, r = push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "moved", "data": "{}"})
	if code != 200 || r.Delivered != 3 || !slices.Equal(r.Sockets, sorted(a1.SocketID, a2.SocketID, b1.SocketID)) {
		t.Fatalf("after a device moved: %d %s", code, body)
	}
	for _, c := range []*testkit.WSClient{a1, a2, b1} {
		expectPushed(t, c, "moved", "#server-to-user-alice", "{}")
	}
	// A new device on edge B (whose registry entry the api node may have
	// cached) is counted right after its signin.
	b3 := testkit.Dial(t, f.edgeB.Addr, app.Key)
	signin(t, b3, `{"id":"bob"}`)
	code, body, r = push(t, f.api.Addr, "/users/bob/events", map[string]any{"name": "hi", "data": "{}"})
	if code != 200 || r.Delivered != 2 || !slices.Equal(r.Sockets, sorted(bob.SocketID, b3.SocketID)) {
		t.Fatalf("bob's second device: %d %s", code, body)
	}
}

// A killed edge node: until the cluster notices (node_timeout 3 s), a push
// to a user with a device there answers within its timeout, with what the
// live node delivered, timed_out and the silent node named; once the reaper
// removed the dead node's sockets, receipts are exact and fast again, and
// its sockets are unknown (404).
func TestClusterPushNodeDeath(t *testing.T) {
	f := startFleet(t)
	a1 := testkit.Dial(t, f.edgeA.Addr, app.Key)
	b1 := testkit.Dial(t, f.edgeB.Addr, app.Key)
	signin(t, a1, `{"id":"alice"}`)
	signin(t, b1, `{"id":"alice"}`)
	if _, body, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "x", "data": "y"}); r.Delivered != 2 {
		t.Fatalf("before the kill: %s", body)
	}

	f.edgeB.Kill()
	killed := time.Now()
	start := time.Now()
	code, body, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "x", "data": "y", "timeout_ms": 500})
	took := time.Since(start)
	if code != 200 || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{a1.SocketID}) || !r.TimedOut || len(r.Unanswered) != 1 {
		t.Fatalf("push right after the kill: %d %s", code, body)
	}
	if took < 500*time.Millisecond || took > 4*time.Second {
		t.Fatalf("answered after %v, want the 500 ms timeout", took)
	}
	if code, body, r := push(t, f.api.Addr, "/sockets/"+b1.SocketID+"/events", map[string]any{"name": "x", "data": "y", "timeout_ms": 300}); !(code == 200 && r.TimedOut && r.Delivered == 0) && code != 404 {
		t.Fatalf("push to a socket of the dead node: %d %s", code, body)
	}

	waitFor(t, 15*time.Second, "exact receipts after the dead node was reaped", func() bool {
		_, _, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "x", "data": "y", "timeout_ms": 300})
		return r.Delivered == 1 && !r.TimedOut
	})
	t.Logf("receipts exact again %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	waitFor(t, 15*time.Second, "the dead node's socket unknown", func() bool {
		code, _, _ := push(t, f.api.Addr, "/sockets/"+b1.SocketID+"/events", map[string]any{"name": "x", "data": "y", "timeout_ms": 300})
		return code == 404
	})
	t.Logf("dead node's socket 404 %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	start = time.Now()
	if _, body, r := push(t, f.api.Addr, "/users/alice/events", map[string]any{"name": "x", "data": "y"}); r.Delivered != 1 || r.TimedOut || time.Since(start) > 3*time.Second {
		t.Fatalf("after reaping: %s in %v", body, time.Since(start))
	}
	if !strings.Contains(f.edgeA.Log(), "socket_tag=") {
		t.Fatalf("edge A did not log its socket tag")
	}
}

// The same receipts on a Redis Cluster (sharded pub/sub for the node
// topics, the registry in the user's slot, tags on the one cluster client).
func TestClusterPushOnRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	env := []string{"HERALD_REDIS_CLUSTER=" + rc.Seed()}
	edge1 := testkit.StartHerald(t, heraldBin, config, append(env, "HERALD_ROLE=edge")...)
	edge2 := testkit.StartHerald(t, heraldBin, config, append(env, "HERALD_ROLE=edge")...)
	api := testkit.StartHerald(t, heraldBin, config, append(env, "HERALD_ROLE=api")...)
	a := testkit.Dial(t, edge1.Addr, app.Key)
	b := testkit.Dial(t, edge2.Addr, app.Key)
	signin(t, a, `{"id":"alice"}`)
	signin(t, b, `{"id":"alice"}`)
	code, body, r := push(t, api.Addr, "/users/alice/events", map[string]any{"name": "e", "data": "d"})
	if code != 200 || r.Delivered != 2 || !slices.Equal(r.Sockets, sorted(a.SocketID, b.SocketID)) {
		t.Fatalf("user push on Redis Cluster: %d %s", code, body)
	}
	expectPushed(t, a, "e", "#server-to-user-alice", "d")
	expectPushed(t, b, "e", "#server-to-user-alice", "d")
	code, body, r = push(t, api.Addr, "/sockets/"+b.SocketID+"/events", map[string]any{"name": "s", "data": "d"})
	if code != 200 || r.Delivered != 1 {
		t.Fatalf("socket push on Redis Cluster: %d %s", code, body)
	}
	expectPushed(t, b, "s", "", "d")
	if code, body, _ := push(t, api.Addr, "/users/bob/events", map[string]any{"name": "e", "data": "d"}); code != 200 || body != `{"delivered":0}` {
		t.Fatalf("offline user on Redis Cluster: %d %s", code, body)
	}
}
