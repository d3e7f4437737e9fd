package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// publisher triggers events through the signed HTTP API.
type publisher struct {
	target Target
	client *http.Client
	base   string

	published atomic.Int64 // events accepted (2xx), one per channel
	requests  atomic.Int64
	errs      atomic.Int64
	lagged    atomic.Int64 // scheduled publishes dropped because every sender was busy
	firstErr  atomic.Pointer[string]

	mu      sync.Mutex
	perChan map[int]int64 // events accepted per channel index
}

func newPublisher(t Target, conns int) *publisher {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &publisher{target: t, client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		base: "http://" + t.Addr, perChan: make(map[int]int64)}
}

func (p *publisher) close() { p.client.CloseIdleConnections() }

type apiEvent struct {
	Name    string `json:"name"`
	Channel string `json:"channel"`
	Data    string `json:"data"`
}

// trigger publishes one event to one channel (POST /apps/{id}/events), or a
// batch (POST /apps/{id}/batch_events) when len(evs) > 1. chIdx is the index of
// the channel every event goes to, for the loss accounting.
func (p *publisher) trigger(ctx context.Context, chIdx int, evs []apiEvent) error {
	var path string
	var body []byte
	if len(evs) == 1 {
		path = "/apps/" + p.target.AppID + "/events"
		body, _ = json.Marshal(evs[0])
	} else {
		path = "/apps/" + p.target.AppID + "/batch_events"
		body, _ = json.Marshal(map[string]any{"batch": evs})
	}
	q := auth.SignRequest("POST", path, nil, body, p.target.Key, p.target.Secret, time.Now())
	req, err := http.NewRequestWithContext(ctx, "POST", p.base+path+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	p.requests.Add(1)
	resp, err := p.client.Do(req)
	if err != nil {
		p.fail(err.Error())
		return err
	}
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(rb))
		p.fail(err.Error())
		return err
	}
	p.published.Add(int64(len(evs)))
	if chIdx >= 0 {
		p.mu.Lock()
		p.perChan[chIdx] += int64(len(evs))
		p.mu.Unlock()
	}
	return nil
}

func (p *publisher) fail(msg string) {
	if p.errs.Add(1) == 1 {
		p.firstErr.Store(&msg)
	}
}

func (p *publisher) firstError() string {
	if s := p.firstErr.Load(); s != nil {
		return *s
	}
	return ""
}

// channelCounts returns and clears the per-channel accepted counts.
func (p *publisher) channelCounts() map[int]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.perChan
	p.perChan = make(map[int]int64)
	return m
}

// paced calls fn(seq) rate times per second for d, open loop: each call runs
// on one of senders goroutines; when all are busy the call is dropped and
// counted in lagged (so the achieved rate shows the publisher could not keep
// up, instead of hiding it).
func (p *publisher) paced(ctx context.Context, rate float64, d time.Duration, senders int, fn func(seq int64)) {
	jobs := make(chan int64, senders)
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				fn(s)
			}
		}()
	}
	start := time.Now()
	var seq int64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-t.C:
			el := now.Sub(start)
			if el >= d {
				el = d
			}
			due := int64(el.Seconds() * rate)
			for ; seq < due; seq++ {
				select {
				case jobs <- seq:
				default:
					p.lagged.Add(1)
				}
			}
			if el >= d {
				break loop
			}
		}
	}
	close(jobs)
	wg.Wait()
}
