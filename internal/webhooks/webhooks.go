// Package webhooks sends apps' webhooks (PROTOCOL.md §8). A Dispatcher is the
// hooks.Observer of a node: it turns channel and member transitions, client
// events, cache misses and subscription counts into signed POST requests to
// the URLs in each app's config.
//
// Pipeline, per app:
//
//   - channel_vacated and member_removed are held for Config.Delay (3 s). When
//     the channel is occupied again, or the user re-joins, within that time,
//     the held event is dropped and so is the channel_occupied/member_added
//     that cancelled it: from outside, nothing changed.
//   - Every other event, and held events when their time is up, go in order
//     into one bounded FIFO queue per configured webhook (only the types its
//     event_types selects). A full queue drops the new event and counts it.
//   - One worker goroutine per webhook sends its queue in order: one event per
//     request, or with the app's webhook_batching every event queued within
//     that window. A request that fails (no 2xx within 4 s) is retried with
//     exponential backoff and jitter for up to 5 minutes; the queue waits
//     meanwhile, so order is kept. A dead receiver only ever holds up its own
//     webhook's queue.
//
// Observer methods never block: they take a per-app lock that is never held
// across I/O, and enqueue without waiting.
package webhooks

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/hooks"
)

// Defaults for Config.
const (
	DefaultDelay          = 3 * time.Second
	DefaultRequestTimeout = 4 * time.Second
	DefaultRetryFor       = 5 * time.Minute
	DefaultRetryMin       = time.Second
	DefaultRetryMax       = time.Minute
	DefaultQueueSize      = 10_000
	DefaultMaxBatch       = 100
)

// Config tunes a Dispatcher; the zero value gives the documented defaults.
// Tests shorten the times.
type Config struct {
	// Delay holds channel_vacated and member_removed before sending them, so
	// that a quick re-join cancels them. Default 3 s; negative means no hold.
	Delay time.Duration
	// RequestTimeout bounds one POST, response headers and body included.
	// Default 4 s.
	RequestTimeout time.Duration
	// RetryFor is how long after its first attempt a request is retried
	// before its events are given up (counted in Stats.Failed). Default 5 min.
	RetryFor time.Duration
	// RetryMin is the wait after the first failure; each further failure
	// doubles it, up to RetryMax. Every wait is drawn at random from
	// [w/2, w] (jitter). Defaults 1 s and 1 min.
	RetryMin, RetryMax time.Duration
	// QueueSize bounds the events waiting for each webhook URL, and the
	// events each app holds for Delay. Past it new events are dropped and
	// counted in Stats.Dropped. Default 10,000.
	QueueSize int
	// MaxBatch caps the events of one request when the app batches. Default 100.
	MaxBatch int
	// StillTrue, when set, is asked when a held channel_vacated or
	// member_removed is due: it reports whether the channel is still vacated
	// (userID "") or the user still gone. In a cluster the re-join may have
	// happened on another node, which this node's hold cannot see; such
	// events are then dropped (counted in Stats.Cancelled). It may do I/O and
	// is called without locks, from the app's clock goroutine.
	StillTrue func(app, channel, userID string) bool
	// Client sends the requests. Default: a client of its own that does not
	// follow redirects (a 3xx is a failure, so signed bodies never go to
	// another address). Its Timeout, if any, applies on top of RequestTimeout.
	Client *http.Client
	// OnAttempt, when set, is told about every request attempt (metrics). It
	// must not block.
	OnAttempt func(app string, took time.Duration, ok bool)
}

func (c *Config) applyDefaults() {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Delay, DefaultDelay)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.RetryFor, DefaultRetryFor)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
}

// Stats counts webhook events. Sent, Dropped and Failed count per webhook
// URL: an event for two URLs counts twice.
type Stats struct {
	// Sent counts events in requests answered with a 2xx.
	Sent uint64
	// Dropped counts events refused because a queue, or the hold list, was full.
	Dropped uint64
	// Failed counts events given up after RetryFor, or abandoned at shutdown.
	Failed uint64
	// Retries counts failed attempts that were retried.
	Retries uint64
	// Cancelled counts vacated/removed events cancelled by a quick re-join
	// (each cancels the occupied/added event that followed it too).
	Cancelled uint64
	// Queued is the number of events waiting in queues now.
	Queued int
	// Held is the number of events waiting out Delay now.
	Held int
}

