package ratelimit

import (
	"testing"
	"time"
)

func TestBucketBurstThenRefill(t *testing.T) {
	var b Bucket
	t0 := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		ok, rem, _ := b.Take(t0, 5, 5)
		if !ok || rem != float64(4-i) {
			t.Fatalf("take %d: ok=%v remaining=%v", i, ok, rem)
		}
	}
	ok, _, wait := b.Take(t0, 5, 5)
	if ok || wait != 200*time.Millisecond {
		t.Fatalf("6th take: ok=%v wait=%v, want refused with 200ms", ok, wait)
	}
	if ok, _, _ := b.Take(t0.Add(199*time.Millisecond), 5, 5); ok {
		t.Fatal("token before refill")
	}
	if ok, _, _ := b.Take(t0.Add(400*time.Millisecond), 5, 5); !ok {
		t.Fatal("no token after refill")
	}
	// Refill never exceeds the burst.
	ok, rem, _ := b.Take(t0.Add(time.Hour), 5, 5)
	if !ok || rem != 4 {
		t.Fatalf("after an hour: ok=%v remaining=%v", ok, rem)
	}
}

func TestKeyedIsolatesKeys(t *testing.T) {
	var k Keyed
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if ok, _, _ := k.Take("a", now, 3, 3); !ok {
			t.Fatalf("a take %d refused", i)
		}
	}
	if ok, _, _ := k.Take("a", now, 3, 3); ok {
		t.Fatal("a over its limit")
	}
	if ok, _, _ := k.Take("b", now, 3, 3); !ok {
		t.Fatal("b limited by a's bucket")
	}
}
