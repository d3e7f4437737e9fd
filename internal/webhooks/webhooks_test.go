package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
)

// hang returns a status function that blocks every request until release is
// closed or the test ends, then answers 200.
func hang(t *testing.T) (status func(int, *http.Request) int, arrived chan int, release chan struct{}) {
	arrived = make(chan int, 100)
	release = make(chan struct{})
	over := make(chan struct{})
	t.Cleanup(func() { close(over) }) // runs before the receiver's Close
	return func(n int, r *http.Request) int {
		arrived <- n
		select {
		case <-release:
			return http.StatusOK
		case <-over:
			return 0
		case <-r.Context().Done():
			return 0
		}
	}, arrived, release
}

func TestBodyHeadersAndSignature(t *testing.T) {
	rc := newReceiver(t, nil)
	a := testApp("a", rc.url())
	a.Webhooks[0].Headers = map[string]string{"X-Custom": "v1", "authorization": "Bearer tok"}
	cfg := testConfig()
	cfg.Delay = -1 // no hold: every event goes out at once, in call order
	d := start(t, cfg, a)

	before := time.Now().UnixMilli()
	d.ChannelOccupied("a", "presence-room")
	d.MemberAdded("a", "presence-room", "42")
	d.ClientEvent("a", "presence-room", "client-typing", `{"on":true,"q":"\"<&>\" é"}`, "123.456", "42")
	d.ClientEvent("a", "private-chat", "client-x", "plain", "1.2", "")
	d.CacheMiss("a", "cache-prices")
	d.SubscriptionCount("a", "my-channel", 12)
	d.MemberRemoved("a", "presence-room", "42")
	d.ChannelVacated("a", "presence-room")
	d.ChannelOccupied("nope", "x") // an app without webhooks: ignored

	want := []string{
		`{"name":"channel_occupied","channel":"presence-room"}`,
		`{"name":"member_added","channel":"presence-room","user_id":"42"}`,
		`{"name":"client_event","channel":"presence-room","event":"client-typing","data":"{\"on\":true,\"q\":\"\\\"<&>\\\" é\"}","socket_id":"123.456","user_id":"42"}`,
		`{"name":"client_event","channel":"private-chat","event":"client-x","data":"plain","socket_id":"1.2"}`,
		`{"name":"cache_miss","channel":"cache-prices"}`,
		`{"name":"subscription_count","channel":"my-channel","subscription_count":12}`,
		`{"name":"member_removed","channel":"presence-room","user_id":"42"}`,
		`{"name":"channel_vacated","channel":"presence-room"}`,
	}
	for i, w := range want {
		r := rc.next()
		after := time.Now().UnixMilli()
		if got := r.header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
			t.Errorf("Content-Type = %q, want exactly application/json", got)
		}
		if got := r.header.Values("X-Pusher-Key"); len(got) != 1 || got[0] != "a-key" {
			t.Errorf("X-Pusher-Key = %q", got)
		}
		if got := r.header.Get("X-Pusher-Signature"); got != sign("a-secret", r.body) {
			t.Errorf("X-Pusher-Signature %q is not HMAC-SHA256(secret, body) of %s", got, r.body)
		}
		if r.header.Get("X-Custom") != "v1" || r.header.Get("Authorization") != "Bearer tok" {
			t.Errorf("custom headers missing: %v", r.header)
		}
		p := r.decode(t)
		if p.TimeMs < before || p.TimeMs > after {
			t.Errorf("time_ms %d not within [%d, %d]", p.TimeMs, before, after)
		}
		exact := fmt.Sprintf(`{"time_ms":%d,"events":[%s]}`, p.TimeMs, w)
		if string(r.body) != exact {
			t.Errorf("event %d body\n got %s\nwant %s", i, r.body, exact)
		}
	}
	// The client event data survives as a string holding the original JSON.
	eventually(t, "Sent to count every event", func() bool { return d.Stats("").Sent == uint64(len(want)) })
	if s := d.Stats(""); s.Queued != 0 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestClientEventDataDecodes(t *testing.T) {
	rc := newReceiver(t, nil)
	d := start(t, testConfig(), testApp("a", rc.url()))
	data := `{"text":"line\nbreak \u2028 \\ \"q\"","n":[1,2]}`
	d.ClientEvent("a", "private-c", "client-msg", data, "1.1", "")
	ev := rc.next().decode(t).Events[0]
	if ev["data"] != data {
		t.Errorf("data = %#v, want the string %q", ev["data"], data)
	}
	if _, ok := ev["user_id"]; ok {
		t.Errorf("user_id on a private channel's client_event: %v", ev)
	}
}

