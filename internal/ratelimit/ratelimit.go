// Package ratelimit holds the token buckets behind Herald's per-app and
// per-connection limits.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Bucket is a token bucket refilled at a rate per second up to a burst. The
// zero value is full. It is not safe for concurrent use; Keyed wraps it.
type Bucket struct {
	tokens float64
	last   time.Time // zero until the first Take
}

// Take removes one token if there is one. It returns whether it did, the
// tokens left, and when a token will next be available if it did not.
func (b *Bucket) Take(now time.Time, rate, burst float64) (ok bool, remaining float64, retryAfter time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(burst, b.tokens+el.Seconds()*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, b.tokens, 0
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, b.tokens, wait
}

// Keyed is a set of buckets by key (an app id), safe for concurrent use. The
// keys are the configured apps, so the set is bounded.
type Keyed struct {
	mu      sync.Mutex
	buckets map[string]*Bucket
}

// Take takes a token from key's bucket; see Bucket.Take.
func (k *Keyed) Take(key string, now time.Time, rate, burst float64) (bool, float64, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buckets == nil {
		k.buckets = make(map[string]*Bucket)
	}
	b := k.buckets[key]
	if b == nil {
		b = &Bucket{}
		k.buckets[key] = b
	}
	return b.Take(now, rate, burst)
}
