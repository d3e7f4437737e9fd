package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
	"github.com/heraldrt/herald/internal/testkit"
)

// historyClusterConfig: app-id keeps history on chat-* (1000 events) and
// short-* (5 events).
const historyClusterConfig = `apps:
  - id: app-id
    key: app-key
    secret: app-secret
    history:
      - channels: ["chat-*"]
        max_events: 1000
      - channels: ["short-*"]
        max_events: 5
`

func frameSerial(t *testing.T, f testkit.WSFrame) uint64 {
	t.Helper()
	var v struct {
		Serial *uint64 `json:"serial"`
	}
	if err := json.Unmarshal([]byte(f.Raw), &v); err != nil || v.Serial == nil {
		t.Fatalf("frame without serial: %s", f.Raw)
	}
	return *v.Serial
}

func subscribeFrom(t *testing.T, c *testkit.WSClient, channel string, last uint64) {
	t.Helper()
	c.Send(map[string]any{"event": "pusher:subscribe", "data": map[string]any{"channel": channel, "last_serial": last}})
	c.Expect("pusher_internal:subscription_succeeded", channel)
}

// expectRun reads events msg with data from..to-1 in order, serials strictly
// increasing after prev; it returns the last serial.
func expectRun(t *testing.T, c *testkit.WSClient, channel string, from, to int, prev uint64) uint64 {
	t.Helper()
	for i := from; i < to; i++ {
		f := c.Next()
		if f.Event != "msg" || f.Channel != channel || f.DataString(t) != strconv.Itoa(i) {
			t.Fatalf("expected event %d on %s, got %s (gap or duplicate)", i, channel, f.Raw)
		}
		s := frameSerial(t, f)
		if s <= prev {
			t.Fatalf("event %d: serial %d after %d", i, s, prev)
		}
		prev = s
	}
	return prev
}

