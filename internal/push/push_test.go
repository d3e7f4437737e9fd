package push

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
)

// bus is an in-process stand-in for Redis pub/sub between nodes: each
// Publish is delivered to the topic's subscribers on its own goroutine.
type bus struct {
	mu   sync.Mutex
	subs map[broker.Topic][]broker.Handler
	down map[broker.Topic]bool // publishes to these topics fail
	wg   sync.WaitGroup
}

func newBus() *bus {
	return &bus{subs: map[broker.Topic][]broker.Handler{}, down: map[broker.Topic]bool{}}
}

// endpoint is one node's broker on the bus.
type endpoint struct {
	b       *bus
	handler broker.Handler
}

func (e *endpoint) Publish(_ context.Context, m *broker.Message) error {
	e.b.mu.Lock()
	hs := slices.Clone(e.b.subs[m.Topic])
	down := e.b.down[m.Topic]
	e.b.mu.Unlock()
	if down {
		return errors.New("shard down")
	}
	for _, h := range hs {
		cp := *m
		cp.Payload = slices.Clone(m.Payload)
		e.b.wg.Add(1)
		go func() { defer e.b.wg.Done(); h(&cp) }()
	}
	return nil
}

func (e *endpoint) Subscribe(_ context.Context, t broker.Topic) error {
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	e.b.subs[t] = append(e.b.subs[t], e.handler)
	return nil
}

func (e *endpoint) Unsubscribe(context.Context, broker.Topic) error { return nil }
func (e *endpoint) Close() error                                    { return nil }

// registry is a fake connection registry.
type registry struct {
	mu    sync.Mutex
	users map[string]map[string]int // user → node → sockets
	tags  map[uint64]string
	err   error
}

func (r *registry) UserNodes(_ context.Context, _, user string) (map[string]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	out := map[string]int{}
	for n, c := range r.users[user] {
		out[n] = c
	}
	return out, nil
}

func (r *registry) SocketTagNode(_ context.Context, tag uint64) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tags[tag], r.err
}

// conn is a fake connection that records what it queued.
type conn struct {
	id      string
	mu      sync.Mutex
	frames  []string
	closing bool
}

func (c *conn) SocketID() string { return c.id }
func (c *conn) Send(w []byte)    { c.Offer(w) }
func (c *conn) Terminate()       {}
func (c *conn) SendPayload(p []byte) {
	c.Offer(p)
}
func (c *conn) Close(protocol.Code, string) {}
func (c *conn) Offer(w []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.frames = append(c.frames, string(w))
	return true
}
func (c *conn) OfferPayload(p []byte) bool { return c.Offer(p) }

func (c *conn) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

var testApp = apps.DefaultApp("app-id", "app-key", "app-secret")

// node is one simulated Herald node: a session.Node with its hub, and its
// push service on the shared bus.
type node struct {
	id  string
	n   *session.Node
	svc *Service
}

func newNode(t *testing.T, b *bus, reg *registry, id string, tag uint64) *node {
	t.Helper()
	ar, err := apps.NewRegistry([]*apps.App{testApp})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	h.SetBroker(broker.NewMemory(h.Deliver))
	sn := &session.Node{Apps: ar, Hub: h, SocketIDTag: tag}
	nd := &node{id: id, n: sn}
	ep := &endpoint{b: b}
	nd.svc = New(Options{Node: sn, NodeID: id, Tag: tag, Broker: ep, Registry: reg})
	ep.handler = nd.svc.Handle
	if err := nd.svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	reg.tags[tag] = id
	reg.mu.Unlock()
	t.Cleanup(nd.svc.Close)
	return nd
}

// signIn puts a new connection of user on the node's user topic (as signin
// does) and in the registry.
func (nd *node) signIn(t *testing.T, reg *registry, user string) *conn {
	t.Helper()
	s, err := nd.n.Start(testApp, &conn{})
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{id: s.SocketID()}
	if err := nd.n.Hub.Join(context.Background(), broker.Topic{App: testApp.ID, Channel: protocol.UserChannel(user)}, c); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	if reg.users[user] == nil {
		reg.users[user] = map[string]int{}
	}
	reg.users[user][nd.id]++
	reg.mu.Unlock()
	return c
}

func newCluster(t *testing.T) (*bus, *registry) {
	b := newBus()
	t.Cleanup(b.wg.Wait)
	return b, &registry{users: map[string]map[string]int{}, tags: map[uint64]string{}}
}

