package redisbroker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/redisx"
)

// Shard failover (shard mode only).
//
// Publish sends a topic's message to the shard Ring.Pick chooses: its home
// shard, or the next live shard in its rendezvous order while the home
// shard is Down. Every node decides Down for itself (redisx.Monitor), so
// during a change two nodes may briefly disagree about where a topic lives.
// To hear a publisher whatever its view, a subscriber subscribes each topic
// on every shard of its Ring.Cover: its rendezvous order up to the first
// shard that is Up. With every shard Up that is the home shard alone; when
// the home shard is Suspect (one probe failed, publishers have not moved
// yet), Down, or Recovering (publishers are moving back), it is the home
// shard and the next one(s). So a subscriber listens on the fallback before
// any publisher moves there, and keeps listening there for a grace period
// after publishers move back. A message is published once, to one shard, so
// listening on two never delivers it twice.
//
// The home shard stays in every topic's wanted set even while Down: its
// manager keeps reconnecting and resubscribes everything as soon as the
// shard accepts connections, before any publisher moves back (which takes
// several successful probes).

// watchRing applies every ring change in the background.
func (b *Broker) watchRing() {
	b.ringCh = make(chan struct{}, 1)
	b.stopWatch = b.be.Ring.Watch(func(redisx.Change) {
		select {
		case b.ringCh <- struct{}{}:
		default:
		}
	})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			select {
			case <-b.ringCh:
			case <-b.ctx.Done():
				return
			}
			b.rebalance()
		}
	}()
}

// suspect marks shard i Suspect on the evidence of a lost subscriber
// connection: a killed Redis drops every node's connection at the same
// moment, so every subscriber covers the fallback at once, well before any
// publisher's Monitor declares the shard Down.
func (b *Broker) suspect(i int) {
	if b.opts.lateCover {
		return
	}
	if b.ctx.Err() == nil && !b.be.Cluster && b.be.Ring.MarkSuspect(i) {
		b.log.Info("redis broker: shard suspect, also subscribing its channels on the next shard", slog.String("shard", b.shards[i].url))
	}
}

// cover is the shards on which to subscribe key (Ring.Cover). With
// Options.lateCover (tests only, to measure what covering early saves) it is
// the shards up to the one publishers use now, as if subscribers simply
// followed their own ring.
func (b *Broker) cover(key string, buf []int) []int {
	if !b.opts.lateCover {
		return b.be.Ring.Cover(key, buf)
	}
	base := len(buf)
	buf = b.be.Ring.Order(key, buf)
	for i, sh := range buf[base:] {
		if b.be.Ring.Health(sh) != redisx.Down {
			return buf[:base+i+1]
		}
	}
	return buf
}

type named struct {
	name string
	t    broker.Topic
}

// rebalance makes every shard's wanted set match the covers of the current
// ring: it adds the topics a shard now covers and drops the extra ones it no
// longer covers, then subscribes and unsubscribes them on the live
// connections, every shard in parallel. It returns how many subscriptions
// it added and dropped.
func (b *Broker) rebalance() (added, dropped int) {
	start := time.Now()
	n := len(b.shards)
	add := make([][]string, n)
	drop := make([][]string, n)
	b.subMu.Lock()
	snap := make([][]named, n)
	for i, sh := range b.shards {
		sh.mu.RLock()
		for name, t := range sh.topics {
			snap[i] = append(snap[i], named{name, t})
		}
		sh.mu.RUnlock()
	}
	var cover []int
	for i := range snap {
		for _, e := range snap[i] {
			cover = b.cover(redisx.ShardKey(e.t.App, e.t.Channel), cover[:0])
			if cover[0] == i { // its home shard
				for _, j := range cover[1:] {
					if !b.shards[j].has(e.name) {
						b.shards[j].want(e.name, e.t)
						add[j] = append(add[j], e.name)
					}
				}
				continue
			}
			// An extra subscription: keep it while the shard covers the
			// topic and the topic is wanted at home.
			if !slices.Contains(cover, i) || !b.shards[cover[0]].has(e.name) {
				b.shards[i].forget(e.name)
				drop[i] = append(drop[i], e.name)
			}
		}
	}
	b.subMu.Unlock()
	var wg sync.WaitGroup
	for j, sh := range b.shards {
		if len(add[j])+len(drop[j]) == 0 {
			continue
		}
		added += len(add[j])
		dropped += len(drop[j])
		b.st.moved.Add(uint64(len(add[j])))
		b.log.Info("redis broker: ring changed, moving subscriptions", slog.String("shard", sh.url),
			slog.String("health", b.be.Ring.Health(j).String()),
			slog.Int("subscribing", len(add[j])), slog.Int("releasing", len(drop[j])))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh.unsubscribeLive(drop[j])
			sh.subscribeLive(add[j])
		}()
	}
	wg.Wait()
	if added+dropped > 0 {
		b.log.Debug("redis broker: ring change applied", slog.Int("subscribed", added), slog.Int("released", dropped),
			slog.Duration("took", time.Since(start)))
	}
	return added, dropped
}

