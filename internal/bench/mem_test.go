package bench

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// TestServerHeapPerConnection measures the live heap an in-process Herald
// holds per subscribed connection (the connections come from a worker
// process, so the client's memory is not counted), for a connection on a
// channel of its own and for one on a shared channel. The bound keeps the
// per-connection state from growing back: RSS per connection is about 2.2×
// the live heap (GOGC=100 and the scavenger's 10% slack), and the target is
// 2 KB of RSS.
func TestServerHeapPerConnection(t *testing.T) {
	profile := os.Getenv("BENCH_HEAP_PROFILE") // write a heap profile after each step
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	addr := startHerald(t)
	opts := Options{Target: Target{Addr: addr, AppID: "app-id", Key: "app-key", Secret: "app-secret"},
		Workers: 1, Parallel: 16, Src: []string{"127.0.0.1", "127.0.0.2"}}
	r, err := newRunner(opts, 5000)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	heap := func() int64 {
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 2000
	measure := func(name string, spec ChannelSpec, limit int64) {
		h0 := heap()
		c, err := r.connect(n, spec, 0)
		if err != nil || c.Failed > 0 {
			t.Fatalf("connect: %v, %d failed: %s", err, c.Failed, c.FirstErr)
		}
		per := (heap() - h0) / n
		if profile != "" {
			f, _ := os.Create(profile + "." + spec.Prefix + "pb")
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		t.Logf("%s: %d B of live heap per connection", name, per)
		if per > limit {
			t.Errorf("%s: %d B per connection, want at most %d", name, per, limit)
		}
	}
	// Warm up: pools, maps and the first shards grow.
	if _, err := r.connect(500, ChannelSpec{Prefix: "warm-", Count: 1 << 30}, 0); err != nil {
		t.Fatal(err)
	}
	measure("own channel", ChannelSpec{Prefix: "own-", Count: 1 << 30}, 1400)
	measure("shared channel", ChannelSpec{Prefix: "shared-", Count: 1}, 1400)
}
