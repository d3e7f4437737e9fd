package hub

import (
	"context"
	"strconv"
	"testing"

	"github.com/heraldrt/herald/internal/broker"
)

type fakeSub struct{ id string }

func (f *fakeSub) SocketID() string { return f.id }
func (f *fakeSub) Send([]byte)      {}
func (f *fakeSub) Terminate()       {}

// TestSubscribersSet walks the inline-one / map representation through its
// transitions and checks it behaves as a set.
func TestSubscribersSet(t *testing.T) {
	a, b, c := &fakeSub{"a"}, &fakeSub{"b"}, &fakeSub{"c"}
	var s subscribers
	members := func() map[string]bool {
		m := map[string]bool{}
		s.each(func(x Conn) { m[x.SocketID()] = true })
		return m
	}
	check := func(want ...string) {
		t.Helper()
		got := members()
		if s.len() != len(want) || len(got) != len(want) {
			t.Fatalf("len %d, members %v, want %v", s.len(), got, want)
		}
		for _, w := range want {
			if !got[w] {
				t.Fatalf("members %v, want %v", got, want)
			}
		}
	}
	check()
	if s.remove(a) || s.has(a) {
		t.Fatal("empty set has a")
	}
	if !s.add(a) || s.add(a) || !s.has(a) || s.has(b) {
		t.Fatal("add a")
	}
	check("a")
	if s.many != nil {
		t.Fatal("one subscriber should be inline")
	}
	if s.remove(b) {
		t.Fatal("removed b, never added")
	}
	if !s.add(b) || s.add(b) || !s.add(c) {
		t.Fatal("add b, c")
	}
	check("a", "b", "c")
	if !s.remove(a) || s.remove(a) || s.has(a) {
		t.Fatal("remove a")
	}
	check("b", "c")
	if !s.remove(b) || !s.remove(c) {
		t.Fatal("remove b, c")
	}
	check()
	if s.many != nil || s.one != nil {
		t.Fatal("empty set keeps memory")
	}
	if !s.add(c) {
		t.Fatal("re-add c")
	}
	check("c")
}

// BenchmarkDeliverOwnChannel delivers to a channel of one subscriber among
// 10,000 such channels (a user's own channel): lookup, encode, one Send.
func BenchmarkDeliverOwnChannel(b *testing.B) {
	ctx := context.Background()
	h := New(nil, func(p []byte) []byte { return p }, 0)
	h.SetBroker(broker.NewMemory(h.Deliver))
	for i := range 10000 {
		t := broker.Topic{App: "app", Channel: "user-" + strconv.Itoa(i)}
		if err := h.Join(ctx, t, &fakeSub{id: "1." + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	m := &broker.Message{Topic: broker.Topic{App: "app", Channel: "user-5000"}, Payload: []byte(`{"event":"e","data":"{}","channel":"user-5000"}`)}
	b.ReportAllocs()
	for b.Loop() {
		h.Deliver(m)
	}
}
