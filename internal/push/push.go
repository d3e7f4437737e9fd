// Package push delivers one event to one signed-in user (every connection
// signed in as that user) or to one socket, wherever it is connected in the
// cluster, and answers synchronously with a delivery receipt: how many
// connections queued the event and which. There is no queue in between
// (Netflix Pushy's "direct push"): the caller learns within a bounded time
// what happened.
//
// In a cluster the node that gets the request looks the target up in the
// connection registry (user → nodes in Redis, socket → node through the tag
// every socket id carries, see internal/state/redisstate/registry.go), sends
// a control message to each of those nodes on its own broker topic
// (NodeTopic), and waits for their replies on its own topic. Each target node
// writes the event into its local connections' send queues and replies with
// the socket ids that accepted it. A single process delivers locally and
// gives the same answers.
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/session"
)

// Timeouts of a push: how long the requester waits for the target nodes.
const (
	DefaultTimeout = 2 * time.Second
	MaxTimeout     = 10 * time.Second
)

// Errors of ToUser and ToSocket.
var (
	// ErrNoSocket: no open connection of the app has that socket id.
	ErrNoSocket = errors.New("push: no open connection with that socket_id")
	// ErrBadSocketID: the socket id is not of the form ^\d+\.\d+$.
	ErrBadSocketID = errors.New("push: invalid socket_id")
	// ErrUnavailable: the registry or the broker could not be reached.
	ErrUnavailable = errors.New("push: cluster state unavailable")
	// ErrClosed: the service is closed.
	ErrClosed = errors.New("push: closed")
)

// Result is a delivery receipt.
type Result struct {
	// Delivered is the number of connections that queued the event: each
	// target node wrote it into the connection's send queue (the frame is
	// then written to the socket by the edge's flushers, in order with
	// everything else sent to that connection). A connection that is closing
	// at that moment, or that the event makes a slow consumer, does not count.
	// It is not an acknowledgement from the client.
	Delivered int `json:"delivered"`
	// Sockets are the socket ids of those connections (sorted).
	Sockets []string `json:"sockets,omitempty"`
	// TimedOut is true when some target node did not answer within the
	// timeout; Delivered then counts only the nodes that did, and the others
	// may or may not have delivered.
	TimedOut bool `json:"timed_out,omitempty"`
	// Unanswered names the nodes that did not answer in time (or could not
	// be reached), sorted.
	Unanswered []string `json:"unanswered_nodes,omitempty"`
}

// Registry finds where connections are (redisstate.State implements it).
type Registry interface {
	// UserNodes returns the nodes with signed-in sockets of userID of app,
	// with how many on each.
	UserNodes(ctx context.Context, app, userID string) (map[string]int, error)
	// SocketTagNode returns the live node holding socket-id tag, or "".
	SocketTagNode(ctx context.Context, tag uint64) (string, error)
}

// Options configure a Service. Node is required; the cluster fields are all
// set or all left empty (a single process).
type Options struct {
	// Node delivers to this process's connections.
	Node *session.Node
	// NodeID is this node's id in the cluster ("" for a single process).
	NodeID string
	// Tag is this node's socket-id tag (Node.SocketIDTag).
	Tag uint64
	// Broker carries control messages between nodes (nil: single process).
	// Its Handler must pass messages of control topics (IsControl) to Handle.
	Broker broker.Broker
	// Registry locates connections (nil: single process).
	Registry Registry
	// Log receives warnings. Default: discard.
	Log *slog.Logger
	// Repliers is the number of goroutines publishing replies, and
	// ReplyQueue how many replies may wait for them (past it a reply is
	// dropped and counted: the requester times out). Defaults 8 and 4096.
	Repliers   int
	ReplyQueue int
}

// Stats are the service's counters since start.
type Stats struct {
	Requests         uint64 // ToUser and ToSocket calls answered with a receipt or ErrNoSocket
	Delivered        uint64 // connections that queued a pushed event, as receipts count them
	TimedOut         uint64 // calls answered with TimedOut
	Served           uint64 // control requests from other nodes delivered here
	RepliesDropped   uint64 // replies dropped because the reply queue was full or the publish failed
	MalformedDropped uint64 // control messages that did not decode
}

// Service sends direct pushes. All methods are safe for concurrent use.
type Service struct {
	o    Options
	log  *slog.Logger
	self broker.Topic

	seq   atomic.Uint64
	mu    sync.Mutex
	calls map[uint64]*call
	tags  map[uint64]string // socket-id tag → node id (the local cache)

	replies chan outgoing
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  atomic.Bool

	requests, delivered, timedOut, served, dropped, malformed atomic.Uint64
}

// call is one push waiting for replies.
type call struct {
	replies chan *control
}

// outgoing is a reply waiting to be published.
type outgoing struct {
	to   string
	data []byte
}

// maxTagCache bounds the tag → node cache (cleared when full).
const maxTagCache = 4096

// NodeTopic is the broker topic on which node receives control messages. Its
// App is empty, which no app id can be (see IsControl).
func NodeTopic(node string) broker.Topic {
	return broker.Topic{Channel: "#node-" + node}
}