// Two Herald processes on two Redis shards: a client of node A sees 5 events
// published through A and disconnects; 100 more are published through A; the
// client reconnects to node B with the last serial it saw while A keeps
// publishing, and gets every event once, in order, from B. On channels of
// both shards. B's history endpoint agrees with what the client saw.
func TestClusterHistoryRecoveryAcrossNodes(t *testing.T) {
	r0, r1 := redistest.Start(t), redistest.Start(t)
	env := "HERALD_REDIS=" + r0.URL() + "," + r1.URL()
	a := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	b := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	f := &fleet{ring: redisx.NewRing([]string{r0.URL(), r1.URL()})}
	for shard := 0; shard < 2; shard++ {
		ch := f.channelOn("chat-x", shard)
		ca := testkit.Dial(t, a.Addr, app.Key)
		ca.Subscribe(ch)
		for i := 0; i < 5; i++ {
			mustTrigger(t, a.Addr, ch, "msg", strconv.Itoa(i))
		}
		last := expectRun(t, ca, ch, 0, 5, 0)
		ca.Close()
		for i := 5; i < 105; i++ {
			mustTrigger(t, a.Addr, ch, "msg", strconv.Itoa(i))
		}
		const total = 140
		var wg sync.WaitGroup
		errs := make(chan string, total)
		wg.Add(1)
		go func() { // live events through A while the client recovers on B
			defer wg.Done()
			for i := 105; i < total; i++ {
				body, _ := json.Marshal(map[string]any{"name": "msg", "channel": ch, "data": strconv.Itoa(i)})
				if code, rb := apiNoFatal(a.Addr, "POST", "/events", body); code != http.StatusOK {
					errs <- fmt.Sprintf("trigger %d: %d %s", i, code, rb)
					return
				}
			}
		}()
		cb := testkit.Dial(t, b.Addr, app.Key)
		subscribeFrom(t, cb, ch, last)
		newest := expectRun(t, cb, ch, 5, total, last)
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
		testkit.ExpectQuiet(t, 200*time.Millisecond, cb)

		code, body := testkit.API(t, b.Addr, app, "GET", "/channels/"+ch+"/history", url.Values{"since": {strconv.FormatUint(last, 10)}}, nil)
		var h struct {
			LastSerial uint64 `json:"last_serial"`
			Complete   bool   `json:"complete"`
			Events     []struct {
				Data string `json:"data"`
			} `json:"events"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &h) != nil || h.LastSerial != newest || !h.Complete || len(h.Events) != total-5 {
			t.Fatalf("history from B: %d %.300s (want last %d, %d events)", code, body, newest, total-5)
		}
		// The stream lives on the channel's shard only, named like its
		// pub/sub channel.
		key := "herald{}:" + strconv.Itoa(len(app.ID)) + ":" + app.ID + ":" + ch
		shards := []*redistest.Server{r0, r1}
		if n, err := shards[shard].Do("XLEN", key); err != nil || n != strconv.Itoa(total) {
			t.Fatalf("XLEN %s on shard %d = %q, %v; want %d", key, shard, n, err, total)
		}
		if n, _ := shards[1-shard].Do("EXISTS", key); n != "0" {
			t.Fatalf("the other shard holds the stream too")
		}
	}
}

// A gap is reported by the other node too: herald:recovery_failed, then live
// events through either node.
func TestClusterHistoryGapAcrossNodes(t *testing.T) {
	r0 := redistest.Start(t)
	env := "HERALD_REDIS=" + r0.URL()
	a := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	b := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	const ch = "short-1"
	ca := testkit.Dial(t, a.Addr, app.Key)
	ca.Subscribe(ch)
	mustTrigger(t, a.Addr, ch, "msg", "0")
	last := expectRun(t, ca, ch, 0, 1, 0)
	ca.Close()
	for i := 1; i < 20; i++ {
		mustTrigger(t, a.Addr, ch, "msg", strconv.Itoa(i))
	}
	cb := testkit.Dial(t, b.Addr, app.Key)
	subscribeFrom(t, cb, ch, last)
	f := cb.Expect("herald:recovery_failed", ch)
	if d := f.DataString(t); !strings.Contains(d, `"reason":"gap"`) || !strings.Contains(d, strconv.FormatUint(last, 10)) {
		t.Fatalf("recovery_failed: %s", f.Raw)
	}
	mustTrigger(t, a.Addr, ch, "msg", "live")
	if f := cb.Expect("msg", ch); f.DataString(t) != "live" {
		t.Fatalf("live after the failure: %s", f.Raw)
	}
}

// On a Redis Cluster the stream shares the slot of the channel's sharded
// pub/sub, and recovery works the same across nodes.
func TestClusterHistoryOnRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	env := "HERALD_REDIS_CLUSTER=" + rc.Seed()
	a := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	b := testkit.StartHerald(t, heraldBin, historyClusterConfig, env)
	for n := 0; n < 3; n++ { // channels on several masters
		ch := "chat-rc-" + strconv.Itoa(n)
		ca := testkit.Dial(t, a.Addr, app.Key)
		ca.Subscribe(ch)
		mustTrigger(t, a.Addr, ch, "msg", "0")
		last := expectRun(t, ca, ch, 0, 1, 0)
		ca.Close()
		for i := 1; i < 30; i++ {
			mustTrigger(t, a.Addr, ch, "msg", strconv.Itoa(i))
		}
		cb := testkit.Dial(t, b.Addr, app.Key)
		subscribeFrom(t, cb, ch, last)
		prev := expectRun(t, cb, ch, 1, 30, last)
		mustTrigger(t, a.Addr, ch, "msg", "30")
		expectRun(t, cb, ch, 30, 31, prev)
	}
}

// apiNoFatal is a signed API request usable from any goroutine: failures
// are in its result.
func apiNoFatal(addr, method, path string, body []byte) (int, string) {
	full := "/apps/" + app.ID + path
	q := auth.SignRequest(method, full, nil, body, app.Key, app.Secret, time.Now())
	req, err := http.NewRequest(method, "http://"+addr+full+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
