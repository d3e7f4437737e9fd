package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/broker"
)

// subscribeBatch is how many channels one SUBSCRIBE carries when a
// connection resubscribes everything.
const subscribeBatch = 500

// shard is this node's subscriber side of one Redis shard: a dedicated
// connection (taken from the shard client's pool, so it never carries other
// commands) with pub/sub hooks, the set of topics that must be subscribed on
// it, a manager goroutine that (re)builds the connection and a prober.
type shard struct {
	b      *Broker
	idx    int
	url    string // redacted (redisx.Backend.Names), for logs and errors
	client rueidis.Client
	probe  string // this node's probe channel

	mu      sync.RWMutex
	topics  map[string]broker.Topic // wanted: Redis channel name → topic
	conn    rueidis.DedicatedClient // the live connection; nil while (re)building
	gen     uint64                  // bumped whenever conn changes
	changed chan struct{}           // closed (and replaced) whenever conn changes

	rebuild chan uint64 // a generation the prober found dead (capacity 1)

	probeWant atomic.Pointer[string] // the probe token in flight
	probeGot  chan struct{}          // signaled when it arrives (capacity 1)

	reconnects, probeFailures atomic.Uint64
}

func newShard(b *Broker, idx int, url string, c rueidis.Client) *shard {
	return &shard{
		b: b, idx: idx, url: url, client: c, probe: probeName(b.opts.NodeID),
		topics:   make(map[string]broker.Topic),
		changed:  make(chan struct{}),
		rebuild:  make(chan uint64, 1),
		probeGot: make(chan struct{}, 1),
	}
}

func (s *shard) start() {
	s.b.wg.Add(1)
	go s.run()
	if s.b.opts.ProbeInterval > 0 {
		s.b.wg.Add(1)
		go s.prober()
	}
}

// setConnLocked publishes a new connection state to waiting subscribers.
func (s *shard) setConnLocked(c rueidis.DedicatedClient) uint64 {
	s.conn = c
	s.gen++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.gen
}

// run keeps one subscriber connection alive: connect, subscribe every wanted
// topic, serve until the connection is lost or the prober condemns it, and
// start over after a short backoff.
func (s *shard) run() {
	defer s.b.wg.Done()
	log := s.b.log.With(slog.String("shard", s.url))
	failures := 0
	lost := false // a working connection was lost: the next success is a reconnect
	for s.b.ctx.Err() == nil {
		dc, _ := s.client.Dedicate()
		down := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: s.onMessage})
		names, err := s.subscribeAll(dc)
		if err != nil {
			s.closeAside(dc)
			if s.b.ctx.Err() != nil {
				return
			}
			if failures == 0 {
				log.Warn("redis broker: cannot subscribe on shard, retrying", slog.Any("error", err))
			}
			if !s.b.sleep(s.b.backoff(failures)) {
				return
			}
			failures++
			continue
		}
		gen := s.ready(dc, names)
		if lost {
			s.reconnects.Add(1)
			s.b.st.reconnects.Add(1)
			log.Info("redis broker: shard subscriptions restored", slog.Int("failed_attempts", failures))
		}
		failures, lost = 0, true
		reason := s.serve(gen, down)
		s.mu.Lock()
		s.setConnLocked(nil)
		s.mu.Unlock()
		s.closeAside(dc)
		if reason != nil {
			log.Warn("redis broker: shard subscriber connection lost", slog.Any("reason", reason))
		}
	}
}

// closeAside mutes dc and closes it in the background: closing a connection
// whose peer went silent takes rueidis a second (it waits for a PING), which
// must not delay the next connection.
func (s *shard) closeAside(dc rueidis.DedicatedClient) {
	dc.SetPubSubHooks(rueidis.PubSubHooks{})
	s.b.wg.Add(1)
	go func() {
		defer s.b.wg.Done()
		dc.Close()
	}()
}

// serve waits until the connection of generation gen ends and says why (nil
// when the broker closes).
func (s *shard) serve(gen uint64, down <-chan error) error {
	for {
		select {
		case err, ok := <-down:
			if !ok || err == nil {
				err = errors.New("connection closed")
			}
			return err
		case g := <-s.rebuild:
			if g == gen {
				return errors.New("liveness probe failed")
			}
		case <-s.b.ctx.Done():
			return nil
		}
	}
}

// subscribeAll subscribes dc to the probe channel and every wanted topic; it
// returns the topics it subscribed.
func (s *shard) subscribeAll(dc rueidis.DedicatedClient) ([]string, error) {
	s.mu.RLock()
	names := make([]string, 0, len(s.topics))
	for n := range s.topics {
		names = append(names, n)
	}
	s.mu.RUnlock()
	todo := append([]string{s.probe}, names...)
	for len(todo) > 0 {
		batch := todo[:min(len(todo), subscribeBatch)]
		todo = todo[len(batch):]
		ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.SubscribeTimeout)
		err := dc.Do(ctx, dc.B().Subscribe().Channel(batch...).Build()).Error()
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return names, nil
}

