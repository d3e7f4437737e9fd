package bench

import (
	"math/bits"
	"sync/atomic"
)

// Histogram counts latencies in microseconds in log-linear buckets: exact
// below 64 µs, then 64 buckets per power of two (at most 1.6 % error). It is
// safe for concurrent use (atomic counters) and mergeable.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histBuckets = histSub + 40*histSub // values up to 2^46 µs
)

func histBucket(us int64) int {
	if us < 0 {
		us = 0
	}
	v := uint64(us)
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	i := histSub + shift*histSub + int(v>>uint(shift)) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue returns a representative value (the middle) of bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := (i - histSub) / histSub
	m := int64((i-histSub)%histSub + histSub)
	lo := m << uint(shift)
	return lo + (int64(1)<<uint(shift))/2
}

// Record adds one latency in microseconds.
func (h *Histogram) Record(us int64) { h.counts[histBucket(us)].Add(1) }

// Snapshot returns the non-zero buckets as [bucket, count] pairs.
func (h *Histogram) Snapshot() [][2]int64 {
	var out [][2]int64
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			out = append(out, [2]int64{int64(i), int64(n)})
		}
	}
	return out
}

// Reset zeroes the histogram.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
}

// HistData is a merged, non-concurrent histogram.
type HistData struct {
	counts map[int]int64
	n      int64
	max    int64
}

// Merge adds a snapshot.
func (d *HistData) Merge(snap [][2]int64) {
	if d.counts == nil {
		d.counts = make(map[int]int64)
	}
	for _, p := range snap {
		i := int(p[0])
		if i < 0 || i >= histBuckets || p[1] <= 0 {
			continue
		}
		d.counts[i] += p[1]
		d.n += p[1]
		if v := histValue(i); v > d.max {
			d.max = v
		}
	}
}

// Count returns the number of recorded values.
func (d *HistData) Count() int64 { return d.n }

// Quantile returns the q-quantile (0..1) in microseconds.
func (d *HistData) Quantile(q float64) int64 {
	if d.n == 0 {
		return 0
	}
	rank := int64(q*float64(d.n) + 0.5)
	rank = max(1, min(rank, d.n))
	var seen int64
	for i := 0; i < histBuckets; i++ {
		seen += d.counts[i]
		if seen >= rank {
			return histValue(i)
		}
	}
	return d.max
}

// Max returns the largest recorded value (bucket precision).
func (d *HistData) Max() int64 { return d.max }

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the percentiles.
func (d *HistData) Summary() Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{Count: d.n, P50: ms(d.Quantile(0.50)), P90: ms(d.Quantile(0.90)),
		P99: ms(d.Quantile(0.99)), P999: ms(d.Quantile(0.999)), Max: ms(d.Max())}
}
