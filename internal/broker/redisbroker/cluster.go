package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/broker"
)

// clusterSubs is the subscriber side in Redis Cluster mode. Sharded pub/sub
// channels live on the master owning their slot, so one connection cannot
// carry them all; instead each topic has its own Receive (SSUBSCRIBE) on the
// cluster client, which routes it to the slot owner's connection, follows
// slot migrations and reconnects. A loop per topic restarts its Receive
// whenever it ends (slot moved, subscription not confirmed in time, probe
// failure), with a short backoff.
//
// The liveness probe keeps one probe channel per master (its hash tag picks
// a slot that master owns, from CLUSTER SLOTS) and publishes to each every
// ProbeInterval; when a master's probe does not come back, every topic on
// that master's slots is subscribed again.
type clusterSubs struct {
	b      *Broker
	client rueidis.Client
	url    string // redacted (redisx.Backend.Names), for logs and errors

	mu     sync.Mutex
	closed bool               // no more launches
	topics map[string]*csub   // channel name → subscription
	probes map[string]*cprobe // master id → probe
	subs   sync.WaitGroup     // running csub loops

	reconnects, probeFailures atomic.Uint64

	// mute, set by tests only, swallows the messages of Receive attempts it
	// selects: a subscription that silently stopped delivering.
	mute atomic.Pointer[func(channel string, attemptStart time.Time) bool]
}

// csub is one SSUBSCRIBE kept alive by run.
type csub struct {
	name  string
	topic broker.Topic
	slot  uint16
	fn    func(rueidis.PubSubMessage)

	stop      context.CancelFunc // ends the loop
	done      chan struct{}      // closed when the loop has ended
	confirmed chan struct{}      // closed on the first confirmation
	once      sync.Once

	mu      sync.Mutex
	attempt context.CancelFunc // ends the current Receive so the loop starts over
}

// cprobe is the liveness probe of one master.
type cprobe struct {
	id     string
	ranges [][2]uint16
	sub    *csub
	want   atomic.Pointer[string]
	got    chan struct{} // capacity 1
}

func newClusterSubs(b *Broker, c rueidis.Client, url string) *clusterSubs {
	return &clusterSubs{b: b, client: c, url: url, topics: make(map[string]*csub), probes: make(map[string]*cprobe)}
}

func (c *clusterSubs) start() {
	if c.b.opts.ProbeInterval > 0 {
		c.b.wg.Add(1)
		go c.prober()
	}
}

// close waits for every subscription loop (the broker's ctx is canceled).
func (c *clusterSubs) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.subs.Wait()
}

func (c *clusterSubs) slotOf(name string) uint16 {
	cmd := c.client.B().Spublish().Channel(name).Message("").Build()
	return cmd.Slot()
}

// launch starts the loop of a new subscription; call it with c.mu held. It
// returns nil once the broker is closing.
func (c *clusterSubs) launch(name string, t broker.Topic, fn func(rueidis.PubSubMessage)) *csub {
	if c.closed {
		return nil
	}
	ctx, stop := context.WithCancel(c.b.ctx)
	cs := &csub{name: name, topic: t, slot: c.slotOf(name), fn: fn, stop: stop,
		done: make(chan struct{}), confirmed: make(chan struct{})}
	c.subs.Add(1)
	go c.run(ctx, cs)
	return cs
}

// restart makes cs subscribe again at once.
func (cs *csub) restart() {
	cs.mu.Lock()
	if cs.attempt != nil {
		cs.attempt()
	}
	cs.mu.Unlock()
}

