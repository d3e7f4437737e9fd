package redisbroker

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redistest"
	"github.com/heraldrt/herald/internal/redisx"
)

// startMonitor runs a ring monitor for n, as every Herald node does.
func startMonitor(t *testing.T, n *node, o redisx.MonitorOptions) {
	t.Helper()
	m := n.be.StartMonitor(o)
	t.Cleanup(m.Stop)
}

// collector records what a node receives on one topic (payloads are
// sequence numbers) and forwards everything else.
type collector struct {
	mu     sync.Mutex
	got    map[int]int // sequence → times received
	when   map[int]time.Time
	others chan *broker.Message
}

func collect(t *testing.T, n *node, tp broker.Topic) *collector {
	c := &collector{got: map[int]int{}, when: map[int]time.Time{}, others: make(chan *broker.Message, 1024)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			var m *broker.Message
			select {
			case m = <-n.sink.ch:
			case <-done:
				return
			}
			if m.Topic != tp {
				select {
				case c.others <- m:
				default:
				}
				continue
			}
			seq, _ := strconv.Atoi(string(m.Payload))
			c.mu.Lock()
			c.got[seq]++
			if _, ok := c.when[seq]; !ok {
				c.when[seq] = time.Now()
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// firstAfter returns when the first message with a sequence ≥ seq arrived.
func (c *collector) firstAfter(seq int) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for s, w := range c.when {
		if s >= seq && (first.IsZero() || w.Before(first)) {
			first = w
		}
	}
	return first, !first.IsZero()
}

// expectOther waits for a message on tp with payload p among the others.
func (c *collector) expectOther(t *testing.T, tp broker.Topic, p string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-c.others:
			if m.Topic == tp && string(m.Payload) == p {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on %+v within %v", p, tp, d)
		}
	}
}

// publisher publishes sequence numbers to a topic every few milliseconds and
// remembers which Redis acknowledged.
type publisher struct {
	mu    sync.Mutex
	acked []int
	sent  map[int]time.Time // sequence → when Publish was called (acknowledged ones)
	ackAt map[int]time.Time // sequence → when Publish returned nil
	next  int
	stop  chan struct{}
	done  chan struct{}
}

func startPublisher(n *node, tp broker.Topic, every time.Duration) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{}), sent: map[int]time.Time{}, ackAt: map[int]time.Time{}}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			seq := p.next
			p.next++
			p.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			sent := time.Now()
			err := n.br.Publish(ctx, &broker.Message{Topic: tp, Payload: []byte(strconv.Itoa(seq))})
			cancel()
			if err == nil {
				p.mu.Lock()
				p.acked = append(p.acked, seq)
				p.sent[seq], p.ackAt[seq] = sent, time.Now()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *publisher) nextSeq() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

func (p *publisher) finish() []int {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.acked...)
}

type failoverResult struct {
	acked, lost, dups  int
	failover, failback time.Duration
	// timeline explains the losses: when each lost message was sent and
	// acknowledged, next to the kill, the restart, both nodes' health
	// changes of the killed shard and their broker and monitor logs (ms
	// since the kill).
	timeline []string
}

// ringLog is the timeline of a failover run: the kill and restart, both
// nodes' health changes of the killed shard and their log lines, each with
// the time it happened.
type ringLog struct {
	mu  sync.Mutex
	evs []ringEvent
}

type ringEvent struct {
	at   time.Time
	what string
}

func (l *ringLog) add(what string) {
	l.mu.Lock()
	l.evs = append(l.evs, ringEvent{time.Now(), what})
	l.mu.Unlock()
}

// logTo is an io.Writer that adds each log line to a ringLog.
type logTo struct {
	name string
	l    *ringLog
}

func (w logTo) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	// One line per topic subscribed would drown the timeline.
	if !strings.Contains(line, `msg="redis broker: subscribe"`) && !strings.Contains(line, `msg="redis broker: unsubscribe"`) {
		w.l.add(w.name + " " + line)
	}
	return len(p), nil
}

