package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/auth"
)

// dropLogEvery rate-limits the "queue full" warning per webhook.
const dropLogEvery = 10 * time.Second

// errAborted marks a delivery cut short by Close.
var errAborted = errors.New("webhooks: shutting down")

// target is one configured webhook URL of an app, with its queue and worker.
type target struct {
	app    *app
	url    string
	shown  string      // url with any password redacted, for logs
	header http.Header // everything but X-Pusher-Signature; read-only
	types  map[string]bool
	queue  chan *event // bounded; see Config.QueueSize

	sent, dropped, failed, retries atomic.Uint64
	dropLoggedAt                   atomic.Int64 // unix ns of the last drop warning
}

// noteDrop counts a dropped event and reports whether a warning is due.
func (t *target) noteDrop() bool {
	t.dropped.Add(1)
	now := time.Now().UnixNano()
	last := t.dropLoggedAt.Load()
	return now-last >= int64(dropLogEvery) && t.dropLoggedAt.CompareAndSwap(last, now)
}

// run is the target's worker: it sends the queue in order until the
// Dispatcher stops, then sends what is left and exits.
func (t *target) run() {
	d := t.app.d
	defer d.wg.Done()
	for {
		select {
		case ev := <-t.queue:
			t.deliver(t.collect(ev))
		case <-d.stopping:
			for {
				select {
				case ev := <-t.queue:
					t.deliver(t.collect(ev))
				default:
					return
				}
			}
		}
	}
}

// collect returns first plus, when the app batches, every event queued
// within the batching window after it (at most MaxBatch in all; once
// stopping, only what is already queued).
func (t *target) collect(first *event) []*event {
	batch := []*event{first}
	window := t.app.batching
	if window <= 0 {
		return batch
	}
	d := t.app.d
	timer := time.NewTimer(window)
	defer timer.Stop()
	for len(batch) < d.cfg.MaxBatch {
		select {
		case ev := <-t.queue:
			batch = append(batch, ev)
			continue
		default:
		}
		select {
		case ev := <-t.queue:
			batch = append(batch, ev)
		case <-timer.C:
			return batch
		case <-d.stopping:
			for len(batch) < d.cfg.MaxBatch {
				select {
				case ev := <-t.queue:
					batch = append(batch, ev)
				default:
					return batch
				}
			}
		}
	}
	return batch
}

// deliver sends one request for batch, retrying failures with backoff until
// RetryFor has passed since the first attempt or the Dispatcher aborts.
func (t *target) deliver(batch []*event) {
	d := t.app.d
	n := uint64(len(batch))
	b := body(batch)
	sig := auth.WebhookSignature(t.app.secret, b)
	start := time.Now()
	wait := d.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		err := t.post(b, sig)
		if !errors.Is(err, errAborted) {
			t.note(batch, attempt, time.Since(t0), err)
		}
		if err == nil {
			t.sent.Add(n)
			return
		}
		if d.abortCtx.Err() != nil {
			t.failed.Add(n)
			d.abandoned.Add(n)
			return
		}
		pause := wait/2 + rand.N(wait/2+1) // jitter: [wait/2, wait]
		if time.Since(start)+pause > d.cfg.RetryFor {
			t.failed.Add(n)
			d.log.Warn("webhook given up", "app", t.app.id, "url", t.shown, "events", n,
				"attempts", attempt, "err", err)
			return
		}
		t.retries.Add(1)
		d.log.Debug("webhook failed; retrying", "app", t.app.id, "url", t.shown, "attempt", attempt,
			"retry_in", pause, "err", err)
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-d.abortCtx.Done():
			timer.Stop()
			t.failed.Add(n)
			d.abandoned.Add(n)
			return
		}
		wait = min(wait*2, d.cfg.RetryMax)
	}
}

// post makes one attempt; nil means a 2xx answer.
func (t *target) post(b []byte, sig string) error {
	d := t.app.d
	ctx, cancel := context.WithTimeout(d.abortCtx, d.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("webhooks: request: %w", err)
	}
	req.Header = t.header.Clone()
	req.Header.Set("X-Pusher-Signature", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		if d.abortCtx.Err() != nil {
			return errAborted
		}
		return fmt.Errorf("webhooks: post: %w", err) // net/http strips any password from the URL
	}
	// Read a little of the body so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhooks: receiver answered %s", resp.Status)
	}
	return nil
}
