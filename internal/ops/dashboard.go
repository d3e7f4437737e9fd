package ops

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/webhooks"
)

//go:embed dashboard.html
var dashboardHTML []byte

const (
	historyLen   = 300 // samples of one second: the charts' five minutes
	maxViewers   = 16  // concurrent /dashboard/events streams
	topChannels  = 15
	recentShown  = 20
	snapshotTime = 2 * time.Second // bound on the state queries of one snapshot
)

type sample struct {
	T           int64   `json:"t"` // unix ms
	Connections int64   `json:"connections"`
	Delivered   uint64  `json:"delivered"`
	Rate        float64 `json:"rate"` // delivered messages per second since the previous sample
}

type dashboard struct {
	m       *Metrics
	mu      sync.Mutex
	hist    []sample // oldest first, at most historyLen
	viewers int
	quit    chan struct{}
	once    sync.Once
	started sync.Once
	wg      sync.WaitGroup
}

func newDashboard(m *Metrics) *dashboard {
	return &dashboard{m: m, quit: make(chan struct{})}
}

func (d *dashboard) start() {
	d.started.Do(func() {
		d.wg.Add(1)
		go d.sampler()
	})
}

func (d *dashboard) close() {
	d.once.Do(func() { close(d.quit) })
	d.wg.Wait()
}

func (d *dashboard) sampler() {
	defer d.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	d.sample()
	for {
		select {
		case <-d.quit:
			return
		case <-t.C:
			d.sample()
		}
	}
}

func (d *dashboard) counts() (conns int64, delivered uint64) {
	if n := d.m.src.Node; n != nil {
		conns = n.Connections("")
		if n.Hub != nil {
			delivered = n.Hub.Delivered()
		}
	}
	return
}

func (d *dashboard) sample() {
	now := time.Now()
	conns, delivered := d.counts()
	s := sample{T: now.UnixMilli(), Connections: conns, Delivered: delivered}
	d.mu.Lock()
	if k := len(d.hist); k > 0 {
		prev := d.hist[k-1]
		if dt := float64(s.T-prev.T) / 1000; dt > 0 && delivered >= prev.Delivered {
			s.Rate = float64(delivered-prev.Delivered) / dt
		}
	}
	if len(d.hist) == historyLen {
		copy(d.hist, d.hist[1:])
		d.hist = d.hist[:historyLen-1]
	}
	d.hist = append(d.hist, s)
	d.mu.Unlock()
}

type appRow struct {
	ID          string          `json:"id"`
	Connections int64           `json:"connections"`
	Channels    int             `json:"channels"`
	Webhooks    *webhooks.Stats `json:"webhooks,omitempty"`
}

type channelRow struct {
	App         string `json:"app"`
	Channel     string `json:"channel"`
	Subscribers int    `json:"subscribers"`
}

type snapshot struct {
	T            int64               `json:"t"`
	Delivered    uint64              `json:"delivered"`
	Connections  int64               `json:"connections"`
	APIPublished uint64              `json:"api_published"`
	ClientEvents uint64              `json:"client_events"`
	BytesIn      int64               `json:"bytes_in"`
	BytesOut     int64               `json:"bytes_out"`
	History      []sample            `json:"history"`
	Apps         []appRow            `json:"apps"`
	Channels     []channelRow        `json:"channels"`
	Webhooks     []webhooks.Delivery `json:"webhooks"`
}

func (d *dashboard) snapshot(ctx context.Context) *snapshot {
	src := &d.m.src
	s := &snapshot{T: time.Now().UnixMilli(), Apps: []appRow{}, Channels: []channelRow{}, Webhooks: []webhooks.Delivery{}}
	s.Connections, s.Delivered = d.counts()
	d.mu.Lock()
	s.History = append([]sample(nil), d.hist...)
	d.mu.Unlock()
	if e := src.Edge; e != nil {
		st := e.Stats()
		s.BytesIn, s.BytesOut = st.BytesIn, st.BytesOut
	}
	n := src.Node
	if n != nil {
		c := n.Counters()
		s.APIPublished, s.ClientEvents = c.APIPublished, c.ClientEvents
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTime)
	defer cancel()
	for _, a := range src.Apps {
		row := appRow{ID: a.ID}
		if n != nil {
			row.Connections = n.Connections(a.ID)
			if n.Occupancy != nil {
				if chs, err := n.Occupancy.Channels(ctx, a.ID, ""); err == nil {
					row.Channels = len(chs)
					for name, count := range chs {
						s.Channels = append(s.Channels, channelRow{App: a.ID, Channel: name, Subscribers: count})
					}
				}
			}
		}
		if src.Webhooks != nil && len(a.Webhooks) > 0 {
			st := src.Webhooks.Stats(a.ID)
			row.Webhooks = &st
		}
		s.Apps = append(s.Apps, row)
	}
	sort.Slice(s.Channels, func(i, j int) bool {
		a, b := s.Channels[i], s.Channels[j]
		if a.Subscribers != b.Subscribers {
			return a.Subscribers > b.Subscribers
		}
		if a.App != b.App {
			return a.App < b.App
		}
		return a.Channel < b.Channel
	})
	if len(s.Channels) > topChannels {
		s.Channels = s.Channels[:topChannels]
	}
	if src.Webhooks != nil {
		r := src.Webhooks.Recent()
		if len(r) > recentShown {
			r = r[:recentShown]
		}
		s.Webhooks = r
	}
	return s
}

func (d *dashboard) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	_, _ = w.Write(dashboardHTML)
}

// events streams a snapshot every second as server-sent events until the
// client leaves or the server shuts down.
func (d *dashboard) events(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	if d.viewers >= maxViewers {
		d.mu.Unlock()
		http.Error(w, "Herald dashboard: too many open dashboards", http.StatusServiceUnavailable)
		return
	}
	d.viewers++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.viewers--
		d.mu.Unlock()
	}()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		b, _ := json.Marshal(d.snapshot(r.Context()))
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.quit:
			return
		case <-t.C:
		}
	}
}

type member struct {
	ID   string          `json:"id"`
	Info json.RawMessage `json:"info,omitempty"`
}

// presence lists the members of ?app=&channel=.
func (d *dashboard) presence(w http.ResponseWriter, r *http.Request) {
	n := d.m.src.Node
	app, ch := r.URL.Query().Get("app"), r.URL.Query().Get("channel")
	if n == nil || n.Presence == nil || n.Apps.ByID(app) == nil {
		http.Error(w, "unknown app", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), snapshotTime)
	defer cancel()
	ms, err := n.Presence.Members(ctx, app, ch)
	if err != nil {
		http.Error(w, "presence: "+err.Error(), http.StatusBadGateway)
		return
	}
	out := make([]member, 0, len(ms))
	for _, m := range ms {
		out = append(out, member{ID: m.UserID, Info: m.UserInfo})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