// IsControl reports whether t is a control topic: route its messages to
// (*Service).Handle instead of the hub.
func IsControl(t broker.Topic) bool { return t.App == "" }

// New returns a service; Start subscribes it to its node topic.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Repliers <= 0 {
		o.Repliers = 8
	}
	if o.ReplyQueue <= 0 {
		o.ReplyQueue = 4096
	}
	s := &Service{o: o, log: o.Log, calls: make(map[uint64]*call), tags: make(map[uint64]string)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.clustered() {
		s.self = NodeTopic(o.NodeID)
		s.replies = make(chan outgoing, o.ReplyQueue)
	}
	return s
}

func (s *Service) clustered() bool {
	return s.o.Broker != nil && s.o.Registry != nil && s.o.NodeID != ""
}

// Start subscribes the node to its control topic (a cluster), retrying in
// the background until it succeeds when the first attempt fails, and starts
// the reply publishers. Call it before the node accepts connections.
func (s *Service) Start(ctx context.Context) error {
	if !s.clustered() {
		return nil
	}
	for i := 0; i < s.o.Repliers; i++ {
		s.wg.Add(1)
		go s.replier()
	}
	err := s.o.Broker.Subscribe(ctx, s.self)
	if err == nil {
		return nil
	}
	s.log.Warn("direct push: cannot subscribe the node topic yet; retrying", "err", err)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for d := 100 * time.Millisecond; ; d = min(2*d, 2*time.Second) {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(d):
			}
			cctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
			err := s.o.Broker.Subscribe(cctx, s.self)
			cancel()
			if err == nil {
				s.log.Info("direct push: node topic subscribed")
				return
			}
		}
	}()
	return err
}

// Close stops the reply publishers; pushes in flight end with ErrClosed or a
// timeout. Call it before closing the broker.
func (s *Service) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	s.cancel()
	s.wg.Wait()
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Delivered: s.delivered.Load(), TimedOut: s.timedOut.Load(),
		Served: s.served.Load(), RepliesDropped: s.dropped.Load(), MalformedDropped: s.malformed.Load()}
}

// ToUser delivers event with data to every connection signed in as userID in
// app, on the user's channel (#server-to-user-<id>, where pusher-js's
// pusher.user.bind receives it), and returns the receipt: Delivered 0 when
// the user has no signed-in connection. timeout bounds the whole push, the
// registry lookup and the wait for other nodes (0: DefaultTimeout; at most
// MaxTimeout).
func (s *Service) ToUser(ctx context.Context, app, userID, event, data string, timeout time.Duration) (Result, error) {
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	payload := protocol.Event(event, protocol.UserChannel(userID), data)
	if !s.clustered() {
		return s.answer(local(s.o.Node.PushLocalUser(app, userID, payload, nil))), nil
	}
	if s.closed.Load() {
		return Result{}, ErrClosed
	}
	nodes, err := s.o.Registry.UserNodes(ctx, app, userID)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(nodes) == 0 {
		return s.answer(Result{}), nil
	}
	ids := make([]string, 0, len(nodes))
	for n := range nodes {
		ids = append(ids, n)
	}
	return s.answer(s.fanout(ctx, app, kindUser, userID, payload, ids)), nil
}

// ToSocket delivers event with data to the connection socketID of app, with
// no channel (pusher-js's pusher.bind receives it), and returns the receipt.
// It fails with ErrBadSocketID for a malformed id and ErrNoSocket when no
// open connection of app has it, unless the node holding it did not answer
// in time (then the receipt says TimedOut).
func (s *Service) ToSocket(ctx context.Context, app, socketID, event, data string, timeout time.Duration) (Result, error) {
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	tag, ok := session.SocketIDTagOf(socketID)
	if !ok {
		return Result{}, ErrBadSocketID
	}
	payload := protocol.Event(event, "", data)
	if !s.clustered() || tag == s.o.Tag {
		if !s.o.Node.PushLocalSocket(app, socketID, payload) {
			return s.answer(Result{}), ErrNoSocket
		}
		return s.answer(local([]string{socketID})), nil
	}
	if s.closed.Load() {
		return Result{}, ErrClosed
	}
	node, err := s.tagNode(ctx, tag)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if node == "" {
		return s.answer(Result{}), ErrNoSocket
	}
	r := s.fanout(ctx, app, kindSocket, socketID, payload, []string{node})
	if r.TimedOut {
		s.forgetTag(tag) // the node may be gone: ask the registry next time
	}
	if !r.TimedOut && r.Delivered == 0 {
		return s.answer(Result{}), ErrNoSocket
	}
	return s.answer(r), nil
}

// withTimeout bounds a push by timeout (0: DefaultTimeout; at most
// MaxTimeout).
func withTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return context.WithTimeout(ctx, min(timeout, MaxTimeout))
}

func local(ids []string) Result {
	return Result{Delivered: len(ids), Sockets: ids}
}

// answer counts a finished push and sorts its lists.
func (s *Service) answer(r Result) Result {
	s.requests.Add(1)
	s.delivered.Add(uint64(r.Delivered))
	if r.TimedOut {
		s.timedOut.Add(1)
	}
	slices.Sort(r.Sockets)
	slices.Sort(r.Unanswered)
	return r
}

