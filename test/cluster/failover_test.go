package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/testkit"
)

// seqReceiver records the "seq" events one socket receives on a channel.
type seqReceiver struct {
	mu   sync.Mutex
	got  map[int]int       // seq → times received
	when map[int]time.Time // seq → first arrival
	stop chan struct{}
	done chan struct{}
}

func receive(c *testkit.WSClient, channel string) *seqReceiver {
	r := &seqReceiver{got: map[int]int{}, when: map[int]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			f, ok := c.NextWithin(100 * time.Millisecond)
			if !ok || f.Event != "seq" || f.Channel != channel {
				continue
			}
			var s string
			if json.Unmarshal(f.Data, &s) != nil {
				continue
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				continue
			}
			r.mu.Lock()
			r.got[n]++
			if _, ok := r.when[n]; !ok {
				r.when[n] = time.Now()
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// firstFrom returns when the first event with a sequence number ≥ seq arrived.
func (r *seqReceiver) firstFrom(seq int) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for n, w := range r.when {
		if n >= seq && (first.IsZero() || w.Before(first)) {
			first = w
		}
	}
	return first, !first.IsZero()
}

func (r *seqReceiver) finish() map[int]int {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// seqPublisher triggers "seq" events through an api node every interval and
// remembers which were answered 200.
type seqPublisher struct {
	mu    sync.Mutex
	next  int
	acked []int
	fails int
	stop  chan struct{}
	done  chan struct{}
}

func publishSeq(addr, channel string, every time.Duration) *seqPublisher {
	p := &seqPublisher{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 3 * time.Second}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			p.mu.Lock()
			n := p.next
			p.next++
			p.mu.Unlock()
			body, _ := json.Marshal(map[string]any{"name": "seq", "channel": channel, "data": strconv.Itoa(n)})
			path := "/apps/" + app.ID + "/events"
			q := auth.SignRequest("POST", path, nil, body, app.Key, app.Secret, time.Now())
			resp, err := client.Post("http://"+addr+path+"?"+q.Encode(), "application/json", strings.NewReader(string(body)))
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				resp.Body.Close()
			}
			p.mu.Lock()
			if ok {
				p.acked = append(p.acked, n)
			} else {
				p.fails++
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *seqPublisher) nextSeq() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

func (p *seqPublisher) finish() ([]int, int) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.acked...), p.fails
}

// tryUsers is users() that reports failures instead of failing the test.
func tryUsers(t *testing.T, addr, channel string) (string, bool) {
	t.Helper()
	code, body := testkit.API(t, addr, app, "GET", "/channels/"+channel+"/users", nil, nil)
	if code != http.StatusOK {
		return "", false
	}
	var r struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	if json.Unmarshal([]byte(body), &r) != nil {
		return "", false
	}
	var ids []string
	for _, u := range r.Users {
		ids = append(ids, u.ID)
	}
	sort.Strings(ids)
	return strings.Join(ids, ","), true
}

// channelInfo returns the subscription count and user count the api node
// reports for a channel (-1 when the call failed).
func channelInfo(t *testing.T, addr, channel string) (subs, users int) {
	t.Helper()
	info := "subscription_count"
	if strings.HasPrefix(channel, "presence-") {
		info = "user_count,subscription_count"
	}
	code, body := testkit.API(t, addr, app, "GET", "/channels/"+channel, url.Values{"info": {info}}, nil)
	if code != http.StatusOK {
		return -1, -1
	}
	var r struct {
		SubscriptionCount int `json:"subscription_count"`
		UserCount         int `json:"user_count"`
	}
	if json.Unmarshal([]byte(body), &r) != nil {
		return -1, -1
	}
	return r.SubscriptionCount, r.UserCount
}

// listed returns the api node's channel list with subscription counts.
func listed(t *testing.T, addr string) (map[string]int, bool) {
	t.Helper()
	code, body := testkit.API(t, addr, app, "GET", "/channels", url.Values{"info": {"subscription_count"}}, nil)
	if code != http.StatusOK {
		return nil, false
	}
	var r struct {
		Channels map[string]struct {
			SubscriptionCount int `json:"subscription_count"`
		} `json:"channels"`
	}
	if json.Unmarshal([]byte(body), &r) != nil {
		return nil, false
	}
	out := map[string]int{}
	for name, c := range r.Channels {
		out[name] = c.SubscriptionCount
	}
	return out, true
}

// numsub returns how many connections subscribe channel's topic on shard s.
func numsub(t *testing.T, s *redistest.Server, channel string) int64 {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true, ForceSingleClient: true})
	if err != nil {
		return -1
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names, err := c.Do(ctx, c.B().PubsubChannels().Build()).AsStrSlice()
	if err != nil {
		return -1
	}
	for _, n := range names {
		if strings.HasSuffix(n, ":"+app.ID+":"+channel) {
			r, err := c.Do(ctx, c.B().PubsubNumsub().Channel(n).Build()).ToArray()
			if err != nil || len(r) != 2 {
				return -1
			}
			v, _ := r[1].AsInt64()
			return v
		}
	}
	return 0
}

