// Package cluster runs real Herald processes on real Redis servers: edge and
// api roles, sharded pub/sub, cluster-wide presence and counts, and failures
// (a killed edge node, a stopped Redis shard, Redis Cluster).
package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/testkit"
)

var heraldBin string

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "herald-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	heraldBin = filepath.Join(tmp, "herald")
	wd, _ := os.Getwd()
	if err := testkit.BuildHerald(filepath.Join(wd, "..", ".."), heraldBin, true); err != nil {
		fmt.Fprintln(os.Stderr, "build herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

var app = testkit.App{ID: "app-id", Key: "app-key", Secret: "app-secret"}

// config is every node's YAML: one app with client events, and a short node
// timeout so a killed node is noticed quickly.
const config = `node_timeout: 3
apps:
  - id: counted-id
    key: counted-key
    secret: counted-secret
    subscription_count: true
  - id: app-id
    key: app-key
    secret: app-secret
    client_events: true
`

type fleet struct {
	shards []*redistest.Server
	urls   string
	ring   *redisx.Ring
	edgeA  *testkit.Herald
	edgeB  *testkit.Herald
	api    *testkit.Herald
}

// startFleet starts 2 Redis shards, 2 edge nodes and 1 api node.
func startFleet(t *testing.T) *fleet {
	t.Helper()
	return startFleetWith(t, config)
}

func startFleetWith(t *testing.T, config string) *fleet {
	t.Helper()
	f := &fleet{shards: []*redistest.Server{redistest.Start(t), redistest.Start(t)}}
	var urls []string
	for _, s := range f.shards {
		urls = append(urls, s.URL())
	}
	f.urls = strings.Join(urls, ",")
	f.ring = redisx.NewRing(urls)
	redis := "HERALD_REDIS=" + f.urls
	f.edgeA = testkit.StartHerald(t, heraldBin, config, redis, "HERALD_ROLE=edge")
	f.edgeB = testkit.StartHerald(t, heraldBin, config, redis, "HERALD_ROLE=edge")
	f.api = testkit.StartHerald(t, heraldBin, config, redis, "HERALD_ROLE=api")
	return f
}

// shardOf is the shard index Herald uses for a channel of the app.
func (f *fleet) shardOf(channel string) int {
	return f.ring.Pick(redisx.ShardKey(app.ID, channel))
}

// channelOn returns a channel name with prefix that lives on shard i.
func (f *fleet) channelOn(prefix string, i int) string {
	for n := 0; ; n++ {
		c := prefix + strconv.Itoa(n)
		if f.shardOf(c) == i {
			return c
		}
	}
}

func trigger(t *testing.T, addr, channel, event, data string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": event, "channel": channel, "data": data})
	return testkit.API(t, addr, app, "POST", "/events", nil, body)
}

func mustTrigger(t *testing.T, addr, channel, event, data string) {
	t.Helper()
	if code, body := trigger(t, addr, channel, event, data); code != http.StatusOK {
		t.Fatalf("trigger %s: %d %s", channel, code, body)
	}
}

func joinPresence(t *testing.T, c *testkit.WSClient, channel, userID string) testkit.WSFrame {
	t.Helper()
	cd := `{"user_id":"` + userID + `","user_info":{"name":"` + userID + `"}}`
	c.SendSubscribe(channel, testkit.ChannelAuth(app, c.SocketID, channel, cd), cd)
	return c.Expect("pusher_internal:subscription_succeeded", channel)
}

func users(t *testing.T, addr, channel string) []string {
	t.Helper()
	code, body := testkit.API(t, addr, app, "GET", "/channels/"+channel+"/users", nil, nil)
	if code != http.StatusOK {
		t.Fatalf("users of %s: %d %s", channel, code, body)
	}
	var r struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range r.Users {
		ids = append(ids, u.ID)
	}
	sort.Strings(ids)
	return ids
}

// Events published through the api node reach clients on both edges; client
// events cross edges; presence and channel info agree from every node; the
// channels really are spread over both shards.
func TestClusterFanOutPresenceAndSharding(t *testing.T) {
	f := startFleet(t)
	a := testkit.Dial(t, f.edgeA.Addr, app.Key)
	b := testkit.Dial(t, f.edgeB.Addr, app.Key)

	// API → both edges, on channels of both shards.
	for shard := 0; shard < 2; shard++ {
		ch := f.channelOn("news-", shard)
		a.Subscribe(ch)
		b.Subscribe(ch)
		mustTrigger(t, f.api.Addr, ch, "headline", `{"shard":`+strconv.Itoa(shard)+`}`)
		a.ExpectEvent("headline", ch, `{"shard":`+strconv.Itoa(shard)+`}`)
		b.ExpectEvent("headline", ch, `{"shard":`+strconv.Itoa(shard)+`}`)
	}
	for i, s := range f.shards {
		chans, err := s.Do("PUBSUB", "CHANNELS")
		if err != nil || chans == "0" {
			t.Fatalf("shard %d has no subscribed channels (%q, %v)", i, chans, err)
		}
	}

	// Client events from edge B reach edge A, never echoed.
	priv := "private-chat"
	for _, c := range []*testkit.WSClient{a, b} {
		c.SendSubscribe(priv, testkit.ChannelAuth(app, c.SocketID, priv, ""), "")
		c.Expect("pusher_internal:subscription_succeeded", priv)
	}
	b.Send(map[string]any{"event": "client-typing", "channel": priv, "data": map[string]any{"who": "b"}})
	got := a.Expect("client-typing", priv)
	if string(got.Data) != `{"who":"b"}` && got.DataString(t) != `{"who":"b"}` {
		t.Fatalf("client event data: %s", got.Raw)
	}
	testkit.ExpectQuiet(t, 300*time.Millisecond, b)

	// Presence across edges: each sees the other; every node agrees.
	room := "presence-room"
	joinPresence(t, a, room, "u1")
	joinPresence(t, b, room, "u2")
	added := a.Expect("pusher_internal:member_added", room)
	if !strings.Contains(added.DataString(t), `"user_id":"u2"`) {
		t.Fatalf("member_added: %s", added.Raw)
	}
	for _, addr := range []string{f.api.Addr} {
		if ids := users(t, addr, room); strings.Join(ids, ",") != "u1,u2" {
			t.Fatalf("users from %s: %v", addr, ids)
		}
		code, body := testkit.API(t, addr, app, "GET", "/channels/"+room, url.Values{"info": {"user_count"}}, nil)
		if code != 200 || !strings.Contains(body, `"user_count":2`) {
			t.Fatalf("channel info from %s: %d %s", addr, code, body)
		}
	}
}

// SIGKILL an edge node: within 10 s the others report its presence members
// gone (member_removed to the remaining subscribers, the users API, and the
// member_removed webhook, once for the cluster).
func TestClusterKilledEdgeNode(t *testing.T) {
	sink := testkit.NewWebhookReceiver(t, app) // closed after the heralds stop
	f := startFleetWith(t, config+"    webhooks:\n      - url: "+sink.URL()+"\n        event_types: [member_added, member_removed]\n")
	a := testkit.Dial(t, f.edgeA.Addr, app.Key)
	b := testkit.Dial(t, f.edgeB.Addr, app.Key)
	room := "presence-kill"
	start := time.Now()
	joinPresence(t, a, room, "u1")
	joinPresence(t, b, room, "u2")
	a.Expect("pusher_internal:member_added", room)
	// Webhooks are queued in memory: wait until B's member_added went out
	// before killing it (a crash loses what is still queued).
	for sink.Count("member_added", room, "u2") == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("no member_added webhook for u2")
		}
		time.Sleep(50 * time.Millisecond)
	}

	killed := time.Now()
	f.edgeB.Kill()
	// member_removed arrives within the node timeout (4 s) plus the reaper's
	// interval; allow up to 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no member_removed for u2 within 10 s of SIGKILL")
		}
		fr, ok := a.NextWithin(time.Until(deadline))
		if ok && fr.Event == "pusher_internal:member_removed" && strings.Contains(fr.DataString(t), `"u2"`) {
			break
		}
	}
	t.Logf("member_removed %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	if ids := users(t, f.api.Addr, room); strings.Join(ids, ",") != "u1" {
		t.Fatalf("users after kill: %v", ids)
	}
	// The webhook is held 3 s (a re-join would cancel it), then sent once.
	for sink.Count("member_removed", room, "u2") == 0 {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("no member_removed webhook within 10 s of SIGKILL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("member_removed webhook %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	if n := sink.Count("member_removed", room, "u2"); n != 1 {
		t.Fatalf("member_removed webhook sent %d times", n)
	}
	if n := sink.Count("member_added", room, "u2"); n != 1 {
		t.Fatalf("member_added webhook sent %d times", n)
	}
}

// Stop one Redis shard: the other shard's channels keep working, publishes
// to the dead shard fail fast with a 5xx, and after the shard restarts the
// subscriptions are restored within 2 s without restarting Herald.
func TestClusterRedisShardDown(t *testing.T) {
	f := startFleet(t)
	a := testkit.Dial(t, f.edgeA.Addr, app.Key)
	live, dead := f.channelOn("live-", 0), f.channelOn("dead-", 1)
	a.Subscribe(live)
	a.Subscribe(dead)
	mustTrigger(t, f.api.Addr, dead, "ev", "before")
	a.ExpectEvent("ev", dead, "before")

	f.shards[1].Kill()
	start := time.Now()
	code, body := trigger(t, f.api.Addr, dead, "ev", "lost")
	if code < 500 || time.Since(start) > 3*time.Second {
		t.Fatalf("publish to the dead shard: %d %s after %v; want a 5xx within 3 s", code, body, time.Since(start))
	}
	mustTrigger(t, f.api.Addr, live, "ev", "still")
	a.ExpectEvent("ev", live, "still")

	f.shards[1].Restart()
	restarted := time.Now()
	for {
		code, _ := trigger(t, f.api.Addr, dead, "ev", "after")
		if code == http.StatusOK {
			fr, ok := a.NextWithin(200 * time.Millisecond)
			if ok && fr.Event == "ev" && fr.Channel == dead {
				if fr.DataString(t) != "after" {
					t.Fatalf("after restart: %s", fr.Raw)
				}
				break
			}
		}
		if time.Since(restarted) > 2*time.Second {
			t.Fatalf("subscription on the restarted shard not restored within 2 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("restored %v after the shard restarted", time.Since(restarted).Round(10*time.Millisecond))
}

// The same fan-out on a 3-master Redis Cluster (sharded pub/sub).
func TestClusterOnRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	env := []string{"HERALD_REDIS_CLUSTER=" + rc.Seed()}
	edge := testkit.StartHerald(t, heraldBin, config, append(env, "HERALD_ROLE=edge")...)
	api := testkit.StartHerald(t, heraldBin, config, append(env, "HERALD_ROLE=api")...)
	c := testkit.Dial(t, edge.Addr, app.Key)
	for i := 0; i < 6; i++ {
		ch := "rc-" + strconv.Itoa(i)
		c.Subscribe(ch)
		mustTrigger(t, api.Addr, ch, "ev", strconv.Itoa(i))
		c.ExpectEvent("ev", ch, strconv.Itoa(i))
	}
	room := "presence-rc"
	joinPresence(t, c, room, "u1")
	if ids := users(t, api.Addr, room); strings.Join(ids, ",") != "u1" {
		t.Fatalf("users on Redis Cluster: %v", ids)
	}
}

// Two api nodes share an app's request rate: each allows its half.
func TestClusterSharedAPIRate(t *testing.T) {
	shard := redistest.Start(t)
	cfg := strings.Replace(config, "    client_events: true\n", "    client_events: true\n    api_requests_per_second: 10\n", 1)
	env := []string{"HERALD_REDIS=" + shard.URL(), "HERALD_ROLE=api"}
	api1 := testkit.StartHerald(t, heraldBin, cfg, env...)
	testkit.StartHerald(t, heraldBin, cfg, env...)
	// Wait until api1 counts both nodes (refreshed every 2 s): its bucket
	// then holds 5 tokens; requests already sent used some.
	deadline := time.Now().Add(6 * time.Second)
	for {
		time.Sleep(2500 * time.Millisecond) // refill and let the peer count refresh
		ok := 0
		for i := 0; i < 8; i++ {
			if code, _ := testkit.API(t, api1.Addr, app, "GET", "/channels", nil, nil); code == http.StatusOK {
				ok++
			} else if code != http.StatusTooManyRequests {
				t.Fatalf("status %d", code)
			}
		}
		if ok == 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("api node allowed %d of 8 requests in a burst; want 5 (half of 10)", ok)
		}
	}
}

func signin(t *testing.T, c *testkit.WSClient, userData string) {
	t.Helper()
	c.Send(map[string]any{"event": "pusher:signin", "data": map[string]any{
		"auth": testkit.UserAuth(app, c.SocketID, userData), "user_data": userData}})
	c.Expect("pusher:signin_success", "")
}

// nextEvent skips frames until event arrives (or fails after 5 s).
func nextEvent(t *testing.T, c *testkit.WSClient, event string) testkit.WSFrame {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, ok := c.NextWithin(time.Until(deadline))
		if !ok {
			t.Fatalf("socket %s: no %s within 5 s", c.SocketID, event)
		}
		if f.Event == event {
			return f
		}
	}
}

// Users, watchlists, termination, cache channels and subscription counts
// work whichever node the client or the API call lands on.
func TestClusterUsersCacheAndCounts(t *testing.T) {
	f := startFleet(t)
	watcher := testkit.Dial(t, f.edgeA.Addr, app.Key)
	signin(t, watcher, `{"id":"w1","watchlist":["u9"]}`)
	if d := nextEvent(t, watcher, "pusher_internal:watchlist_events").DataString(t); !strings.Contains(d, `"offline"`) {
		t.Fatalf("initial watchlist status: %s", d)
	}

	user := testkit.Dial(t, f.edgeB.Addr, app.Key)
	signin(t, user, `{"id":"u9"}`)
	user.SendSubscribe("#server-to-user-u9", "", "") // as pusher-js does after signin
	user.Expect("pusher_internal:subscription_succeeded", "#server-to-user-u9")
	if d := nextEvent(t, watcher, "pusher_internal:watchlist_events").DataString(t); !strings.Contains(d, `"online"`) {
		t.Fatalf("watchlist online: %s", d)
	}

	// Send to user through the api node.
	mustTrigger(t, f.api.Addr, "#server-to-user-u9", "hello", "hi u9")
	user.ExpectEvent("hello", "#server-to-user-u9", "hi u9")

	// Terminate through the api node: the user's socket on edge B closes,
	// and the watcher on edge A hears it went offline.
	if code, body := testkit.API(t, f.api.Addr, app, "POST", "/users/u9/terminate_connections", nil, []byte("{}")); code != http.StatusOK {
		t.Fatalf("terminate: %d %s", code, body)
	}
	user.ExpectError(4009)
	user.ExpectClose(4009)
	if d := nextEvent(t, watcher, "pusher_internal:watchlist_events").DataString(t); !strings.Contains(d, `"offline"`) {
		t.Fatalf("watchlist offline after terminate: %s", d)
	}

	// Cache channel: published through the api node, replayed on edge B.
	mustTrigger(t, f.api.Addr, "cache-prices", "price", "42")
	late := testkit.Dial(t, f.edgeB.Addr, app.Key)
	late.Subscribe("cache-prices")
	late.ExpectEvent("price", "cache-prices", "42")

	// Subscription count across edges (the counted app).
	counted := testkit.App{ID: "counted-id", Key: "counted-key", Secret: "counted-secret"}
	ca := testkit.Dial(t, f.edgeA.Addr, counted.Key)
	cb := testkit.Dial(t, f.edgeB.Addr, counted.Key)
	ca.Subscribe("room")
	if d := ca.Expect("pusher_internal:subscription_count", "room").DataString(t); d != `{"subscription_count":1}` {
		t.Fatalf("count on A: %s", d)
	}
	cb.Subscribe("room")
	for _, c := range []*testkit.WSClient{ca, cb} {
		if d := c.Expect("pusher_internal:subscription_count", "room").DataString(t); d != `{"subscription_count":2}` {
			t.Fatalf("count after B joined: %s", d)
		}
	}
}

// A channel vacated on edge A and re-occupied through edge B within the 3 s
// hold sends no channel_vacated; once it really empties, one is sent.
func TestClusterWebhookHoldAcrossNodes(t *testing.T) {
	sink := testkit.NewWebhookReceiver(t, app)
	f := startFleetWith(t, config+"    webhooks:\n      - url: "+sink.URL()+"\n        event_types: [channel_occupied, channel_vacated]\n")
	a := testkit.Dial(t, f.edgeA.Addr, app.Key)
	b := testkit.Dial(t, f.edgeB.Addr, app.Key)
	a.Subscribe("flap")
	waitFor(t, 5*time.Second, "channel_occupied webhook", func() bool { return sink.Count("channel_occupied", "flap", "") == 1 })
	a.Unsubscribe("flap")
	a.Ping()
	b.Subscribe("flap")
	time.Sleep(4 * time.Second) // past the hold
	if n := sink.Count("channel_vacated", "flap", ""); n != 0 {
		t.Fatalf("channel_vacated sent %d times although B re-occupied the channel within the hold", n)
	}
	b.Unsubscribe("flap")
	waitFor(t, 6*time.Second, "channel_vacated webhook", func() bool { return sink.Count("channel_vacated", "flap", "") == 1 })
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
