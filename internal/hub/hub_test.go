package hub_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
)

// fakeConn records what the hub hands it.
type fakeConn struct {
	id         string
	mu         sync.Mutex
	sent       [][]byte
	terminated int
}

func newConn(id string) *fakeConn { return &fakeConn{id: id} }

func (c *fakeConn) SocketID() string { return c.id }

func (c *fakeConn) Send(wire []byte) {
	c.mu.Lock()
	c.sent = append(c.sent, wire)
	c.mu.Unlock()
}

func (c *fakeConn) Terminate() {
	c.mu.Lock()
	c.terminated++
	c.mu.Unlock()
}

func (c *fakeConn) messages() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.sent...)
}

func (c *fakeConn) terminations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.terminated
}

// countingEncoder wraps the payload in brackets and counts its calls.
type countingEncoder struct{ calls atomic.Int64 }

func (e *countingEncoder) encode(p []byte) []byte {
	e.calls.Add(1)
	out := make([]byte, 0, len(p)+2)
	out = append(out, '[')
	out = append(out, p...)
	return append(out, ']')
}

// setup returns a hub wired to an in-memory broker whose handler is the hub.
func setup(delay time.Duration) (*hub.Hub, *broker.Memory, *countingEncoder) {
	enc := &countingEncoder{}
	h := hub.New(nil, enc.encode, delay)
	b := broker.NewMemory(h.Deliver)
	h.SetBroker(b)
	return h, b, enc
}

var topic = broker.Topic{App: "app", Channel: "private-orders"}

// waitFor polls cond until it is true or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestJoinSubscribesLeaveUnsubscribes(t *testing.T) {
	ctx := context.Background()
	h, b, _ := setup(0)
	c1, c2 := newConn("1.1"), newConn("1.2")

	if b.Subscribed(topic) {
		t.Fatal("subscribed before any Join")
	}
	if err := h.Join(ctx, topic, c1); err != nil {
		t.Fatal(err)
	}
	if !b.Subscribed(topic) {
		t.Fatal("first Join did not subscribe the node")
	}
	if err := h.Join(ctx, topic, c2); err != nil {
		t.Fatal(err)
	}
	if got := h.Count(topic); got != 2 {
		t.Fatalf("Count = %d, want 2", got)
	}
	if got := h.Topics(); got != 1 {
		t.Fatalf("Topics = %d, want 1", got)
	}
	// Joining twice does not double count.
	if err := h.Join(ctx, topic, c2); err != nil {
		t.Fatal(err)
	}
	if got := h.Count(topic); got != 2 {
		t.Fatalf("Count after double Join = %d, want 2", got)
	}

	if !h.Leave(topic, c1) {
		t.Fatal("Leave(c1) = false, want true")
	}
	if !b.Subscribed(topic) {
		t.Fatal("unsubscribed while c2 is still on the topic")
	}
	if h.Leave(topic, c1) {
		t.Fatal("second Leave(c1) = true, want false")
	}
	if !h.Leave(topic, c2) {
		t.Fatal("Leave(c2) = false")
	}
	if b.Subscribed(topic) {
		t.Fatal("still subscribed after the last Leave (no delay)")
	}
	if got, topics := h.Count(topic), h.Topics(); got != 0 || topics != 0 {
		t.Fatalf("Count = %d, Topics = %d after the last Leave, want 0, 0", got, topics)
	}
	if h.Leave(topic, c2) {
		t.Fatal("Leave on an empty topic = true")
	}
	if h.Leave(broker.Topic{App: "x", Channel: "y"}, c1) {
		t.Fatal("Leave on an unknown topic = true")
	}

	// The topic can be joined again and is subscribed again.
	if err := h.Join(ctx, topic, c1); err != nil {
		t.Fatal(err)
	}
	if !b.Subscribed(topic) {
		t.Fatal("re-Join did not subscribe")
	}
}

func TestTopicsAreSeparate(t *testing.T) {
	ctx := context.Background()
	h, b, _ := setup(0)
	a := broker.Topic{App: "a1", Channel: "c"}
	bb := broker.Topic{App: "a2", Channel: "c"}
	c := newConn("1.1")
	_ = h.Join(ctx, a, c)
	_ = h.Join(ctx, bb, c)
	h.Leave(a, c)
	if b.Subscribed(a) || !b.Subscribed(bb) {
		t.Fatalf("subscribed(a1)=%v subscribed(a2)=%v, want false, true", b.Subscribed(a), b.Subscribed(bb))
	}
	_ = b.Publish(ctx, &broker.Message{Topic: bb, Payload: []byte("x")})
	_ = b.Publish(ctx, &broker.Message{Topic: a, Payload: []byte("y")})
	if msgs := c.messages(); len(msgs) != 1 || string(msgs[0]) != "[x]" {
		t.Fatalf("messages = %q, want only [x]", msgs)
	}
}

