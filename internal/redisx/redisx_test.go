package redisx

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/redistest"
)

func TestRingSpreadsAndMovesLittle(t *testing.T) {
	names := []string{"redis://a:1", "redis://b:1", "redis://c:1"}
	r3 := NewRing(names)
	r4 := NewRing(append(names, "redis://d:1"))
	const n = 30000
	counts := make([]int, 3)
	moved := 0
	for i := 0; i < n; i++ {
		k := ShardKey("app", fmt.Sprintf("channel-%d", i))
		a := r3.Pick(k)
		counts[a]++
		if b := r4.Pick(k); b != a {
			if b != 3 {
				t.Fatalf("key moved between old shards %d → %d", a, b)
			}
			moved++
		}
	}
	for i, c := range counts {
		if c < n/3-n/20 || c > n/3+n/20 {
			t.Fatalf("shard %d has %d of %d keys: %v", i, c, n, counts)
		}
	}
	// Adding a 4th shard should move about 1/4 of the keys.
	if moved < n/4-n/20 || moved > n/4+n/20 {
		t.Fatalf("adding a shard moved %d of %d keys, want about %d", moved, n, n/4)
	}
	// Same names, same placement (another process computes the same).
	if NewRing(names).Pick("x") != r3.Pick("x") {
		t.Fatal("ring not deterministic")
	}
}

func TestDialShards(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	be, err := Dial([]string{a.URL(), b.URL()}, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	used := map[int]bool{}
	for i := 0; i < 50; i++ {
		idx, c := be.For("app", fmt.Sprintf("ch-%d", i))
		used[idx] = true
		if err := c.Do(ctx, c.B().Set().Key(fmt.Sprintf("k%d", i)).Value("v").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if len(used) != 2 {
		t.Fatalf("channels used shards %v", used)
	}
	if _, err := Dial(nil, "", Options{}); err == nil {
		t.Fatal("no backend accepted")
	}
	if _, err := Dial([]string{a.URL(), a.URL()}, "", Options{}); err == nil {
		t.Fatal("duplicate shard accepted")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://127.0.0.1:6379/0":             "redis://127.0.0.1:6379/0",
		"redis://:s3cret@redis-a:6379/0":       "redis://:xxxxx@redis-a:6379/0",
		"rediss://herald:s3cret@redis-b:6380":  "rediss://herald:xxxxx@redis-b:6380",
		"redis://herald@redis-c:6379":          "redis://herald@redis-c:6379",
		"redis://:s3cret@[::1:6379":            "xxxxx@[::1:6379",
		"redis://:s3%zzcret@redis-d:6379/?x=1": "xxxxx@redis-d:6379/?x=1",
		"redis//:s3cret@redis-e:6379":          "xxxxx@redis-e:6379",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDialErrorsHidePasswords(t *testing.T) {
	for _, shards := range [][]string{
		{"redis://:s3cret@127.0.0.1:1/0", "redis://:s3cret@127.0.0.1:1/0"}, // listed twice
		{"redis://:s3%zzcret@127.0.0.1:1/0"},                               // does not parse
		{"redis://:s3cret@127.0.0.1:1/0"},                                  // nothing listens
		{"redis//:s3cret@127.0.0.1:1/0"},                                   // no scheme
	} {
		b, err := Dial(shards, "", Options{})
		if err == nil {
			b.Close()
			t.Errorf("Dial(%q): no error", shards)
			continue
		}
		if strings.Contains(err.Error(), "s3") {
			t.Errorf("Dial(%q): error shows the password: %v", shards, err)
		}
	}
}
