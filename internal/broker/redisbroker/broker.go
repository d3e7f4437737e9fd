// Package redisbroker is the Broker of a Herald cluster: nodes exchange
// channel messages through Redis pub/sub.
//
// With independent Redis servers (shards) each topic lives on the shard that
// redisx.Backend.For picks; a node publishes with PUBLISH on that shard and
// holds one dedicated subscriber connection per shard carrying all the topics
// it subscribed there. With a Redis Cluster it uses sharded pub/sub
// (SPUBLISH/SSUBSCRIBE) and rueidis routes every topic to the master owning
// its slot.
//
// Subscriptions survive failures: a lost subscriber connection is rebuilt and
// every topic resubscribed with a short backoff, and a liveness probe per
// shard (a message the node publishes to itself every few seconds) detects a
// subscription that silently stopped delivering and rebuilds it as well.
// Publish fails fast (Options.PublishTimeout) when a shard is unreachable.
package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redisx"
)

// Options tune a Broker. Zero values take the defaults.
type Options struct {
	// NodeID names this node; it is part of the probe channel name, so
	// every node of a cluster needs its own. Default: a random id.
	NodeID string
	// PublishTimeout bounds one Publish (on top of its ctx). Default 1s.
	PublishTimeout time.Duration
	// SubscribeTimeout bounds one Subscribe or Unsubscribe (on top of its
	// ctx), and each resubscription batch. Default 2s.
	SubscribeTimeout time.Duration
	// ProbeInterval is how often each shard's subscription is probed;
	// negative disables the probe. Default 2s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe may take to come back. Default 1s.
	ProbeTimeout time.Duration
	// RetryMin and RetryMax bound the delay between reconnection attempts
	// (doubling from RetryMin, with jitter). Defaults 100ms and 250ms, so a
	// shard that comes back is resubscribed well within a second.
	RetryMin, RetryMax time.Duration
	// Log receives connection events. Default: discard.
	Log *slog.Logger

	// lateCover (tests): subscribe only where this node would publish, not
	// early on Suspect shards nor late on Recovering ones (failover.go).
	lateCover bool
}

func (o *Options) defaults() {
	if o.NodeID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.NodeID = hex.EncodeToString(b[:])
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = time.Second
	}
	if o.SubscribeTimeout <= 0 {
		o.SubscribeTimeout = 2 * time.Second
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 2 * time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(250*time.Millisecond, o.RetryMin)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Stats are the broker's counters since New (for metrics).
type Stats struct {
	Published     uint64 // messages Redis accepted from Publish
	PublishErrors uint64 // Publish calls that failed (timeout, shard down, Redis error)
	Delivered     uint64 // messages handed to the Handler
	DecodeErrors  uint64 // malformed messages received and dropped
	Dropped       uint64 // messages for topics no longer subscribed, dropped
	Reconnects    uint64 // subscriptions restored after a lost connection or failed probe
	Probes        uint64 // liveness probes sent
	ProbeFailures uint64 // probes that did not come back (each triggers a rebuild)
	ProbeErrors   uint64 // probes that could not be published (shard unreachable)
	Topics        int    // topics currently subscribed (on any shard; once per shard)
	Shards        []ShardStats
	// Shard failover (shard mode): subscriptions added on fallback shards
	// by ring changes, and how often a shard became Down and came back.
	Moved, Failovers, Failbacks uint64
}

// ShardStats describe one shard (one entry for a Redis Cluster).
type ShardStats struct {
	URL           string // password redacted
	Connected     bool   // the subscriber connection is up (cluster: every probe subscribed)
	Topics        int
	Reconnects    uint64
	ProbeFailures uint64
	Health        redisx.Health // this node's view (shard mode; cluster: always Up)
}

type counters struct {
	published, publishErrors, delivered, decodeErrors, dropped atomic.Uint64
	reconnects, probes, probeFailures, probeErrors             atomic.Uint64
	moved                                                      atomic.Uint64
}

// Broker is the Redis broker. It implements broker.Broker.
type Broker struct {
	be      *redisx.Backend
	handler broker.Handler
	opts    Options
	log     *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	shards  []*shard     // shard mode
	cluster *clusterSubs // cluster mode

	// subMu orders the changes of the shards' wanted sets by Subscribe,
	// Unsubscribe and rebalance (not their network round trips).
	subMu     sync.Mutex
	ringCh    chan struct{} // a ring change to apply (capacity 1)
	stopWatch func()

	st counters
}

var _ broker.Broker = (*Broker)(nil)

// New returns a broker over b that delivers the messages of subscribed topics
// to h. It starts the subscriber connections in the background and does not
// wait for Redis: Subscribe does. Close stops the broker but not b, which the
// caller shares with other users and closes itself.
func New(b *redisx.Backend, h broker.Handler, opts Options) (*Broker, error) {
	if b == nil || len(b.Clients) == 0 {
		return nil, errors.New("redisbroker: no Redis backend")
	}
	if h == nil {
		return nil, errors.New("redisbroker: nil handler")
	}
	if b.Cluster && len(b.Clients) != 1 {
		return nil, errors.New("redisbroker: a cluster backend has exactly one client")
	}
	opts.defaults()
	br := &Broker{be: b, handler: h, opts: opts, log: opts.Log}
	br.ctx, br.cancel = context.WithCancel(context.Background())
	if b.Cluster {
		br.cluster = newClusterSubs(br, b.Clients[0], b.Names[0])
		br.cluster.start()
		return br, nil
	}
	for i, c := range b.Clients {
		s := newShard(br, i, b.Names[i], c)
		br.shards = append(br.shards, s)
	}
	for _, s := range br.shards {
		s.start()
	}
	br.watchRing()
	return br, nil
}

// NodeID is the node id the broker runs with.
func (b *Broker) NodeID() string { return b.opts.NodeID }

// Publish sends m to the topic's shard. It returns within PublishTimeout (or
// ctx) with an error when the shard does not accept the message.
func (b *Broker) Publish(ctx context.Context, m *broker.Message) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if m.Kind > broker.KindTerminate {
		return fmt.Errorf("redisbroker: unknown message kind %d", m.Kind)
	}
	data := appendMessage(make([]byte, 0, encodedLen(m)), m)
	name := channelName(m.Topic)
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	var (
		i   int
		c   rueidis.Client
		cmd rueidis.Completed
	)
	if b.be.Cluster {
		c = b.be.Clients[0]
		cmd = c.B().Spublish().Channel(name).Message(rueidis.BinaryString(data)).Build()
	} else {
		i, c = b.be.For(m.Topic.App, m.Topic.Channel)
		cmd = c.B().Publish().Channel(name).Message(rueidis.BinaryString(data)).Build()
	}
	// On a timeout the outcome is unknown: the command may still reach a
	// server that was only slow. The error says so much; it never claims
	// success.
	if err := c.Do(ctx, cmd).Error(); err != nil {
		b.st.publishErrors.Add(1)
		if b.closed.Load() {
			return broker.ErrClosed
		}
		return fmt.Errorf("redisbroker: publish %s to %s: %w", m.Topic.Channel, b.be.Names[i], err)
	}
	b.st.published.Add(1)
	return nil
}