// subscribeCover adds t to every shard of its cover and waits for the first
// confirmation (from the home shard alone when the ring is healthy).
func (b *Broker) subscribeCover(ctx context.Context, t broker.Topic) error {
	name := channelName(t)
	var buf [4]int
	b.subMu.Lock()
	cover := b.cover(redisx.ShardKey(t.App, t.Channel), buf[:0])
	for _, j := range cover {
		b.shards[j].want(name, t)
	}
	b.subMu.Unlock()
	if len(cover) == 1 {
		err := b.shards[cover[0]].confirm(ctx, name, t)
		if err != nil && !errors.Is(err, broker.ErrClosed) {
			b.forgetAll(name)
		}
		b.log.Debug("redis broker: subscribe", slog.String("channel", t.Channel), slog.Any("cover", cover), slog.Any("error", err))
		return err
	}
	// Degraded: every shard but the Down ones confirms in the background;
	// the first confirmation is enough (the others stay wanted, and a live
	// connection that does not confirm is rebuilt).
	res := make(chan error, len(cover))
	waiting := 0
	for _, j := range cover {
		if b.be.Ring.Health(j) == redisx.Down {
			// Not waited for: its manager subscribes every wanted topic
			// when it connects. But it may be connected already (Redis is
			// back, the Monitor has not counted enough good probes yet);
			// a topic added to a live connection's wanted set must be
			// subscribed on it by whoever added it (see ready), or it stays
			// wanted but unsubscribed there and its events are lost once
			// the ring moves it back home.
			sh := b.shards[j]
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				sh.subscribeLive([]string{name})
			}()
			continue
		}
		waiting++
		sh := b.shards[j]
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			cctx, cancel := context.WithTimeout(b.ctx, b.opts.SubscribeTimeout)
			defer cancel()
			err := sh.confirm(cctx, name, t)
			if err != nil && !errors.Is(err, broker.ErrClosed) && sh.has(name) {
				sh.mu.RLock()
				dc, gen := sh.conn, sh.gen
				sh.mu.RUnlock()
				if dc != nil {
					sh.condemn(gen)
				}
			}
			res <- err
		}()
	}
	var errs []error
	for ; waiting > 0; waiting-- {
		select {
		case err := <-res:
			if err == nil {
				b.log.Debug("redis broker: subscribe (degraded ring)", slog.String("channel", t.Channel), slog.Any("cover", cover))
				return nil
			}
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			waiting = 1 // stop waiting
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("redisbroker: every shard of the topic is down"))
	}
	if !b.closed.Load() {
		b.forgetAll(name)
	}
	err := errors.Join(errs...)
	b.log.Debug("redis broker: subscribe failed (degraded ring)", slog.String("channel", t.Channel), slog.Any("cover", cover), slog.Any("error", err))
	return err
}

type liveSub struct {
	sh *shard
	dc rueidis.DedicatedClient
}

// forgetAll removes a topic from every shard's wanted set and returns the
// live connections it may still be subscribed on.
func (b *Broker) forgetAll(name string) []liveSub {
	var out []liveSub
	b.subMu.Lock()
	defer b.subMu.Unlock()
	for _, sh := range b.shards {
		if !sh.has(name) {
			continue
		}
		if dc := sh.forget(name); dc != nil {
			out = append(out, liveSub{sh, dc})
		}
	}
	return out
}