func TestToUserAcrossNodes(t *testing.T) {
	b, reg := newCluster(t)
	a, bb := newNode(t, b, reg, "A", 1), newNode(t, b, reg, "B", 2)
	c1 := a.signIn(t, reg, "u1")
	c2, c3 := bb.signIn(t, reg, "u1"), bb.signIn(t, reg, "u1")
	other := bb.signIn(t, reg, "u2")

	r, err := a.svc.ToUser(context.Background(), testApp.ID, "u1", "hello", `{"x":1}`, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{c1.id, c2.id, c3.id}
	slices.Sort(want)
	if r.Delivered != 3 || !slices.Equal(r.Sockets, want) || r.TimedOut {
		t.Fatalf("receipt %+v, want 3 delivered to %v", r, want)
	}
	frame := `{"event":"hello","data":"{\"x\":1}","channel":"#server-to-user-u1"}`
	for _, c := range []*conn{c1, c2, c3} {
		if got := c.got(); len(got) != 1 || got[0] != frame {
			t.Fatalf("socket %s got %q, want %s", c.id, got, frame)
		}
	}
	if got := other.got(); len(got) != 0 {
		t.Fatalf("another user got %q", got)
	}
	// Offline: no registry entry, no wait.
	start := time.Now()
	r, err = bb.svc.ToUser(context.Background(), testApp.ID, "nobody", "hello", "{}", time.Second)
	if err != nil || r.Delivered != 0 || r.Sockets != nil || r.TimedOut || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("offline user: %+v %v after %v", r, err, time.Since(start))
	}
	if st := a.svc.Stats(); st.Requests != 1 || st.Delivered != 3 {
		t.Fatalf("stats of A: %+v", st)
	}
	if st := bb.svc.Stats(); st.Served != 1 {
		t.Fatalf("B served %d requests, want 1", st.Served)
	}
}

func TestToUserTimesOutOnSilentNode(t *testing.T) {
	b, reg := newCluster(t)
	a := newNode(t, b, reg, "A", 1)
	c1 := a.signIn(t, reg, "u1")
	reg.users["u1"]["dead"] = 1 // a node that does not answer
	reg.users["u1"]["down"] = 1 // a node whose topic cannot be published to
	b.down[NodeTopic("down")] = true

	start := time.Now()
	r, err := a.svc.ToUser(context.Background(), testApp.ID, "u1", "e", "d", 150*time.Millisecond)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if !r.TimedOut || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{c1.id}) || !slices.Equal(r.Unanswered, []string{"dead", "down"}) {
		t.Fatalf("receipt %+v", r)
	}
	if took < 150*time.Millisecond || took > time.Second {
		t.Fatalf("answered after %v, want the 150ms timeout", took)
	}
}

func TestToUserRegistryDown(t *testing.T) {
	b, reg := newCluster(t)
	a := newNode(t, b, reg, "A", 1)
	reg.err = errors.New("connection refused")
	if _, err := a.svc.ToUser(context.Background(), testApp.ID, "u1", "e", "d", 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestToSocket(t *testing.T) {
	b, reg := newCluster(t)
	a, bb := newNode(t, b, reg, "A", 1), newNode(t, b, reg, "B", 2)
	fc := &conn{}
	s, err := bb.n.Start(testApp, fc)
	if err != nil {
		t.Fatal(err)
	}
	if tag, ok := session.SocketIDTagOf(s.SocketID()); !ok || tag != 2 {
		t.Fatalf("socket id %s carries tag %d, want 2", s.SocketID(), tag)
	}
	// From another node and from the node itself.
	for _, from := range []*node{a, bb} {
		r, err := from.svc.ToSocket(context.Background(), testApp.ID, s.SocketID(), "ping", "{}", time.Second)
		if err != nil || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{s.SocketID()}) {
			t.Fatalf("from %s: %+v %v", from.id, r, err)
		}
	}
	if got := fc.got(); len(got) != 2 || got[0] != `{"event":"ping","data":"{}"}` {
		t.Fatalf("socket got %q", got)
	}
	// Another app's socket id, an unknown socket on a live node, an unknown
	// tag, a malformed id.
	other := apps.DefaultApp("other", "other-key", "other-secret")
	for _, tc := range []struct {
		app, id string
		want    error
	}{
		{other.ID, s.SocketID(), ErrNoSocket},
		{testApp.ID, "2000000000001.1", ErrNoSocket},
		{testApp.ID, "9000000000001.1", ErrNoSocket},
		{testApp.ID, "1.2.3", ErrBadSocketID},
		{testApp.ID, "99999999999999999999999.1", ErrBadSocketID},
	} {
		if r, err := a.svc.ToSocket(context.Background(), tc.app, tc.id, "e", "d", time.Second); !errors.Is(err, tc.want) {
			t.Errorf("app %s socket %s: %+v %v, want %v", tc.app, tc.id, r, err, tc.want)
		}
	}
	// A closing connection does not count.
	fc.mu.Lock()
	fc.closing = true
	fc.mu.Unlock()
	if _, err := a.svc.ToSocket(context.Background(), testApp.ID, s.SocketID(), "e", "d", time.Second); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("closing socket: %v", err)
	}
}