// tagNode resolves a socket-id tag through the local cache, then Redis.
func (s *Service) tagNode(ctx context.Context, tag uint64) (string, error) {
	s.mu.Lock()
	node, ok := s.tags[tag]
	s.mu.Unlock()
	if ok {
		return node, nil
	}
	node, err := s.o.Registry.SocketTagNode(ctx, tag)
	if err != nil || node == "" {
		return node, err
	}
	s.mu.Lock()
	if len(s.tags) >= maxTagCache {
		clear(s.tags)
	}
	s.tags[tag] = node
	s.mu.Unlock()
	return node, nil
}

func (s *Service) forgetTag(tag uint64) {
	s.mu.Lock()
	delete(s.tags, tag)
	s.mu.Unlock()
}

// fanout asks each of nodes to deliver payload to target and waits for their
// replies until ctx ends (the push's timeout). This node delivers its own
// share directly.
func (s *Service) fanout(ctx context.Context, app string, kind byte, target string, payload []byte, nodes []string) Result {

	var r Result
	remote := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n == s.o.NodeID {
			r.Sockets = s.deliverLocal(app, kind, target, payload, r.Sockets)
		} else {
			remote = append(remote, n)
		}
	}
	if len(remote) == 0 {
		r.Delivered = len(r.Sockets)
		return r
	}
	id := s.seq.Add(1)
	c := &call{replies: make(chan *control, len(remote))}
	s.mu.Lock()
	s.calls[id] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.calls, id)
		s.mu.Unlock()
	}()

	// Publish to every node at once (rueidis pipelines them); a node whose
	// topic cannot be published to is unanswered.
	pending := make(map[string]bool, len(remote))
	failed := make([]error, len(remote))
	var wg sync.WaitGroup
	for i, n := range remote {
		pending[n] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := appendRequest(nil, id, s.o.NodeID, app, kind, target, payload)
			failed[i] = s.o.Broker.Publish(ctx, &broker.Message{Topic: NodeTopic(n), Payload: msg})
		}()
	}
	wg.Wait()
	// expect: the nodes asked successfully; a node whose publish failed
	// stays pending (unanswered) but may still answer: the publish may have
	// gone through after all.
	expect := make(map[string]bool, len(remote))
	for i, n := range remote {
		if failed[i] != nil {
			s.log.Warn("direct push: cannot reach node", "node", n, "err", failed[i])
			continue
		}
		expect[n] = true
	}
	for len(expect) > 0 {
		select {
		case m := <-c.replies:
			if !pending[m.from] {
				continue // not asked, or answered twice
			}
			delete(pending, m.from)
			delete(expect, m.from)
			r.Sockets = append(r.Sockets, m.sockets...)
		case <-ctx.Done():
			clear(expect)
		}
	}
	r.Delivered = len(r.Sockets)
	for n := range pending {
		r.Unanswered = append(r.Unanswered, n)
	}
	r.TimedOut = len(r.Unanswered) > 0
	return r
}

// deliverLocal writes payload to this node's connections of the target.
func (s *Service) deliverLocal(app string, kind byte, target string, payload []byte, ids []string) []string {
	if kind == kindUser {
		return s.o.Node.PushLocalUser(app, target, payload, ids)
	}
	if s.o.Node.PushLocalSocket(app, target, payload) {
		ids = append(ids, target)
	}
	return ids
}

// Handle processes a control message from the broker (a request to deliver
// here, or a reply to one of this node's pushes). It does not block: the
// delivery only queues frames, and the reply is handed to the publishers.
func (s *Service) Handle(m *broker.Message) {
	if !s.clustered() || m.Topic != s.self {
		return
	}
	c, err := decodeControl(m.Payload)
	if err != nil {
		s.malformed.Add(1)
		return
	}
	switch c.typ {
	case typeReply:
		s.mu.Lock()
		cl := s.calls[c.id]
		s.mu.Unlock()
		if cl != nil {
			select {
			case cl.replies <- c:
			default: // more replies than nodes asked: ignore
			}
		}
	case typeRequest:
		if len(c.payload) == 0 {
			s.malformed.Add(1)
			return
		}
		var ids []string
		if s.o.Node.Apps.ByID(c.app) != nil { // an app this node does not know has no connection here
			ids = s.deliverLocal(c.app, c.kind, c.target, c.payload, nil)
		}
		s.served.Add(1)
		select {
		case s.replies <- outgoing{to: c.from, data: appendReply(nil, c.id, s.o.NodeID, ids)}:
		default:
			s.dropped.Add(1)
		}
	}
}

// replier publishes queued replies until Close.
func (s *Service) replier() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case o := <-s.replies:
			ctx, cancel := context.WithTimeout(s.ctx, time.Second)
			err := s.o.Broker.Publish(ctx, &broker.Message{Topic: NodeTopic(o.to), Payload: o.data})
			cancel()
			if err != nil {
				s.dropped.Add(1)
				if s.ctx.Err() == nil {
					s.log.Debug("direct push: reply not sent", "to", o.to, "err", err)
				}
			}
		}
	}
}