func TestSubscriptionCountIsInteger(t *testing.T) {
	rc := newReceiver(t, nil)
	d := start(t, testConfig(), testApp("a", rc.url()))
	d.SubscriptionCount("a", "c", 150)
	ev := rc.next().decode(t).Events[0]
	if n, ok := ev["subscription_count"].(json.Number); !ok || n.String() != "150" {
		t.Errorf("subscription_count = %#v, want the number 150", ev["subscription_count"])
	}
}

func TestOrderPerApp(t *testing.T) {
	rc := newReceiver(t, nil)
	d := start(t, testConfig(), testApp("a", rc.url()))
	const n = 300
	for i := range n {
		d.ClientEvent("a", "private-c", "client-e", fmt.Sprint(i), "1.1", "")
	}
	for i := range n {
		if got := rc.next().decode(t).Events[0]["data"]; got != fmt.Sprint(i) {
			t.Fatalf("request %d carries event %v: out of order", i, got)
		}
	}
}

func TestHeldEventsAreSentAfterTheDelay(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig()
	d := start(t, cfg, testApp("a", rc.url()))
	d.ChannelOccupied("a", "presence-r")
	d.MemberAdded("a", "presence-r", "u1")
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"channel_occupied:presence-r"}) {
		t.Fatalf("first webhook = %v", got)
	}
	rc.next()
	left := time.Now()
	d.MemberRemoved("a", "presence-r", "u1")
	d.ChannelVacated("a", "presence-r")
	if s := d.Stats("a"); s.Held != 2 {
		t.Fatalf("held = %d, want 2", s.Held)
	}
	r1, r2 := rc.next(), rc.next()
	if since := time.Since(left); since < cfg.Delay {
		t.Errorf("held events sent after %v, want ≥ %v", since, cfg.Delay)
	}
	if got := append(r1.names(t), r2.names(t)...); !reflect.DeepEqual(got, []string{"member_removed:presence-r", "channel_vacated:presence-r"}) {
		t.Errorf("held events = %v, want member_removed then channel_vacated", got)
	}
	// time_ms is when the event was queued, after the hold.
	if ms := r1.decode(t).TimeMs; ms < left.Add(cfg.Delay).UnixMilli() {
		t.Errorf("time_ms %d is before the hold ended (%d)", ms, left.Add(cfg.Delay).UnixMilli())
	}
}

func TestRejoinWithinDelayCancelsBoth(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig()
	cfg.Delay = time.Minute // nothing can be released by time during the test
	d := start(t, cfg, testApp("a", rc.url()))
	d.ChannelOccupied("a", "presence-r")
	d.MemberAdded("a", "presence-r", "u1")
	d.MemberAdded("a", "presence-r", "u2")
	for range 3 {
		rc.next()
	}
	// u1 leaves and comes back, u2 leaves for good; the channel empties and
	// fills again.
	d.MemberRemoved("a", "presence-r", "u1")
	d.MemberRemoved("a", "presence-r", "u2")
	d.ChannelVacated("a", "presence-r")
	d.ChannelOccupied("a", "presence-r")
	d.MemberAdded("a", "presence-r", "u1")
	if s := d.Stats("a"); s.Held != 1 || s.Cancelled != 2 {
		t.Fatalf("stats = %+v, want u2's removal held and two cancellations", s)
	}
	// A vacated channel that stays empty is unaffected by another's return.
	d.ChannelVacated("a", "other")
	d.ChannelOccupied("a", "third")
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"channel_occupied:third"}) {
		t.Fatalf("next webhook = %v, want only channel_occupied:third (FIFO proves nothing else was queued)", got)
	}
	rc.none()
	// Close releases what is still held, in order.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 2 {
		got = append(got, rc.next().names(t)...)
	}
	if want := []string{"member_removed:presence-r", "channel_vacated:other"}; !reflect.DeepEqual(got, want) {
		t.Errorf("flushed at Close = %v, want %v", got, want)
	}
	d.ChannelOccupied("a", "after-close") // ignored, must not panic
	rc.none()
}