func TestUnsubscribeDelay(t *testing.T) {
	ctx := context.Background()
	const delay = 150 * time.Millisecond
	h, b, _ := setup(delay)
	c1, c2 := newConn("1.1"), newConn("1.2")

	if err := h.Join(ctx, topic, c1); err != nil {
		t.Fatal(err)
	}
	h.Leave(topic, c1)
	if !b.Subscribed(topic) {
		t.Fatal("unsubscribed at once despite the delay")
	}
	// Refill within the delay: the pending unsubscribe is cancelled.
	if err := h.Join(ctx, topic, c2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * delay)
	if !b.Subscribed(topic) {
		t.Fatal("Leave+Join within the delay still unsubscribed")
	}
	// Events still reach the new subscriber.
	_ = b.Publish(ctx, &broker.Message{Topic: topic, Payload: []byte("e")})
	if len(c2.messages()) != 1 {
		t.Fatal("event after refill not delivered")
	}

	start := time.Now()
	h.Leave(topic, c2)
	waitFor(t, 5*time.Second, "the delayed unsubscribe", func() bool { return !b.Subscribed(topic) })
	if el := time.Since(start); el < delay-10*time.Millisecond {
		t.Fatalf("unsubscribed after %v, before the %v delay", el, delay)
	}
	waitFor(t, time.Second, "the topic to be dropped", func() bool { return h.Topics() == 0 })

	// After a delayed unsubscribe, a new Join subscribes again.
	if err := h.Join(ctx, topic, c1); err != nil {
		t.Fatal(err)
	}
	if !b.Subscribed(topic) {
		t.Fatal("Join after delayed unsubscribe did not subscribe")
	}
}

func TestDeliverEncodesOnceAndSharesBytes(t *testing.T) {
	ctx := context.Background()
	h, b, enc := setup(0)
	conns := make([]*fakeConn, 10)
	for i := range conns {
		conns[i] = newConn(fmt.Sprintf("1.%d", i))
		if err := h.Join(ctx, topic, conns[i]); err != nil {
			t.Fatal(err)
		}
	}
	other := newConn("2.0")
	_ = h.Join(ctx, broker.Topic{App: "app", Channel: "other"}, other)

	m := &broker.Message{Topic: topic, Payload: []byte(`{"event":"e"}`), Exclude: "1.3"}
	if err := b.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n := enc.calls.Load(); n != 1 {
		t.Fatalf("encoder called %d times for one delivery to 10 subscribers, want 1", n)
	}
	var first []byte
	for i, c := range conns {
		msgs := c.messages()
		if c.id == "1.3" {
			if len(msgs) != 0 {
				t.Fatalf("excluded socket got %q", msgs)
			}
			continue
		}
		if len(msgs) != 1 || string(msgs[0]) != `[{"event":"e"}]` {
			t.Fatalf("conn %d got %q", i, msgs)
		}
		if first == nil {
			first = msgs[0]
		} else if &msgs[0][0] != &first[0] {
			t.Fatalf("conn %d got a different copy of the frame; want the same shared slice", i)
		}
	}
	if len(other.messages()) != 0 {
		t.Fatal("message leaked to another topic")
	}
	if n := conns[0].terminations(); n != 0 {
		t.Fatalf("Terminate called %d times on an event", n)
	}

	// Exclude that matches nobody: everyone gets it, still one encode.
	h.Deliver(&broker.Message{Topic: topic, Payload: []byte("2"), Exclude: "9.9"})
	if n := enc.calls.Load(); n != 2 {
		t.Fatalf("encoder calls = %d, want 2", n)
	}
	for _, c := range conns {
		if msgs := c.messages(); string(msgs[len(msgs)-1]) != "[2]" {
			t.Fatalf("conn %s last message %q, want [2]", c.id, msgs[len(msgs)-1])
		}
	}

	// Deliver to a topic with no local subscribers encodes at most nothing.
	before := enc.calls.Load()
	h.Deliver(&broker.Message{Topic: broker.Topic{App: "app", Channel: "empty"}, Payload: []byte("x")})
	if n := enc.calls.Load() - before; n != 0 {
		t.Fatalf("encoder called %d times for a topic without subscribers", n)
	}
}

func TestDeliverTerminate(t *testing.T) {
	ctx := context.Background()
	h, b, enc := setup(0)
	ut := broker.Topic{App: "app", Channel: "#server-to-user-42"}
	conns := []*fakeConn{newConn("1.1"), newConn("1.2"), newConn("1.3")}
	for _, c := range conns {
		_ = h.Join(ctx, ut, c)
	}
	bystander := newConn("2.1")
	_ = h.Join(ctx, topic, bystander)

	if err := b.Publish(ctx, &broker.Message{Topic: ut, Kind: broker.KindTerminate}); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if n := c.terminations(); n != 1 {
			t.Errorf("conn %s terminated %d times, want 1", c.id, n)
		}
		if len(c.messages()) != 0 {
			t.Errorf("conn %s was sent a frame on terminate", c.id)
		}
	}
	if bystander.terminations() != 0 {
		t.Error("a socket on another topic was terminated")
	}
	if enc.calls.Load() != 0 {
		t.Error("terminate encoded a frame")
	}
}