// Dispatcher implements hooks.Observer by sending webhooks. Build it with
// New and stop it with Close. All methods are safe for concurrent use.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	own    *http.Transport // the default client's transport, closed by Close
	apps   map[string]*app // immutable after New
	list   []*app

	stopping  chan struct{} // closed by Close: drain and exit
	abortCtx  context.Context
	abort     context.CancelFunc // cancels in-flight requests and retry waits
	closeOnce sync.Once
	wg        sync.WaitGroup // workers and clocks
	abandoned atomic.Uint64
	recent    recent
}

var _ hooks.Observer = (*Dispatcher)(nil)

// New starts a Dispatcher for the apps that have webhooks: one worker
// goroutine per webhook URL and, unless Delay is negative, one clock
// goroutine per app for held events. Apps are taken as validated by
// apps.Config.Validate; a webhook whose URL does not parse is skipped with an
// error in the log. log may be nil.
func New(cfg Config, list []*apps.App, log *slog.Logger) *Dispatcher {
	cfg.applyDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{cfg: cfg, log: log, apps: map[string]*app{}, stopping: make(chan struct{})}
	d.abortCtx, d.abort = context.WithCancel(context.Background())
	d.client = cfg.Client
	if d.client == nil {
		d.own = http.DefaultTransport.(*http.Transport).Clone()
		d.own.MaxIdleConnsPerHost = 4
		d.client = &http.Client{
			Transport:     d.own,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for _, ac := range list {
		if ac == nil || len(ac.Webhooks) == 0 {
			continue
		}
		a := newApp(d, ac)
		if len(a.targets) == 0 {
			continue
		}
		d.apps[a.id] = a
		d.list = append(d.list, a)
	}
	for _, a := range d.list {
		for _, t := range a.targets {
			d.wg.Add(1)
			go t.run()
		}
		if cfg.Delay > 0 {
			d.wg.Add(1)
			go a.clock()
		}
	}
	return d
}

// newApp prepares one app's webhook targets.
func newApp(d *Dispatcher, ac *apps.App) *app {
	a := &app{
		d: d, id: ac.ID, key: ac.Key, secret: ac.Secret, batching: ac.WebhookBatching.Duration,
		held: map[heldKey]*held{}, wake: make(chan struct{}, 1), interest: map[string]bool{},
	}
	for i := range ac.Webhooks {
		w := &ac.Webhooks[i]
		u, err := url.Parse(w.URL)
		if err != nil {
			d.log.Error("webhook URL does not parse; webhook skipped", "app", ac.ID, "webhook", i)
			continue
		}
		h := http.Header{}
		h.Set("User-Agent", "Herald-Webhooks/1")
		for k, v := range w.Headers {
			h.Set(k, v)
		}
		h.Set("Content-Type", "application/json")
		h.Set("X-Pusher-Key", ac.Key)
		t := &target{app: a, url: w.URL, shown: u.Redacted(), header: h, types: map[string]bool{},
			queue: make(chan *event, d.cfg.QueueSize)}
		for _, name := range apps.WebhookEventTypes() {
			if w.Wants(name) {
				t.types[name] = true
				a.interest[name] = true
			}
		}
		a.targets = append(a.targets, t)
	}
	// The paired types share their hold/cancel logic: a webhook that takes
	// only channel_occupied still sees one only when it is news.
	for _, pair := range [][2]string{
		{apps.WebhookChannelOccupied, apps.WebhookChannelVacated},
		{apps.WebhookMemberAdded, apps.WebhookMemberRemoved},
	} {
		either := a.interest[pair[0]] || a.interest[pair[1]]
		a.interest[pair[0]], a.interest[pair[1]] = either, either
	}
	return a
}

// ChannelOccupied implements hooks.Observer.
func (d *Dispatcher) ChannelOccupied(app, channel string) {
	if a := d.lookup(app, apps.WebhookChannelOccupied); a != nil {
		a.observe(&event{name: apps.WebhookChannelOccupied, channel: channel})
	}
}

// ChannelVacated implements hooks.Observer; the event is held for Delay.
func (d *Dispatcher) ChannelVacated(app, channel string) {
	if a := d.lookup(app, apps.WebhookChannelVacated); a != nil {
		a.observe(&event{name: apps.WebhookChannelVacated, channel: channel})
	}
}

// MemberAdded implements hooks.Observer.
func (d *Dispatcher) MemberAdded(app, channel, userID string) {
	if a := d.lookup(app, apps.WebhookMemberAdded); a != nil {
		a.observe(&event{name: apps.WebhookMemberAdded, channel: channel, userID: userID})
	}
}

// MemberRemoved implements hooks.Observer; the event is held for Delay.
func (d *Dispatcher) MemberRemoved(app, channel, userID string) {
	if a := d.lookup(app, apps.WebhookMemberRemoved); a != nil {
		a.observe(&event{name: apps.WebhookMemberRemoved, channel: channel, userID: userID})
	}
}

// ClientEvent implements hooks.Observer. userID is sent only when not empty
// (the session passes it on presence channels only).
func (d *Dispatcher) ClientEvent(app, channel, eventName, data, socketID, userID string) {
	if a := d.lookup(app, apps.WebhookClientEvent); a != nil {
		a.observe(&event{name: apps.WebhookClientEvent, channel: channel, event: eventName, data: data,
			socketID: socketID, userID: userID})
	}
}

// CacheMiss implements hooks.Observer.
func (d *Dispatcher) CacheMiss(app, channel string) {
	if a := d.lookup(app, apps.WebhookCacheMiss); a != nil {
		a.observe(&event{name: apps.WebhookCacheMiss, channel: channel})
	}
}

// SubscriptionCount implements hooks.Observer.
func (d *Dispatcher) SubscriptionCount(app, channel string, count int) {
	if a := d.lookup(app, apps.WebhookSubscriptionCount); a != nil {
		a.observe(&event{name: apps.WebhookSubscriptionCount, channel: channel, count: count})
	}
}

// lookup returns the app appID when one of its webhooks takes events of type
// name (the paired types count for each other), else nil.
func (d *Dispatcher) lookup(appID, name string) *app {
	if a := d.apps[appID]; a != nil && a.interest[name] {
		return a
	}
	return nil
}

// Stats returns the counters of app, or of every app when app is "".
func (d *Dispatcher) Stats(app string) Stats {
	var s Stats
	for _, a := range d.list {
		if app != "" && a.id != app {
			continue
		}
		a.mu.Lock()
		s.Held += len(a.held)
		s.Cancelled += a.cancelled
		s.Dropped += a.heldDropped
		a.mu.Unlock()
		for _, t := range a.targets {
			s.Sent += t.sent.Load()
			s.Dropped += t.dropped.Load()
			s.Failed += t.failed.Load()
			s.Retries += t.retries.Load()
			s.Queued += len(t.queue)
		}
	}
	return s
}

// Close stops the Dispatcher: Observer calls are ignored from now on, held
// events are queued at once (the channels really were vacated), and the
// workers send what is queued, retrying as usual, until ctx ends. Then
// in-flight requests are cancelled and what is left is abandoned (counted in
// Stats.Failed); Close returns once every goroutine has exited, with an error
// wrapping ctx.Err() if any event was abandoned. Close may be called more
// than once.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		for _, a := range d.list {
			a.flush()
		}
		close(d.stopping)
	})
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.abort()
		<-done
	}
	if d.own != nil {
		d.own.CloseIdleConnections()
	}
	if n := d.abandoned.Load(); n > 0 {
		d.log.Warn("webhook events abandoned at shutdown", "events", n)
		return fmt.Errorf("webhooks: %d events abandoned at shutdown: %w", n, ctx.Err())
	}
	return nil
}