func TestManyFlapsStayBounded(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig()
	cfg.Delay = time.Minute
	cfg.QueueSize = 100
	d := start(t, cfg, testApp("a", rc.url()))
	for i := range 10_000 { // far more flaps than the hold list may keep
		ch := fmt.Sprint("c", i%7)
		d.ChannelVacated("a", ch)
		d.ChannelOccupied("a", ch)
	}
	s := d.Stats("a")
	if s.Cancelled != 10_000 || s.Dropped != 0 || s.Held != 0 {
		t.Fatalf("stats = %+v", s)
	}
	a := d.apps["a"]
	a.mu.Lock()
	n := len(a.order)
	a.mu.Unlock()
	if n > 2*64+2 {
		t.Errorf("hold list keeps %d cancelled entries; want it compacted", n)
	}
}

func TestRetriesUntilSuccess(t *testing.T) {
	var fails atomic.Int64
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			fails.Add(1)
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	d := start(t, testConfig(), testApp("a", rc.url()))
	d.ChannelOccupied("a", "c")
	r := rc.next()
	if r.n != 3 || fails.Load() != 2 {
		t.Fatalf("delivered on attempt %d after %d failures, want 3 and 2", r.n, fails.Load())
	}
	if got := r.header.Get("X-Pusher-Signature"); got != sign("a-secret", r.body) {
		t.Error("retried request is not signed over its body")
	}
	d.CacheMiss("a", "sentinel")
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"cache_miss:sentinel"}) {
		t.Fatalf("after the retried event got %v: the event was delivered twice?", got)
	}
	eventually(t, "Sent to count both events", func() bool { return d.Stats("a").Sent == 2 })
	if s := d.Stats("a"); s.Retries != 2 || s.Failed != 0 {
		t.Errorf("stats = %+v, want retries 2", s)
	}
}

func TestRetryIsOrderedAndBackedOff(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if n <= 4 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	cfg := testConfig()
	cfg.RetryMin, cfg.RetryMax = 40*time.Millisecond, 80*time.Millisecond
	d := start(t, cfg, testApp("a", rc.url()))
	d.CacheMiss("a", "first")
	d.CacheMiss("a", "second")
	if got := append(rc.next().names(t), rc.next().names(t)...); !reflect.DeepEqual(got, []string{"cache_miss:first", "cache_miss:second"}) {
		t.Fatalf("order after retries = %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	// Waits: [20,40], [40,80], [40,80], [40,80] ms.
	mins := []time.Duration{20, 40, 40, 40}
	for i, m := range mins {
		if gap := times[i+1].Sub(times[i]); gap < m*time.Millisecond {
			t.Errorf("retry %d after %v, want ≥ %v", i+1, gap, m*time.Millisecond)
		}
	}
}

func TestGiveUpAfterRetryFor(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(int, *http.Request) int {
		if down.Load() {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	cfg := testConfig()
	cfg.RetryFor = 150 * time.Millisecond
	d := start(t, cfg, testApp("a", rc.url()))
	d.CacheMiss("a", "lost")
	eventually(t, "the event to be given up", func() bool { return d.Stats("a").Failed == 1 })
	down.Store(false)
	d.CacheMiss("a", "next")
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"cache_miss:next"}) {
		t.Fatalf("got %v", got)
	}
	if s := d.Stats("a"); s.Retries < 2 {
		t.Errorf("retries = %d, want several within RetryFor", s.Retries)
	}
}

func TestRedirectIsAFailure(t *testing.T) {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n == 1 {
			return http.StatusFound
		}
		return http.StatusOK
	})
	d := start(t, testConfig(), testApp("a", rc.url()))
	d.CacheMiss("a", "c")
	if r := rc.next(); r.n != 2 {
		t.Fatalf("delivered on request %d, want 2 (the 302 retried, not followed)", r.n)
	}
}

func TestDeadReceiverDoesNotDelayOtherApps(t *testing.T) {
	status, arrived, _ := hang(t)
	dead := newReceiver(t, status)
	refused := newReceiver(t, nil)
	refused.srv.Close() // connection refused
	live := newReceiver(t, nil)
	cfg := testConfig()
	cfg.RequestTimeout = DefaultRequestTimeout
	// App "a" has a hanging receiver; "b" a refusing one and, as its second
	// webhook, a live one; "c" a live one.
	d := start(t, cfg, testApp("a", dead.url()), testApp("b", refused.url(), live.url()), testApp("c", live.url()))
	d.CacheMiss("a", "a0")
	<-arrived // a's worker is now stuck for RequestTimeout
	for i := range 200 {
		d.CacheMiss("a", fmt.Sprint("a", i+1))
		d.CacheMiss("b", fmt.Sprint("b", i))
		d.CacheMiss("c", fmt.Sprint("c", i))
	}
	begin := time.Now()
	got := map[string]int{}
	for range 400 {
		r := live.next()
		got[r.header.Get("X-Pusher-Key")]++
	}
	if el := time.Since(begin); el > 3*time.Second { // well within a's 4 s request timeout
		t.Errorf("live receivers took %v for 400 webhooks while another app's receiver hangs", el)
	}
	if got["b-key"] != 200 || got["c-key"] != 200 {
		t.Errorf("live webhooks per app = %v", got)
	}
	if s := d.Stats("a"); s.Queued != 200 || s.Sent != 0 {
		t.Errorf("app a stats = %+v, want 200 queued behind the hanging request", s)
	}
}

