package redisx

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// MonitorOptions tune a Monitor. Zero values take the defaults.
type MonitorOptions struct {
	// Interval is how often each shard is probed (default 500ms).
	Interval time.Duration
	// Timeout bounds one probe (default 1s).
	Timeout time.Duration
	// DownAfter is how many failed probes in a row make a shard Down
	// (default 2); the first makes it Suspect.
	DownAfter int
	// UpAfter is how many successful probes in a row bring a Down shard back
	// (default 3, so a shard must answer for at least a second).
	UpAfter int
	// Grace is how long a shard stays Recovering before it is Up again
	// (default 5s): long enough for every node to have noticed it is back.
	Grace time.Duration
	// Probe checks shard i; default: PING on a connection of its own that
	// never retries, so that a refused connection fails at once.
	Probe func(ctx context.Context, shard int) error
	// Log receives the health changes (Down and back at warn). Default:
	// discard.
	Log *slog.Logger
}

func (o *MonitorOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 2
	}
	if o.UpAfter <= 0 {
		o.UpAfter = 3
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Monitor probes every shard of a Backend and keeps its Ring's health up to
// date. Each node runs its own: there is no coordinator, and no ring state
// stored anywhere (see README "Shard failover").
type Monitor struct {
	b    *Backend
	opts MonitorOptions

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	probes []rueidis.Client // default probe clients, created on first use
}

// StartMonitor starts probing b's shards (not for a Redis Cluster, which
// fails over by itself: it then returns a Monitor that does nothing). Stop
// it before closing b.
func (b *Backend) StartMonitor(o MonitorOptions) *Monitor {
	o.defaults()
	m := &Monitor{b: b, opts: o, probes: make([]rueidis.Client, len(b.Clients))}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if o.Probe == nil {
		m.opts.Probe = m.ping
	}
	if b.Cluster {
		return m
	}
	for i := range b.Clients {
		m.wg.Add(1)
		go m.run(i)
	}
	return m
}

// Stop ends the probes and waits for them.
func (m *Monitor) Stop() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, c := range m.probes {
		if c != nil {
			c.Close()
			m.probes[i] = nil
		}
	}
}

// ping is the default probe: PING on a dedicated client without retries.
func (m *Monitor) ping(ctx context.Context, i int) error {
	m.mu.Lock()
	c := m.probes[i]
	m.mu.Unlock()
	if c == nil {
		if len(m.b.opts) <= i {
			return errors.New("redisx: no client options for shard")
		}
		opt := m.b.opts[i]
		opt.DisableRetry = true
		opt.DisableCache = true
		var err error
		if c, err = rueidis.NewClient(opt); err != nil {
			return err
		}
		m.mu.Lock()
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			c.Close()
			return m.ctx.Err()
		}
		m.probes[i] = c
		m.mu.Unlock()
	}
	err := c.Do(ctx, c.B().Ping().Build()).Error()
	if _, redisErr := rueidis.IsRedisErr(err); err != nil && !redisErr {
		// A connection that timed out may be wedged: dial afresh next time.
		m.mu.Lock()
		if m.probes[i] == c {
			m.probes[i] = nil
		}
		m.mu.Unlock()
		go c.Close()
	}
	return err
}

// run probes shard i until Stop and moves it through the Health states.
func (m *Monitor) run(i int) {
	defer m.wg.Done()
	r := m.b.Ring
	name := m.b.Names[i]
	log := m.opts.Log.With(slog.String("shard", name))
	fails, oks := 0, 0
	var recovering time.Time // when the shard last became Recovering
	for {
		start := time.Now()
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
		err := m.opts.Probe(ctx, i)
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		h := r.Health(i)
		inGrace := !recovering.IsZero() && time.Since(recovering) < m.opts.Grace
		if err == nil {
			fails = 0
			oks++
			switch {
			case h == Suspect && inGrace:
				r.SetHealth(i, Recovering)
			case h == Suspect:
				r.SetHealth(i, Up)
				log.Info("redis shard answering again")
			case h == Down && oks >= m.opts.UpAfter:
				recovering = time.Now()
				r.SetHealth(i, Recovering)
				log.Warn("redis shard is back: its channels move back to it", slog.Int("probes_ok", oks))
			case h == Recovering && !inGrace:
				r.SetHealth(i, Up)
				log.Info("redis shard up; fallback subscriptions released")
			}
		} else {
			oks = 0
			fails++
			switch {
			case h != Down && fails >= m.opts.DownAfter:
				r.SetHealth(i, Down)
				log.Warn("redis shard not answering: its channels move to the next shard on the ring",
					slog.Int("failed_probes", fails), slog.Any("error", err))
			case h == Up || h == Recovering:
				r.SetHealth(i, Suspect)
				log.Info("redis shard probe failed", slog.Any("error", err))
			}
		}
		wait := m.opts.Interval - time.Since(start)
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
			return
		}
	}
}