func TestToSocketSilentNode(t *testing.T) {
	b, reg := newCluster(t)
	a := newNode(t, b, reg, "A", 1)
	reg.tags[7] = "gone"
	r, err := a.svc.ToSocket(context.Background(), testApp.ID, "7000000000001.5", "e", "d", 100*time.Millisecond)
	if err != nil || !r.TimedOut || r.Delivered != 0 || !slices.Equal(r.Unanswered, []string{"gone"}) {
		t.Fatalf("%+v %v", r, err)
	}
	// The tag was dropped from the cache: once the registry forgets the
	// node, the socket is unknown.
	delete(reg.tags, 7)
	if _, err := a.svc.ToSocket(context.Background(), testApp.ID, "7000000000001.5", "e", "d", 100*time.Millisecond); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("after the node is gone: %v", err)
	}
}

func TestSingleProcess(t *testing.T) {
	ar, _ := apps.NewRegistry([]*apps.App{testApp})
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	h.SetBroker(broker.NewMemory(h.Deliver))
	sn := &session.Node{Apps: ar, Hub: h}
	svc := New(Options{Node: sn})
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	c := &conn{id: "1.1"}
	if err := h.Join(context.Background(), broker.Topic{App: testApp.ID, Channel: protocol.UserChannel("u")}, c); err != nil {
		t.Fatal(err)
	}
	r, err := svc.ToUser(context.Background(), testApp.ID, "u", "e", "d", 0)
	if err != nil || r.Delivered != 1 || !slices.Equal(r.Sockets, []string{"1.1"}) {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := svc.ToUser(context.Background(), testApp.ID, "v", "e", "d", 0); err != nil || r.Delivered != 0 {
		t.Fatalf("offline: %+v %v", r, err)
	}
	if h.Delivered() != 1 {
		t.Fatalf("hub counted %d deliveries", h.Delivered())
	}
}

func TestHandleIgnoresJunk(t *testing.T) {
	b, reg := newCluster(t)
	a := newNode(t, b, reg, "A", 1)
	for _, p := range [][]byte{nil, []byte("garbage"), appendRequest(nil, 1, "B", testApp.ID, kindUser, "u", nil)} {
		a.svc.Handle(&broker.Message{Topic: NodeTopic("A"), Payload: p})
	}
	// A reply nobody waits for.
	a.svc.Handle(&broker.Message{Topic: NodeTopic("A"), Payload: appendReply(nil, 999, "B", []string{"1.1"})})
	if st := a.svc.Stats(); st.MalformedDropped != 3 || st.Served != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestReplyQueueBounded(t *testing.T) {
	b, reg := newCluster(t)
	ar, _ := apps.NewRegistry([]*apps.App{testApp})
	h := hub.New(nil, func(p []byte) []byte { return p }, 0)
	h.SetBroker(broker.NewMemory(h.Deliver))
	ep := &endpoint{b: b}
	// No Start: no replier drains the queue of 2.
	svc := New(Options{Node: &session.Node{Apps: ar, Hub: h}, NodeID: "A", Tag: 1, Broker: ep, Registry: reg, ReplyQueue: 2})
	for i := range 5 {
		svc.Handle(&broker.Message{Topic: NodeTopic("A"), Payload: appendRequest(nil, uint64(i), "B", testApp.ID, kindUser, "u", []byte("{}"))})
	}
	if st := svc.Stats(); st.Served != 5 || st.RepliesDropped != 3 {
		t.Fatalf("stats %+v, want 5 served and 3 replies dropped", st)
	}
}