func TestQueueBoundAndDropCounter(t *testing.T) {
	status, arrived, release := hang(t)
	r := newReceiver(t, status)
	cfg := testConfig()
	cfg.QueueSize = 5
	d := start(t, cfg, testApp("a", r.url()))
	d.CacheMiss("a", "c0")
	<-arrived // c0 is in flight, the queue is empty
	begin := time.Now()
	for i := 1; i <= 8; i++ {
		d.CacheMiss("a", fmt.Sprint("c", i))
	}
	if el := time.Since(begin); el > time.Second {
		t.Errorf("Observer calls took %v with a full queue: they must not block", el)
	}
	if s := d.Stats("a"); s.Dropped != 3 || s.Queued != 5 {
		t.Fatalf("stats = %+v, want 3 dropped (newest), 5 queued", s)
	}
	close(release)
	for i := 0; i <= 5; i++ {
		if got := r.next().names(t); !reflect.DeepEqual(got, []string{fmt.Sprint("cache_miss:c", i)}) {
			t.Fatalf("webhook %d = %v", i, got)
		}
	}
	d.CacheMiss("a", "sentinel")
	if got := r.next().names(t); !reflect.DeepEqual(got, []string{"cache_miss:sentinel"}) {
		t.Fatalf("got %v: a dropped event was sent", got)
	}
}

func TestEventTypesFilterAndSignFilteredBody(t *testing.T) {
	only := newReceiver(t, nil)
	all := newReceiver(t, nil)
	a := testApp("a", only.url(), all.url())
	a.Webhooks[0].EventTypes = []string{apps.WebhookChannelVacated, apps.WebhookClientEvent}
	a.WebhookBatching.Duration = 100 * time.Millisecond
	cfg := testConfig()
	cfg.Delay = -1
	d := start(t, cfg, a)
	d.ChannelOccupied("a", "private-c")
	d.ClientEvent("a", "private-c", "client-a", "1", "1.1", "")
	d.SubscriptionCount("a", "private-c", 1)
	d.CacheMiss("a", "cache-x")
	d.ClientEvent("a", "private-c", "client-b", "2", "1.1", "")
	d.ChannelVacated("a", "private-c")

	r := only.next()
	if got, want := r.names(t), []string{"client_event:private-c", "client_event:private-c", "channel_vacated:private-c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("filtered webhook = %v, want %v", got, want)
	}
	if r.header.Get("X-Pusher-Signature") != sign("a-secret", r.body) {
		t.Fatal("filtered webhook is not signed over the filtered body it carries")
	}
	r = all.next()
	if got := r.names(t); len(got) != 6 || r.header.Get("X-Pusher-Signature") != sign("a-secret", r.body) {
		t.Fatalf("unfiltered webhook = %v", got)
	}
	only.none()
}

func TestBatching(t *testing.T) {
	rc := newReceiver(t, nil)
	a := testApp("a", rc.url())
	a.WebhookBatching.Duration = 200 * time.Millisecond
	d := start(t, testConfig(), a)
	first := time.Now().UnixMilli()
	for i := range 5 {
		d.CacheMiss("a", fmt.Sprint("c", i))
	}
	r := rc.next()
	p := r.decode(t)
	if len(p.Events) != 5 {
		t.Fatalf("batch carries %d events, want 5: %s", len(p.Events), r.body)
	}
	for i, e := range p.Events {
		if e["channel"] != fmt.Sprint("c", i) {
			t.Errorf("batch out of order: %s", r.body)
		}
	}
	if p.TimeMs < first || p.TimeMs >= first+200 { // before the window closed
		t.Errorf("time_ms %d, want when the first event was queued (%d)", p.TimeMs, first)
	}
	eventually(t, "Sent to count the batch's 5 events", func() bool { return d.Stats("a").Sent == 5 })
}