// failingBroker fails Subscribe while fail is set.
type failingBroker struct {
	*broker.Memory
	fail       atomic.Bool
	subscribes atomic.Int64
}

var errBroker = errors.New("broker down")

func (f *failingBroker) Subscribe(ctx context.Context, t broker.Topic) error {
	f.subscribes.Add(1)
	if f.fail.Load() {
		return errBroker
	}
	return f.Memory.Subscribe(ctx, t)
}

func TestJoinSubscribeFailure(t *testing.T) {
	ctx := context.Background()
	enc := &countingEncoder{}
	h := hub.New(nil, enc.encode, 0)
	fb := &failingBroker{Memory: broker.NewMemory(h.Deliver)}
	h.SetBroker(fb)
	fb.fail.Store(true)

	c := newConn("1.1")
	err := h.Join(ctx, topic, c)
	if !errors.Is(err, errBroker) {
		t.Fatalf("Join with a failing broker = %v, want %v", err, errBroker)
	}
	if n := h.Count(topic); n != 0 {
		t.Fatalf("Count after failed Join = %d, want 0", n)
	}
	if n := h.Topics(); n != 0 {
		t.Fatalf("Topics after failed Join = %d, want 0", n)
	}
	if fb.Subscribed(topic) {
		t.Fatal("broker subscribed after a failed Subscribe")
	}
	h.Deliver(&broker.Message{Topic: topic, Payload: []byte("x")})
	if len(c.messages()) != 0 {
		t.Fatal("failed joiner received a delivery")
	}
	if h.Leave(topic, c) {
		t.Fatal("Leave after a failed Join = true")
	}

	// Once the broker recovers, Join subscribes (it retries, not remembers).
	fb.fail.Store(false)
	if err := h.Join(ctx, topic, c); err != nil {
		t.Fatal(err)
	}
	if !fb.Subscribed(topic) || h.Count(topic) != 1 {
		t.Fatal("Join after recovery did not subscribe")
	}
	_ = fb.Publish(ctx, &broker.Message{Topic: topic, Payload: []byte("y")})
	if msgs := c.messages(); len(msgs) != 1 || string(msgs[0]) != "[y]" {
		t.Fatalf("messages after recovery = %q", msgs)
	}
}

// blockingBroker blocks Subscribe until release is closed.
type blockingBroker struct {
	*broker.Memory
	entered chan struct{}
	release chan struct{}
	unsubs  atomic.Int64
}

func (bb *blockingBroker) Subscribe(ctx context.Context, t broker.Topic) error {
	bb.entered <- struct{}{}
	<-bb.release
	return bb.Memory.Subscribe(ctx, t)
}

func (bb *blockingBroker) Unsubscribe(ctx context.Context, t broker.Topic) error {
	bb.unsubs.Add(1)
	return bb.Memory.Unsubscribe(ctx, t)
}