// eventLog returns a logger whose lines (without their time) go to l.
func eventLog(name string, l *ringLog) *slog.Logger {
	return slog.New(slog.NewTextHandler(logTo{name, l}, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func watchShard(t *testing.T, n *node, name string, i int, l *ringLog) {
	stop := n.be.Ring.Watch(func(c redisx.Change) {
		if c.Shard == i {
			l.add(name + " " + c.From.String() + "→" + c.To.String())
		}
	})
	t.Cleanup(stop)
}

// runFailover kills the home shard of a topic a publisher is publishing to
// every 5 ms, restarts it, and counts what the subscriber missed. The
// subscriber's monitor probes every 700 ms, the publisher's every 100 ms, so
// the publisher moves (after 3 failed probes: 200 to 300 ms after the kill)
// long before the subscriber's monitor notices (700 ms or later): the worst
// disagreement two nodes can have.
//
// What keeps the early-covering subscriber whole is that it covers the
// fallback within milliseconds of losing its connection, while a publisher
// needs DownAfter-1 probe intervals after its first failed probe (in
// production 500 ms or more). The test keeps that margin at 200 ms: with a
// 50 ms interval and 2 probes it was 50 ms, and one message was lost once
// in CI, where the race detector and a dozen other test processes share
// two cores.
func runFailover(t *testing.T, late bool) failoverResult {
	servers := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	urls := []string{servers[0].URL(), servers[1].URL(), servers[2].URL()}
	var rl ringLog
	sub := newNode(t, urls, "", Options{NodeID: "sub", lateCover: late, Log: eventLog("sub", &rl)})
	pub := newNode(t, urls, "", Options{NodeID: "pub", Log: eventLog("pub", &rl)})
	startMonitor(t, sub, redisx.MonitorOptions{Interval: 700 * time.Millisecond, Grace: time.Second, Log: eventLog("sub monitor", &rl)})
	// UpAfter: the publisher moves back after 0.9 s of answers, by when the
	// subscriber's manager has resubscribed the home shard (its reconnect
	// backoff is at most 300 ms).
	startMonitor(t, pub, redisx.MonitorOptions{Interval: 100 * time.Millisecond, DownAfter: 3, UpAfter: 10, Grace: time.Second,
		Log: eventLog("pub monitor", &rl)})
	watchShard(t, sub, "sub", 1, &rl)
	watchShard(t, pub, "pub", 1, &rl)

	moved := topicsOn(sub.be, "app", 1, 31)
	x, moved := moved[0], moved[1:]
	stay := topicsOn(sub.be, "app", 0, 3)
	sub.subscribe(t, append(append([]broker.Topic{x}, moved...), stay...)...)
	c := collect(t, sub, x)
	p := startPublisher(pub, x, 5*time.Millisecond)
	defer func() {
		select {
		case <-p.done:
		default:
			p.finish()
		}
	}()
	eventually(t, 3*time.Second, "first messages", func() bool { _, ok := c.firstAfter(0); return ok })

	servers[1].Kill() // returns once the process is gone
	killed := time.Now()
	rl.add("shard 1 killed")
	seqAtKill := p.nextSeq()
	var res failoverResult
	eventually(t, 5*time.Second, "delivery after the kill", func() bool {
		_, ok := c.firstAfter(seqAtKill)
		return ok
	})
	first, _ := c.firstAfter(seqAtKill)
	res.failover = first.Sub(killed)
	eventually(t, 5*time.Second, "both nodes see the shard down", func() bool {
		return sub.be.Ring.Health(1) == redisx.Down && pub.be.Ring.Health(1) == redisx.Down
	})
	// Every topic of the dead shard works, on the next shard of each.
	fallbacks := map[int]int{}
	for i, tp := range append(moved, stay...) {
		j, _ := pub.be.For(tp.App, tp.Channel)
		fallbacks[j]++
		pub.publish(t, tp, "during "+strconv.Itoa(i))
		c.expectOther(t, tp, "during "+strconv.Itoa(i), 3*time.Second)
	}
	if fallbacks[1] != 0 || fallbacks[0] == 0 || fallbacks[2] == 0 {
		t.Fatalf("topics of the dead shard went to shards %v; want both others", fallbacks)
	}
	// A topic subscribed during the outage is confirmed by its fallback.
	var fresh broker.Topic
	for i := 0; ; i++ {
		fresh = broker.Topic{App: "app", Channel: "fresh-" + strconv.Itoa(i)}
		if sub.be.Ring.Home(redisx.ShardKey(fresh.App, fresh.Channel)) == 1 {
			break
		}
	}
	start := time.Now()
	sub.subscribe(t, fresh)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("subscribing during the outage took %v", d)
	}
	pub.publish(t, fresh, "fresh")
	c.expectOther(t, fresh, "fresh", 3*time.Second)

	restarted := time.Now()
	rl.add("shard 1 restarting")
	servers[1].Restart()
	rl.add("shard 1 restarted")
	eventually(t, 5*time.Second, "both nodes see the shard back", func() bool {
		return sub.be.Ring.Health(1) != redisx.Down && pub.be.Ring.Health(1) != redisx.Down
	})
	res.failback = time.Since(restarted)
	eventually(t, 5*time.Second, "grace over", func() bool {
		return sub.be.Ring.Health(1) == redisx.Up && pub.be.Ring.Health(1) == redisx.Up
	})
	// The fallback subscriptions are released, in the broker and in Redis.
	eventually(t, 3*time.Second, "fallback subscriptions released", func() bool {
		for _, tp := range append(moved, x, fresh) {
			name := channelName(tp)
			for j, sh := range sub.br.shards {
				if sh.has(name) != (j == 1) {
					return false
				}
			}
			for j, cl := range sub.be.Clients {
				if j == 1 {
					continue
				}
				n, err := cl.Do(context.Background(), cl.B().PubsubNumsub().Channel(name).Build()).ToArray()
				if err != nil || len(n) != 2 {
					return false
				}
				if v, _ := n[1].AsInt64(); v != 0 {
					return false
				}
			}
		}
		return true
	})
	// Delivery continues from the home shard only.
	seqBack := p.nextSeq()
	eventually(t, 3*time.Second, "delivery after the return", func() bool {
		_, ok := c.firstAfter(seqBack)
		return ok
	})
	acked := p.finish()
	last := acked[len(acked)-1]
	eventually(t, 3*time.Second, "last acknowledged message", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.got[last] > 0
	})
	time.Sleep(50 * time.Millisecond) // stragglers on the other shard would show as duplicates
	c.mu.Lock()
	defer c.mu.Unlock()
	res.acked = len(acked)
	ms := func(at time.Time) string { return strconv.FormatInt(at.Sub(killed).Milliseconds(), 10) + "ms" }
	for _, s := range acked {
		switch c.got[s] {
		case 0:
			res.lost++
			p.mu.Lock()
			res.timeline = append(res.timeline, "seq "+strconv.Itoa(s)+" lost: sent "+ms(p.sent[s])+", acknowledged "+ms(p.ackAt[s]))
			p.mu.Unlock()
		case 1:
		default:
			res.dups++
			res.timeline = append(res.timeline, "seq "+strconv.Itoa(s)+" received "+strconv.Itoa(c.got[s])+" times")
		}
	}
	if res.lost+res.dups > 0 {
		rl.mu.Lock()
		for _, e := range rl.evs {
			res.timeline = append(res.timeline, ms(e.at)+" "+e.what)
		}
		rl.mu.Unlock()
	}
	return res
}

// Kill a shard while a publisher publishes to one of its topics: every node
// moves the shard's topics to the next shard of each, a subscriber that
// covers the fallback as soon as its connection drops loses no message the
// publisher got an acknowledgement for, even though its own monitor notices
// the failure long after the publisher's; when the shard returns the topics
// move back and the fallback subscriptions are released.
func TestFailoverLosesNoAcknowledgedMessage(t *testing.T) {
	r := runFailover(t, false)
	t.Logf("failover: first delivery %v after SIGKILL; both nodes back %v after restart; %d acknowledged, %d lost, %d duplicated",
		r.failover.Round(time.Millisecond), r.failback.Round(time.Millisecond), r.acked, r.lost, r.dups)
	if r.lost != 0 || r.dups != 0 {
		t.Fatalf("lost %d and duplicated %d of %d acknowledged messages:\n%s", r.lost, r.dups, r.acked, strings.Join(r.timeline, "\n"))
	}
	if r.failover > 2*time.Second {
		t.Fatalf("failover took %v", r.failover)
	}
}

// The same with subscribers that only follow their own ring: while the
// nodes disagree, the publisher's messages go to a shard the subscriber has
// not subscribed yet, and are lost although acknowledged. This is what
// covering early avoids (measured and logged).
func TestFailoverLateCoverLoses(t *testing.T) {
	r := runFailover(t, true)
	t.Logf("late cover: %d acknowledged, %d lost, %d duplicated; first delivery %v after SIGKILL",
		r.acked, r.lost, r.dups, r.failover.Round(time.Millisecond))
	if r.lost == 0 {
		t.Fatal("no message lost: the test did not make the nodes disagree")
	}
}