func (c *clusterSubs) run(ctx context.Context, cs *csub) {
	defer c.subs.Done()
	defer close(cs.done)
	failures := 0
	var lost atomic.Bool // a confirmed subscription ended: the next confirmation is a reconnect
	for {
		actx, acancel := context.WithCancel(ctx)
		cs.mu.Lock()
		cs.attempt = acancel
		cs.mu.Unlock()
		var got atomic.Bool
		hctx := rueidis.WithOnSubscriptionHook(actx, func(s rueidis.PubSubSubscription) {
			if s.Kind != "ssubscribe" || s.Channel != cs.name {
				return
			}
			// A second confirmation in one Receive is rueidis resubscribing
			// after a reconnect.
			if got.Swap(true) || lost.Swap(false) {
				c.reconnects.Add(1)
				c.b.st.reconnects.Add(1)
			}
			cs.once.Do(func() { close(cs.confirmed) })
		})
		hctx = rueidis.WithOnReceiveReturnHook(hctx, func(err error, cc rueidis.CommandClient) error {
			if ctx.Err() != nil { // unsubscribed or closing: tell Redis
				uctx, cancel := context.WithTimeout(context.Background(), c.b.opts.PublishTimeout)
				_ = cc.Do(uctx, cc.B().Sunsubscribe().Channel(cs.name).Build()).Error()
				cancel()
			}
			return err
		})
		watchdog := time.AfterFunc(c.b.opts.SubscribeTimeout, func() {
			if !got.Load() {
				acancel()
			}
		})
		started := time.Now()
		err := c.client.Receive(hctx, c.client.B().Ssubscribe().Channel(cs.name).Build(), func(m rueidis.PubSubMessage) {
			if mute := c.mute.Load(); mute != nil && (*mute)(cs.name, started) {
				return
			}
			cs.fn(m)
		})
		watchdog.Stop()
		acancel()
		if ctx.Err() != nil {
			return
		}
		if got.Load() {
			lost.Store(true)
			failures = 0
		}
		c.b.log.Debug("redis broker: cluster subscription ended, resubscribing",
			slog.String("channel", cs.name), slog.Any("error", err))
		t := time.NewTimer(c.b.backoff(failures))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		failures++
	}
}