// ready makes dc, subscribed to names, the live connection. Topics
// unsubscribed while dc was being subscribed are unsubscribed from it first,
// so Redis keeps no subscription the broker no longer wants; topics
// subscribed meanwhile subscribe themselves once dc is live.
func (s *shard) ready(dc rueidis.DedicatedClient, names []string) uint64 {
	for {
		s.mu.Lock()
		var stale, keep []string
		for _, n := range names {
			if _, ok := s.topics[n]; ok {
				keep = append(keep, n)
			} else {
				stale = append(stale, n)
			}
		}
		if len(stale) == 0 {
			gen := s.setConnLocked(dc)
			s.mu.Unlock()
			return gen
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.SubscribeTimeout)
		_ = dc.Do(ctx, dc.B().Unsubscribe().Channel(stale...).Build()).Error()
		cancel()
		names = keep
	}
}

// onMessage is the connection's pub/sub hook. It runs on the connection's
// reader goroutine and must not block; the Handler does not.
func (s *shard) onMessage(m rueidis.PubSubMessage) {
	if m.Channel == s.probe {
		if want := s.probeWant.Load(); want != nil && *want == m.Message {
			select {
			case s.probeGot <- struct{}{}:
			default:
			}
		}
		return
	}
	s.mu.RLock()
	t, ok := s.topics[m.Channel]
	s.mu.RUnlock()
	if !ok {
		s.b.st.dropped.Add(1)
		return
	}
	s.b.deliver(t, m.Message)
}

// subscribe adds a topic and returns once Redis confirmed it on the live
// connection (a connection built later subscribes it by itself).
func (s *shard) subscribe(ctx context.Context, name string, t broker.Topic) error {
	s.mu.Lock()
	s.topics[name] = t
	s.mu.Unlock()
	var lastErr error
	for {
		s.mu.RLock()
		dc, changed := s.conn, s.changed
		s.mu.RUnlock()
		if dc != nil {
			err := dc.Do(ctx, dc.B().Subscribe().Channel(name).Build()).Error()
			if err == nil {
				return nil
			}
			lastErr = err
		}
		select {
		case <-changed:
		case <-s.b.ctx.Done():
			return broker.ErrClosed
		case <-ctx.Done():
			s.mu.Lock()
			delete(s.topics, name)
			s.mu.Unlock()
			if lastErr == nil {
				lastErr = errors.New("shard unreachable")
			}
			return fmt.Errorf("redisbroker: subscribe %s on %s: %w (%w)", t.Channel, s.url, ctx.Err(), lastErr)
		}
	}
}

// unsubscribe removes a topic; its messages are dropped from now on.
func (s *shard) unsubscribe(ctx context.Context, name string) error {
	s.mu.Lock()
	delete(s.topics, name)
	dc := s.conn
	s.mu.Unlock()
	if dc == nil {
		return nil // the next connection will not subscribe it
	}
	if err := dc.Do(ctx, dc.B().Unsubscribe().Channel(name).Build()).Error(); err != nil {
		return fmt.Errorf("redisbroker: unsubscribe on %s: %w", s.url, err)
	}
	return nil
}

// prober publishes a probe to this node's probe channel every ProbeInterval
// and expects it back on the subscriber connection within ProbeTimeout. A
// probe that does not come back means the subscription stopped delivering
// although the connection looks alive: the connection is rebuilt.
func (s *shard) prober() {
	defer s.b.wg.Done()
	tick := time.NewTicker(s.b.opts.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-s.b.ctx.Done():
			return
		}
		s.mu.RLock()
		dc, gen := s.conn, s.gen
		s.mu.RUnlock()
		if dc == nil {
			continue // being rebuilt
		}
		if !s.probeOnce() {
			continue
		}
		s.probeFailures.Add(1)
		s.b.st.probeFailures.Add(1)
		select {
		case s.rebuild <- gen:
		default:
		}
	}
}

// probeOnce sends one probe; it reports whether the subscription failed it.
func (s *shard) probeOnce() (failed bool) {
	tok := probeToken()
	s.probeWant.Store(&tok)
	defer s.probeWant.Store(nil)
	select {
	case <-s.probeGot: // a late one from before
	default:
	}
	ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.ProbeTimeout)
	defer cancel()
	s.b.st.probes.Add(1)
	n, err := s.client.Do(ctx, s.client.B().Publish().Channel(s.probe).Message(tok).Build()).AsInt64()
	if err != nil {
		// The shard does not take commands: nothing to learn about the
		// subscription, which notices a dead server by itself.
		s.b.st.probeErrors.Add(1)
		return false
	}
	if n == 0 {
		return s.b.ctx.Err() == nil // Redis has no subscriber for our probe channel
	}
	select {
	case <-s.probeGot:
		return false
	case <-ctx.Done():
		return s.b.ctx.Err() == nil
	}
}

func (s *shard) stats() ShardStats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return ShardStats{
		URL: s.url, Connected: s.conn != nil, Topics: len(s.topics),
		Reconnects: s.reconnects.Load(), ProbeFailures: s.probeFailures.Load(),
	}
}
