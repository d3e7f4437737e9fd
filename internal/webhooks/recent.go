package webhooks

import (
	"sync"
	"time"
)

// RecentSize is how many delivery attempts Recent remembers.
const RecentSize = 50

// Delivery is one attempt to post a webhook request, for the dashboard.
type Delivery struct {
	Time     time.Time     `json:"time"`
	App      string        `json:"app"`
	URL      string        `json:"url"` // any password redacted
	Events   int           `json:"events"`
	Names    []string      `json:"names"` // event types in the request, each once
	Attempt  int           `json:"attempt"`
	OK       bool          `json:"ok"`
	Status   string        `json:"status"` // "ok" or the error
	Duration time.Duration `json:"duration_ns"`
}

// recent is a bounded ring of the last RecentSize deliveries.
type recent struct {
	mu   sync.Mutex
	buf  [RecentSize]Delivery
	next int
	n    int
}

func (r *recent) add(d Delivery) {
	r.mu.Lock()
	r.buf[r.next] = d
	r.next = (r.next + 1) % RecentSize
	r.n = min(r.n+1, RecentSize)
	r.mu.Unlock()
}

// list returns the deliveries, newest first.
func (r *recent) list() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Delivery, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.buf[(r.next-i+RecentSize)%RecentSize])
	}
	return out
}

// Recent returns the last RecentSize delivery attempts of every app, newest
// first.
func (d *Dispatcher) Recent() []Delivery { return d.recent.list() }

// note records one attempt in the ring and reports it to Config.OnAttempt.
func (t *target) note(batch []*event, attempt int, took time.Duration, err error) {
	d := t.app.d
	if d.cfg.OnAttempt != nil {
		d.cfg.OnAttempt(t.app.id, took, err == nil)
	}
	var names []string
	for _, e := range batch {
		seen := false
		for _, n := range names {
			if n == e.name {
				seen = true
				break
			}
		}
		if !seen {
			names = append(names, e.name)
		}
	}
	status := "ok"
	if err != nil {
		status = err.Error()
		if len(status) > 200 {
			status = status[:200]
		}
	}
	d.recent.add(Delivery{Time: time.Now(), App: t.app.id, URL: t.shown, Events: len(batch), Names: names,
		Attempt: attempt, OK: err == nil, Status: status, Duration: took})
}