// Kill one of three Redis shards under two edge nodes and an api node that
// publishes every 20 ms to a channel of that shard: every node moves the
// shard's channels to the next shard on the ring, events reach both edges
// again within 5 s (measured and logged: about a second), presence members
// and subscription counts read the same through the API, and presence still
// works; when the shard is restarted the channels and their state move back
// and the fallback subscriptions are released. No event acknowledged with
// 200 is lost on either edge, through the kill or the return.
func TestClusterShardFailover(t *testing.T) {
	shards := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	var urls []string
	for _, s := range shards {
		urls = append(urls, s.URL())
	}
	ring := redisx.NewRing(urls)
	env := "HERALD_REDIS=" + strings.Join(urls, ",")
	edgeA := testkit.StartHerald(t, heraldBin, config, env, "HERALD_ROLE=edge")
	edgeB := testkit.StartHerald(t, heraldBin, config, env, "HERALD_ROLE=edge")
	api := testkit.StartHerald(t, heraldBin, config, env, "HERALD_ROLE=api")

	homed := func(prefix string) string {
		for n := 0; ; n++ {
			c := prefix + strconv.Itoa(n)
			if ring.Home(redisx.ShardKey(app.ID, c)) == 1 {
				return c
			}
		}
	}
	news, room := homed("fo-news-"), homed("presence-fo-")
	fallback := ring.Order(redisx.ShardKey(app.ID, news), nil)[1]
	t.Logf("channel %s lives on shard 1, falls back to shard %d", news, fallback)

	na := testkit.Dial(t, edgeA.Addr, app.Key)
	nb := testkit.Dial(t, edgeB.Addr, app.Key)
	na.Subscribe(news)
	nb.Subscribe(news)
	pa := testkit.Dial(t, edgeA.Addr, app.Key)
	pb := testkit.Dial(t, edgeB.Addr, app.Key)
	joinPresence(t, pa, room, "u1")
	joinPresence(t, pb, room, "u2")
	pa.Expect("pusher_internal:member_added", room)
	converged := func(what string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var last string
		for {
			ids, ok1 := tryUsers(t, api.Addr, room)
			subs, users := channelInfo(t, api.Addr, news)
			psubs, pusers := channelInfo(t, api.Addr, room)
			list, ok2 := listed(t, api.Addr)
			last = fmt.Sprintf("users %q, %s %d subs, %s %d subs %d users, list %v", ids, news, subs, room, psubs, pusers, list)
			if ok1 && ok2 && ids == "u1,u2" && subs == 2 && users == 0 && psubs == 2 && pusers == 2 &&
				len(list) == 2 && list[news] == 2 && list[room] == 2 {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s: state not converged within %v: %s", what, within, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	converged("before", 5*time.Second)

	ra, rb := receive(na, news), receive(nb, news)
	pub := publishSeq(api.Addr, news, 20*time.Millisecond)
	waitFor(t, 5*time.Second, "first events", func() bool {
		_, okA := ra.firstFrom(0)
		_, okB := rb.firstFrom(0)
		return okA && okB
	})

	shards[1].Kill()
	killed := time.Now()
	seqAtKill := pub.nextSeq()
	waitFor(t, 5*time.Second, "events published after the kill on both edges", func() bool {
		_, okA := ra.firstFrom(seqAtKill)
		_, okB := rb.firstFrom(seqAtKill)
		return okA && okB
	})
	wa, _ := ra.firstFrom(seqAtKill)
	wb, _ := rb.firstFrom(seqAtKill)
	failover := max(wa.Sub(killed), wb.Sub(killed))
	t.Logf("failover: events published through the api node reach edge A %v and edge B %v after SIGKILL of the shard",
		wa.Sub(killed).Round(time.Millisecond), wb.Sub(killed).Round(time.Millisecond))
	if failover > 5*time.Second {
		t.Fatalf("failover took %v, want ≤ 5 s", failover)
	}
	converged("after the kill", 10*time.Second)
	t.Logf("members and counts read the same through the api node %v after the kill", time.Since(killed).Round(time.Millisecond))
	// The presence state now lives on the fallback shard.
	pm := "herald:{" + app.ID + ":0}:pm:" + room
	fbRoom := ring.Order(redisx.ShardKey(app.ID, room), nil)[1]
	if n, err := shards[fbRoom].Do("HLEN", pm); err != nil || n != "2" {
		t.Fatalf("members on fallback shard %d: %q %v", fbRoom, n, err)
	}
	// Presence works during the outage: a third member comes and goes.
	pc := testkit.Dial(t, edgeB.Addr, app.Key)
	joinPresence(t, pc, room, "u3")
	if d := pa.Expect("pusher_internal:member_added", room).DataString(t); !strings.Contains(d, `"u3"`) {
		t.Fatalf("member_added during the outage: %s", d)
	}
	pc.Close()
	if d := nextEvent(t, pa, "pusher_internal:member_removed").DataString(t); !strings.Contains(d, `"u3"`) {
		t.Fatalf("member_removed during the outage: %s", d)
	}

	shards[1].Restart()
	restarted := time.Now()
	// Back on shard 1: its state is re-asserted there, and once the grace
	// period is over no edge listens on the fallback shard any more.
	waitFor(t, 15*time.Second, "members back on the restarted shard", func() bool {
		n, err := shards[1].Do("HLEN", pm)
		return err == nil && n == "2"
	})
	t.Logf("state back on the restarted shard %v after restart", time.Since(restarted).Round(time.Millisecond))
	if got := numsub(t, shards[1], news); got != 2 {
		t.Fatalf("%s subscribed by %d nodes on the restarted shard, want 2", news, got)
	}
	waitFor(t, 15*time.Second, "fallback subscriptions released", func() bool { return numsub(t, shards[fallback], news) == 0 })
	t.Logf("fallback subscriptions released %v after restart", time.Since(restarted).Round(time.Millisecond))
	if n, err := shards[fbRoom].Do("EXISTS", pm); err != nil || n != "0" {
		t.Fatalf("members left on the fallback shard: %q %v", n, err)
	}
	converged("after the return", 5*time.Second)
	seqBack := pub.nextSeq()
	waitFor(t, 5*time.Second, "events after the return", func() bool {
		_, okA := ra.firstFrom(seqBack)
		_, okB := rb.firstFrom(seqBack)
		return okA && okB
	})

	acked, fails := pub.finish()
	last := acked[len(acked)-1]
	waitFor(t, 5*time.Second, "the last acknowledged event", func() bool {
		_, okA := ra.firstFrom(last)
		_, okB := rb.firstFrom(last)
		return okA && okB
	})
	for name, r := range map[string]*seqReceiver{"A": ra, "B": rb} {
		got := r.finish()
		lost, dups := 0, 0
		for _, n := range acked {
			switch got[n] {
			case 0:
				lost++
			case 1:
			default:
				dups++
			}
		}
		t.Logf("edge %s: %d events acknowledged (%d publishes refused while the shard was down), %d lost, %d duplicated",
			name, len(acked), fails, lost, dups)
		if lost != 0 || dups != 0 {
			t.Errorf("edge %s lost %d and duplicated %d of %d acknowledged events", name, lost, dups, len(acked))
		}
	}
	if !strings.Contains(api.Log(), "its channels move to the next shard") || !strings.Contains(edgeA.Log(), "its channels move back") {
		t.Error("no warning logged for the moves")
	}
}