// Subscribe makes the node receive t's messages. It returns nil once Redis
// confirmed the subscription, or an error after SubscribeTimeout (or ctx)
// when the topic's shard cannot be reached. While the ring is degraded the
// topic is subscribed on every shard of its cover (see failover.go) and
// Subscribe returns at the first confirmation.
func (b *Broker) Subscribe(ctx context.Context, t broker.Topic) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.SubscribeTimeout)
	defer cancel()
	var err error
	if b.cluster != nil {
		err = b.cluster.subscribe(ctx, t)
	} else {
		err = b.subscribeCover(ctx, t)
	}
	if err != nil && b.closed.Load() {
		return broker.ErrClosed
	}
	return err
}

// Unsubscribe stops delivery of t. Messages of t that arrive afterwards are
// dropped even if Redis could not be told.
func (b *Broker) Unsubscribe(ctx context.Context, t broker.Topic) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.SubscribeTimeout)
	defer cancel()
	if b.cluster != nil {
		return b.cluster.unsubscribe(ctx, t)
	}
	name := channelName(t)
	var errs []error
	live := b.forgetAll(name)
	b.log.Debug("redis broker: unsubscribe", slog.String("channel", t.Channel), slog.Int("live_connections", len(live)))
	for _, u := range live {
		if err := u.dc.Do(ctx, u.dc.B().Unsubscribe().Channel(name).Build()).Error(); err != nil {
			errs = append(errs, fmt.Errorf("redisbroker: unsubscribe on %s: %w", u.sh.url, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops every subscription and background task and waits for them.
// Later calls return broker.ErrClosed. It does not close the Backend.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	if b.stopWatch != nil {
		b.stopWatch()
	}
	b.cancel()
	if b.cluster != nil {
		b.cluster.close()
	}
	b.wg.Wait()
	return nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	s := Stats{
		Published:     b.st.published.Load(),
		PublishErrors: b.st.publishErrors.Load(),
		Delivered:     b.st.delivered.Load(),
		DecodeErrors:  b.st.decodeErrors.Load(),
		Dropped:       b.st.dropped.Load(),
		Reconnects:    b.st.reconnects.Load(),
		Probes:        b.st.probes.Load(),
		ProbeFailures: b.st.probeFailures.Load(),
		ProbeErrors:   b.st.probeErrors.Load(),
		Moved:         b.st.moved.Load(),
	}
	if !b.be.Cluster {
		s.Failovers, s.Failbacks = b.be.Ring.Failovers(), b.be.Ring.Failbacks()
	}
	if b.cluster != nil {
		s.Shards = []ShardStats{b.cluster.stats()}
	} else {
		for _, sh := range b.shards {
			s.Shards = append(s.Shards, sh.stats())
		}
	}
	for _, sh := range s.Shards {
		s.Topics += sh.Topics
	}
	return s
}

// deliver decodes a message received on topic t and hands it to the Handler.
func (b *Broker) deliver(t broker.Topic, data string) {
	m, err := decodeMessage([]byte(data))
	if err != nil {
		b.st.decodeErrors.Add(1)
		b.log.Debug("redis broker: dropping malformed message", slog.String("channel", t.Channel), slog.Any("error", err))
		return
	}
	m.Topic = t
	b.st.delivered.Add(1)
	b.handler(m)
}

// backoff returns the delay before reconnection attempt n (0-based):
// RetryMin doubling up to RetryMax, with ±20% jitter.
func (b *Broker) backoff(n int) time.Duration {
	d := b.opts.RetryMin
	for i := 0; i < n && d < b.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, b.opts.RetryMax)
	return d - d/5 + time.Duration(mrand.Int64N(int64(d/5)*2+1))
}

// sleep waits d or until the broker closes; it reports whether to go on.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// probeToken returns a fresh probe payload: random, so that another process
// misconfigured with the same NodeID cannot satisfy our probe.
func probeToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