func (c *clusterSubs) subscribe(ctx context.Context, t broker.Topic) error {
	name := channelName(t)
	c.mu.Lock()
	cs := c.topics[name]
	if cs == nil {
		cs = c.launch(name, t, func(m rueidis.PubSubMessage) { c.b.deliver(t, m.Message) })
		if cs == nil {
			c.mu.Unlock()
			return broker.ErrClosed
		}
		c.topics[name] = cs
	}
	c.mu.Unlock()
	select {
	case <-cs.confirmed:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	if c.topics[name] == cs {
		delete(c.topics, name)
	}
	c.mu.Unlock()
	cs.stop()
	return fmt.Errorf("redisbroker: subscribe %s on %s: %w", t.Channel, c.url, ctx.Err())
}

func (c *clusterSubs) unsubscribe(ctx context.Context, t broker.Topic) error {
	name := channelName(t)
	c.mu.Lock()
	cs := c.topics[name]
	delete(c.topics, name)
	c.mu.Unlock()
	if cs == nil {
		return nil
	}
	cs.stop()
	select {
	case <-cs.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("redisbroker: unsubscribe %s on %s: %w", t.Channel, c.url, ctx.Err())
	}
}

// master is one Redis Cluster master and the slot ranges it serves.
type master struct {
	id     string
	addr   string
	ranges [][2]uint16
}

// masters asks the cluster which master serves which slots (CLUSTER SLOTS).
func (c *clusterSubs) masters(ctx context.Context) ([]master, error) {
	entries, err := c.client.Do(ctx, c.client.B().ClusterSlots().Build()).ToArray()
	if err != nil {
		return nil, err
	}
	byID := map[string]*master{}
	for _, e := range entries {
		f, err := e.ToArray()
		if err != nil || len(f) < 3 {
			return nil, errors.New("redisbroker: malformed CLUSTER SLOTS reply")
		}
		lo, err1 := f[0].AsInt64()
		hi, err2 := f[1].AsInt64()
		node, err3 := f[2].ToArray()
		if err1 != nil || err2 != nil || err3 != nil || len(node) < 3 || lo < 0 || hi < lo || hi > 16383 {
			return nil, errors.New("redisbroker: malformed CLUSTER SLOTS reply")
		}
		host, _ := node[0].ToString()
		port, _ := node[1].AsInt64()
		id, _ := node[2].ToString()
		m := byID[id]
		if m == nil {
			m = &master{id: id, addr: host + ":" + strconv.FormatInt(port, 10)}
			byID[id] = m
		}
		m.ranges = append(m.ranges, [2]uint16{uint16(lo), uint16(hi)})
	}
	out := make([]master, 0, len(byID))
	for _, m := range byID {
		sort.Slice(m.ranges, func(i, j int) bool { return m.ranges[i][0] < m.ranges[j][0] })
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

func inRanges(slot uint16, ranges [][2]uint16) bool {
	for _, r := range ranges {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

func sameRanges(a, b [][2]uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// syncProbes keeps one probe subscription per master, on a channel in a slot
// the master owns.
func (c *clusterSubs) syncProbes(ms []master) {
	seen := map[string]bool{}
	var stop []*csub
	c.mu.Lock()
	for _, m := range ms {
		seen[m.id] = true
		old := c.probes[m.id]
		if old != nil && sameRanges(old.ranges, m.ranges) {
			continue
		}
		name := ""
		for k := 0; k < 1<<16; k++ {
			if n := clusterProbeName(strconv.Itoa(k), c.b.opts.NodeID); inRanges(c.slotOf(n), m.ranges) {
				name = n
				break
			}
		}
		if old != nil {
			if old.sub.name == name { // the master's slots changed, not its probe channel
				old.ranges = m.ranges
				continue
			}
			stop = append(stop, old.sub)
			delete(c.probes, m.id)
		}
		if name == "" {
			continue
		}
		p := &cprobe{id: m.id, ranges: m.ranges, got: make(chan struct{}, 1)}
		if p.sub = c.launch(name, broker.Topic{}, func(msg rueidis.PubSubMessage) {
			if w := p.want.Load(); w != nil && *w == msg.Message {
				select {
				case p.got <- struct{}{}:
				default:
				}
			}
		}); p.sub == nil {
			break
		}
		c.probes[m.id] = p
	}
	for id, p := range c.probes {
		if !seen[id] {
			stop = append(stop, p.sub)
			delete(c.probes, id)
		}
	}
	c.mu.Unlock()
	for _, s := range stop {
		s.stop()
	}
}

func (c *clusterSubs) prober() {
	defer c.b.wg.Done()
	tick := time.NewTicker(c.b.opts.ProbeInterval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(c.b.ctx, c.b.opts.ProbeTimeout)
		ms, err := c.masters(ctx)
		cancel()
		if err == nil {
			c.syncProbes(ms)
		} else if c.b.ctx.Err() == nil {
			c.b.st.probeErrors.Add(1)
		}
		select {
		case <-tick.C:
		case <-c.b.ctx.Done():
			return
		}
		c.probeOnce()
	}
}

// probeOnce probes every master whose probe channel is subscribed and
// resubscribes the topics of the masters that failed.
func (c *clusterSubs) probeOnce() {
	c.mu.Lock()
	var ps []*cprobe
	for _, p := range c.probes {
		select {
		case <-p.sub.confirmed:
			ps = append(ps, p)
		default: // not subscribed yet: its loop is retrying
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(c.b.ctx, c.b.opts.ProbeTimeout)
	defer cancel()
	var failed, waiting []*cprobe
	for _, p := range ps {
		tok := probeToken()
		p.want.Store(&tok)
		select {
		case <-p.got:
		default:
		}
		c.b.st.probes.Add(1)
		n, err := c.client.Do(ctx, c.client.B().Spublish().Channel(p.sub.name).Message(tok).Build()).AsInt64()
		switch {
		case err != nil:
			c.b.st.probeErrors.Add(1)
		case n == 0:
			failed = append(failed, p)
		default:
			waiting = append(waiting, p)
		}
	}
	for _, p := range waiting {
		select {
		case <-p.got:
		case <-ctx.Done():
			failed = append(failed, p)
		}
	}
	for _, p := range ps {
		p.want.Store(nil)
	}
	if c.b.ctx.Err() != nil {
		return
	}
	for _, p := range failed {
		c.probeFailures.Add(1)
		c.b.st.probeFailures.Add(1)
		c.b.log.Warn("redis broker: cluster probe failed, resubscribing the master's topics", slog.String("master", p.id))
		c.mu.Lock()
		subs := []*csub{p.sub}
		for _, cs := range c.topics {
			if inRanges(cs.slot, p.ranges) {
				subs = append(subs, cs)
			}
		}
		c.mu.Unlock()
		for _, cs := range subs {
			cs.restart()
		}
	}
}

func (c *clusterSubs) stats() ShardStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	up := len(c.probes) > 0 || c.b.opts.ProbeInterval < 0
	for _, p := range c.probes {
		select {
		case <-p.sub.confirmed:
		default:
			up = false
		}
	}
	return ShardStats{URL: c.url, Connected: up, Topics: len(c.topics),
		Reconnects: c.reconnects.Load(), ProbeFailures: c.probeFailures.Load()}
}