func TestBatchingRespectsMaxBatch(t *testing.T) {
	rc := newReceiver(t, nil)
	a := testApp("a", rc.url())
	a.WebhookBatching.Duration = time.Minute
	cfg := testConfig()
	cfg.MaxBatch = 3
	d := start(t, cfg, a)
	for i := range 7 {
		d.CacheMiss("a", fmt.Sprint("c", i))
	}
	for _, n := range []int{3, 3} {
		if got := len(rc.next().decode(t).Events); got != n {
			t.Fatalf("batch of %d events, want %d", got, n)
		}
	}
	// The 7th waits for its window; Close sends it at once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"cache_miss:c6"}) {
		t.Fatalf("at Close got %v", got)
	}
}

func TestCloseAbandonsWithinDeadline(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusInternalServerError })
	cfg := testConfig()
	cfg.RetryFor = time.Hour
	d := New(cfg, []*apps.App{testApp("a", rc.url())}, nil)
	for i := range 10 {
		d.CacheMiss("a", fmt.Sprint(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := d.Close(ctx)
	if el := time.Since(begin); el > time.Second {
		t.Errorf("Close took %v with a 200ms deadline", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "10 events abandoned") {
		t.Errorf("Close = %v, want 10 events abandoned and DeadlineExceeded", err)
	}
	if s := d.Stats(""); s.Failed != 10 || s.Queued != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestObserverNeverBlocks(t *testing.T) {
	status, _, _ := hang(t)
	rc := newReceiver(t, status)
	cfg := testConfig()
	cfg.QueueSize = 10
	d := start(t, cfg, testApp("a", rc.url()))
	begin := time.Now()
	for i := range 50_000 {
		d.ClientEvent("a", "private-c", "client-e", "x", "1.1", "")
		d.ChannelVacated("a", fmt.Sprint("c", i))
	}
	if el := time.Since(begin); el > 10*time.Second {
		t.Errorf("100,000 Observer calls took %v against a hanging receiver", el)
	}
	if s := d.Stats("a"); s.Dropped == 0 || s.Held > cfg.QueueSize {
		t.Errorf("stats = %+v, want drops and the hold list bounded by %d", s, cfg.QueueSize)
	}
}

// ours counts the Dispatcher's goroutines (workers and clocks) in the process.
func ours() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	s := string(buf)
	return strings.Count(s, "webhooks.(*target).run(") + strings.Count(s, "webhooks.(*app).clock(")
}

func TestCloseStopsEveryGoroutine(t *testing.T) {
	rc := newReceiver(t, nil)
	baseline := ours()
	list := []*apps.App{testApp("a", rc.url(), rc.url()), testApp("b", rc.url()), {ID: "c", Key: "c", Secret: "c"}}
	d := New(testConfig(), list, nil)
	eventually(t, "3 workers and 2 clocks to start", func() bool { return ours()-baseline == 5 })
	d.ChannelVacated("a", "x")
	d.CacheMiss("b", "y")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := d.Stats(""); s.Sent != 3 || s.Held != 0 {
		t.Errorf("stats after Close = %+v, want the held and queued events sent", s)
	}
	if n := ours() - baseline; n != 0 {
		t.Errorf("%d webhook goroutines still running after Close returned", n)
	}
}

// In a cluster the re-join may happen on another node: StillTrue is asked
// when a held event is due, and an event that is no longer true is dropped.
func TestHeldEventsRecheckedWithStillTrue(t *testing.T) {
	rc := newReceiver(t, nil)
	cfg := testConfig()
	var mu sync.Mutex
	asked := map[string]bool{}
	cfg.StillTrue = func(app, channel, userID string) bool {
		mu.Lock()
		asked[channel+"/"+userID] = true
		mu.Unlock()
		return channel != "back" // "back" was re-occupied elsewhere
	}
	d := start(t, cfg, testApp("a", rc.url()))
	d.ChannelVacated("a", "back")
	d.ChannelVacated("a", "gone")
	if got := rc.next().names(t); !reflect.DeepEqual(got, []string{"channel_vacated:gone"}) {
		t.Fatalf("webhook = %v, want only channel_vacated:gone", got)
	}
	rc.none()
	mu.Lock()
	defer mu.Unlock()
	if !asked["back/"] || !asked["gone/"] {
		t.Fatalf("StillTrue asked for %v", asked)
	}
	if s := d.Stats("a"); s.Cancelled != 1 {
		t.Fatalf("cancelled = %d, want 1", s.Cancelled)
	}
}
