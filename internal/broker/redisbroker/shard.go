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

	condemned uint64        // the newest generation found dead (guarded by mu)
	rebuild   chan struct{} // signaled after condemned changes (capacity 1)

	probeWant atomic.Pointer[string] // the probe token in flight
	probeGot  chan struct{}          // signaled when it arrives (capacity 1)

	reconnects, probeFailures atomic.Uint64
}

func newShard(b *Broker, idx int, url string, c rueidis.Client) *shard {
	return &shard{
		b: b, idx: idx, url: url, client: c, probe: probeName(b.opts.NodeID),
		topics:   make(map[string]broker.Topic),
		changed:  make(chan struct{}),
		rebuild:  make(chan struct{}, 1),
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
				s.b.suspect(s.idx)
			}
			if !s.b.sleep(s.b.backoff(failures)) {
				return
			}
			failures++
			continue
		}
		gen, err := s.ready(dc, names)
		if err != nil {
			s.closeAside(dc)
			if s.b.ctx.Err() != nil {
				return
			}
			if !s.b.sleep(s.b.backoff(failures)) {
				return
			}
			failures++
			continue
		}
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
			s.b.suspect(s.idx)
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
		case <-s.rebuild:
			s.mu.RLock()
			g := s.condemned
			s.mu.RUnlock()
			if g == gen {
				return errors.New("liveness probe failed or a subscription was not confirmed")
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
	if err := s.subscribeOn(dc, append([]string{s.probe}, names...)); err != nil {
		return nil, err
	}
	return names, nil
}

// ready makes dc, subscribed to names, the live connection. Topics
// unsubscribed while dc was being subscribed are unsubscribed from it first,
// so Redis keeps no subscription the broker no longer wants, and topics
// added meanwhile (by a ring change) are subscribed on it; the connection
// goes live under the same lock as the last check, so a topic added later
// sees it and subscribes itself.
func (s *shard) ready(dc rueidis.DedicatedClient, names []string) (uint64, error) {
	have := make(map[string]struct{}, len(names))
	for _, n := range names {
		have[n] = struct{}{}
	}
	for {
		s.mu.Lock()
		var stale, missing []string
		for n := range have {
			if _, ok := s.topics[n]; !ok {
				stale = append(stale, n)
			}
		}
		for n := range s.topics {
			if _, ok := have[n]; !ok {
				missing = append(missing, n)
			}
		}
		if len(stale) == 0 && len(missing) == 0 {
			gen := s.setConnLocked(dc)
			s.mu.Unlock()
			s.b.log.Debug("redis broker: shard subscriber connection ready", slog.String("shard", s.url), slog.Int("topics", len(have)), slog.Uint64("gen", gen))
			return gen, nil
		}
		s.mu.Unlock()
		if len(stale) > 0 {
			ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.SubscribeTimeout)
			_ = dc.Do(ctx, dc.B().Unsubscribe().Channel(stale...).Build()).Error()
			cancel()
			for _, n := range stale {
				delete(have, n)
			}
		}
		if err := s.subscribeOn(dc, missing); err != nil {
			return 0, err
		}
		for _, n := range missing {
			have[n] = struct{}{}
		}
	}
}

// subscribeOn subscribes dc to names, a batch at a time.
func (s *shard) subscribeOn(dc rueidis.DedicatedClient, names []string) error {
	for len(names) > 0 {
		batch := names[:min(len(names), subscribeBatch)]
		names = names[len(batch):]
		ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.SubscribeTimeout)
		err := dc.Do(ctx, dc.B().Subscribe().Channel(batch...).Build()).Error()
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
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
// connection (a connection built later subscribes it by itself). On failure
// the topic is removed again.
func (s *shard) subscribe(ctx context.Context, name string, t broker.Topic) error {
	s.want(name, t)
	err := s.confirm(ctx, name, t)
	if err != nil && !errors.Is(err, broker.ErrClosed) {
		s.forget(name)
	}
	return err
}

// want adds topics to the wanted set without waiting: the live connection,
// if any, is not told (see subscribeLive); the next connection subscribes
// them.
func (s *shard) want(name string, t broker.Topic) {
	s.mu.Lock()
	s.topics[name] = t
	s.mu.Unlock()
}

// has reports whether the topic is wanted here.
func (s *shard) has(name string) bool {
	s.mu.RLock()
	_, ok := s.topics[name]
	s.mu.RUnlock()
	return ok
}

// forget removes a topic from the wanted set and returns the live
// connection (nil while rebuilding) so the caller can unsubscribe it there.
func (s *shard) forget(name string) rueidis.DedicatedClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.topics, name)
	return s.conn
}

// confirm returns once Redis confirmed a wanted topic on the live
// connection, waiting for a connection if there is none.
func (s *shard) confirm(ctx context.Context, name string, t broker.Topic) error {
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
			if lastErr == nil {
				lastErr = errors.New("shard unreachable")
			}
			return fmt.Errorf("redisbroker: subscribe %s on %s: %w (%w)", t.Channel, s.url, ctx.Err(), lastErr)
		}
	}
}

// subscribeLive subscribes wanted topics on the live connection, if there
// is one (a connection being built subscribes them itself). When Redis does
// not confirm, the connection is rebuilt, which subscribes every wanted
// topic: a topic is never left wanted but unsubscribed on a live
// connection.
func (s *shard) subscribeLive(names []string) {
	s.mu.RLock()
	dc, gen := s.conn, s.gen
	s.mu.RUnlock()
	if dc == nil || len(names) == 0 {
		return
	}
	if err := s.subscribeOn(dc, names); err != nil && s.b.ctx.Err() == nil {
		s.b.log.Warn("redis broker: subscribing moved channels failed; rebuilding the shard's subscriptions",
			slog.String("shard", s.url), slog.Any("error", err))
		s.condemn(gen)
	}
}

// unsubscribeLive unsubscribes names (no longer wanted) from the live
// connection; errors are ignored (their messages are dropped anyway).
func (s *shard) unsubscribeLive(names []string) {
	s.mu.RLock()
	dc := s.conn
	s.mu.RUnlock()
	for dc != nil && len(names) > 0 {
		batch := names[:min(len(names), subscribeBatch)]
		names = names[len(batch):]
		ctx, cancel := context.WithTimeout(s.b.ctx, s.b.opts.SubscribeTimeout)
		_ = dc.Do(ctx, dc.B().Unsubscribe().Channel(batch...).Build()).Error()
		cancel()
	}
}

// condemn asks the manager to rebuild the connection of generation gen
// (the prober found it deaf, or it did not confirm a subscription).
func (s *shard) condemn(gen uint64) {
	s.mu.Lock()
	s.condemned = max(s.condemned, gen)
	s.mu.Unlock()
	select {
	case s.rebuild <- struct{}{}:
	default:
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
		s.condemn(gen)
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
		s.b.suspect(s.idx)
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
		Health: s.b.be.Ring.Health(s.idx),
	}
}