// A second joiner waits for the first one's Subscribe; if its context ends
// first it returns the context's error and is not added.
func TestJoinWaitsForInFlightSubscribe(t *testing.T) {
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	bb := &blockingBroker{Memory: broker.NewMemory(h.Deliver), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.SetBroker(bb)
	c1, c2, c3 := newConn("1.1"), newConn("1.2"), newConn("1.3")

	done1 := make(chan error, 1)
	go func() { done1 <- h.Join(context.Background(), topic, c1) }()
	<-bb.entered

	cctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- h.Join(cctx, topic, c2) }()
	done3 := make(chan error, 1)
	go func() { done3 <- h.Join(context.Background(), topic, c3) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done2; !errors.Is(err, context.Canceled) {
		t.Fatalf("Join with cancelled context = %v, want context.Canceled", err)
	}
	close(bb.release)
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	if err := <-done3; err != nil {
		t.Fatal(err)
	}
	if n := h.Count(topic); n != 2 {
		t.Fatalf("Count = %d, want 2 (c1 and c3; c2 gave up)", n)
	}
	select {
	case <-bb.entered:
		t.Fatal("Subscribe called twice for one topic")
	default:
	}
}

// If every local subscriber leaves while the Subscribe is in flight, the node
// unsubscribes once it completes.
func TestLeaveDuringSubscribe(t *testing.T) {
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	bb := &blockingBroker{Memory: broker.NewMemory(h.Deliver), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.SetBroker(bb)
	c := newConn("1.1")
	done := make(chan error, 1)
	go func() { done <- h.Join(context.Background(), topic, c) }()
	<-bb.entered
	if !h.Leave(topic, c) {
		t.Fatal("Leave during Subscribe = false")
	}
	close(bb.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the unsubscribe", func() bool { return !bb.Subscribed(topic) && h.Topics() == 0 })
	if bb.unsubs.Load() != 1 {
		t.Fatalf("Unsubscribe called %d times, want 1", bb.unsubs.Load())
	}
}

func TestConcurrentJoinLeaveDeliver(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		t.Run(fmt.Sprint("delay=", delay), func(t *testing.T) {
			ctx := context.Background()
			h, b, _ := setup(delay)
			topics := []broker.Topic{{App: "a", Channel: "x"}, {App: "a", Channel: "y"}, {App: "b", Channel: "x"}}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			// Publishers.
			for i := 0; i < 2; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; ; j++ {
						select {
						case <-stop:
							return
						default:
						}
						tp := topics[j%len(topics)]
						kind := broker.KindEvent
						if j%50 == 0 {
							kind = broker.KindTerminate
						}
						_ = b.Publish(ctx, &broker.Message{Topic: tp, Kind: kind, Payload: []byte("p"), Exclude: "0.1"})
					}
				}()
			}
			// Joiners and leavers.
			var jw sync.WaitGroup
			for w := 0; w < 8; w++ {
				jw.Add(1)
				go func() {
					defer jw.Done()
					c := newConn(fmt.Sprintf("0.%d", w))
					for j := 0; j < 300; j++ {
						tp := topics[(w+j)%len(topics)]
						if err := h.Join(ctx, tp, c); err != nil {
							t.Error(err)
							return
						}
						_ = h.Count(tp)
						_ = h.Topics()
						if !h.Leave(tp, c) {
							t.Error("Leave after Join = false")
							return
						}
					}
				}()
			}
			jw.Wait()
			close(stop)
			wg.Wait()
			// Everyone left: eventually no topic is held or subscribed.
			waitFor(t, 5*time.Second, "all topics released", func() bool {
				if h.Topics() != 0 {
					return false
				}
				for _, tp := range topics {
					if b.Subscribed(tp) {
						return false
					}
				}
				return true
			})
		})
	}
}

// Invariant under concurrency: a connection that holds a Join receives every
// event published on its topic after Join returned.
func TestJoinedConnReceivesUnderChurn(t *testing.T) {
	ctx := context.Background()
	h, b, _ := setup(0)
	stable := newConn("9.9")
	if err := h.Join(ctx, topic, stable); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newConn(fmt.Sprint("8.", w))
			for j := 0; j < 500; j++ {
				_ = h.Join(ctx, topic, c)
				h.Leave(topic, c)
			}
		}()
	}
	const n = 1000
	for i := 0; i < n; i++ {
		_ = b.Publish(ctx, &broker.Message{Topic: topic, Payload: []byte("e")})
	}
	wg.Wait()
	if got := len(stable.messages()); got != n {
		t.Fatalf("stable subscriber got %d of %d events", got, n)
	}
	if !b.Subscribed(topic) {
		t.Fatal("topic unsubscribed while a subscriber remains")
	}
}

type nopConn struct{ id string }

func (c *nopConn) SocketID() string { return c.id }
func (c *nopConn) Send([]byte)      {}
func (c *nopConn) Terminate()       {}

func BenchmarkDeliver1000(b *testing.B) {
	ctx := context.Background()
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	br := broker.NewMemory(h.Deliver)
	h.SetBroker(br)
	for i := 0; i < 1000; i++ {
		if err := h.Join(ctx, topic, &nopConn{id: fmt.Sprint("1.", i)}); err != nil {
			b.Fatal(err)
		}
	}
	m := &broker.Message{Topic: topic, Payload: []byte(`{"event":"e","data":"{}","channel":"private-orders"}`), Exclude: "1.500"}
	b.ReportAllocs()
	for b.Loop() {
		h.Deliver(m)
	}
}

func TestKindFollowsChannelRules(t *testing.T) {
	cases := map[string]hub.ChannelKind{
		"news": hub.KindPublic, "private-a": hub.KindPrivate, "private-encrypted-a": hub.KindEncrypted,
		"presence-a": hub.KindPresence, "cache-a": hub.KindCache, "private-cache-a": hub.KindCache,
		"presence-cache-a": hub.KindCache, "private-encrypted-cache-a": hub.KindCache,
		"#server-to-user-u1": hub.KindUser, "#watchers-u1": hub.KindOther, "privatex": hub.KindPublic,
	}
	for name, want := range cases {
		if got := hub.Kind(name); got != want {
			t.Errorf("Kind(%q) = %s, want %s", name, hub.KindNames[got], hub.KindNames[want])
		}
	}
}
