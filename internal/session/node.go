// Package session runs the Pusher protocol for one connection: subscriptions,
// authorization, presence, client events, signin and watchlists. The edge
// package feeds it messages; Node holds what all sessions of a process share.
package session

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hooks"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/state"
)

// Node is the shared part of every session in a process. Set every field
// before the first session starts; Observer and Log may be nil.
type Node struct {
	Apps      *apps.Registry
	Hub       *hub.Hub
	Broker    broker.Broker
	Presence  state.Presence
	Occupancy state.Occupancy
	Users     state.Users
	Cache     state.Cache
	Locks     state.Locks // subscription-count throttle; nil = a process-local table
	Observer  hooks.Observer
	Log       *slog.Logger
	// SocketIDTag, when > 0, is written into every socket_id this node
	// assigns (see SocketIDTagOf), so that any node of a cluster can tell
	// which node holds a socket (direct push). At most MaxSocketIDTag.
	// 0 (a single process): plain random ids.
	SocketIDTag uint64

	// nodeHistory gives Node its History field: channel history and
	// recovery (recovery.go).
	nodeHistory

	locksOnce sync.Once
	mu        sync.Mutex
	sockets   map[string]*Session
	perApp    map[string]*atomic.Int64
	total     atomic.Int64

	apiPublished        atomic.Uint64
	clientEvents        atomic.Uint64
	clientEventsLimited atomic.Uint64
}

// Counters are a node's message counters (for the metrics endpoint).
type Counters struct {
	// APIPublished counts events published through PublishEvent (one per
	// channel of an API trigger).
	APIPublished uint64
	// ClientEvents counts accepted client events (each is published once).
	ClientEvents uint64
	// ClientEventsRateLimited counts client events refused by client_event_rate.
	ClientEventsRateLimited uint64
}

// Counters returns the node's message counters.
func (n *Node) Counters() Counters {
	return Counters{APIPublished: n.apiPublished.Load(), ClientEvents: n.clientEvents.Load(),
		ClientEventsRateLimited: n.clientEventsLimited.Load()}
}

func (n *Node) observer() hooks.Observer {
	if n.Observer == nil {
		return hooks.Nop{}
	}
	return n.Observer
}

func (n *Node) locks() state.Locks {
	n.locksOnce.Do(func() {
		if n.Locks == nil {
			n.Locks = state.NewMemoryLocks()
		}
	})
	return n.Locks
}

func (n *Node) log() *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}

// Connections returns the number of open sessions of app (all apps if "").
func (n *Node) Connections(app string) int64 {
	if app == "" {
		return n.total.Load()
	}
	n.mu.Lock()
	c := n.perApp[app]
	n.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Load()
}

// admit reserves a connection slot for app and a unique socket id. It fails
// when the app is at its connection quota.
func (n *Node) admit(a *apps.App, s *Session) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sockets == nil {
		n.sockets = make(map[string]*Session)
		n.perApp = make(map[string]*atomic.Int64)
	}
	c := n.perApp[a.ID]
	if c == nil {
		c = new(atomic.Int64)
		n.perApp[a.ID] = c
	}
	if a.MaxConnections > 0 && c.Load() >= int64(a.MaxConnections) {
		return false
	}
	for {
		id := newSocketID(n.SocketIDTag)
		if _, taken := n.sockets[id]; !taken {
			s.socketID = id
			break
		}
	}
	n.sockets[s.socketID] = s
	c.Add(1)
	n.total.Add(1)
	return true
}

func (n *Node) release(s *Session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sockets[s.socketID] != s {
		return
	}
	delete(n.sockets, s.socketID)
	n.perApp[s.app.ID].Add(-1)
	n.total.Add(-1)
}

// Session returns the open session with socketID, or nil.
func (n *Node) Session(socketID string) *Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sockets[socketID]
}

// newSocketID returns "<a>.<b>" with two random decimal integers: the format
// the SDKs validate (^\d+\.\d+$), unguessable (about 80 random bits). A
// node tag t > 0 is added to a as t × 10¹² (see SocketIDTagOf).
func newSocketID(tag uint64) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	a := binary.LittleEndian.Uint64(b[:8])%socketIDPart + tag*socketIDPart
	c := binary.LittleEndian.Uint64(b[8:]) % socketIDPart
	buf := make([]byte, 0, 26)
	buf = strconv.AppendUint(buf, a, 10)
	buf = append(buf, '.')
	buf = strconv.AppendUint(buf, c, 10)
	return string(buf)
}

// PublishEvent sends an event to one channel of app through the broker, as the
// HTTP API triggers it: cache channels remember it, and exclude (a socket_id)
// does not receive it.
func (n *Node) PublishEvent(ctx context.Context, a *apps.App, channel, event, data, exclude string) error {
	ch := protocol.Classify(channel)
	if ch.Cache {
		ttl := time.Duration(a.CacheTTL) * time.Second
		if err := n.Cache.Set(ctx, a.ID, channel, state.CachedEvent{Event: event, Data: data}, ttl); err != nil {
			return err
		}
	}
	if r := a.HistoryFor(channel); r != nil && n.History != nil {
		return n.publishHistory(ctx, a, r, channel, event, data, exclude)
	}
	err := n.Broker.Publish(ctx, &broker.Message{
		Topic:   broker.Topic{App: a.ID, Channel: channel},
		Payload: protocol.Event(event, channel, data),
		Exclude: exclude,
	})
	if err == nil {
		n.apiPublished.Add(1)
	}
	return err
}

// TerminateUser closes every connection signed in as userID, on every node.
func (n *Node) TerminateUser(ctx context.Context, a *apps.App, userID string) error {
	return n.Broker.Publish(ctx, &broker.Message{
		Topic: broker.Topic{App: a.ID, Channel: protocol.UserChannel(userID)},
		Kind:  broker.KindTerminate,
	})
}

// watchTopic is the internal topic that a user's watchers join.
func watchTopic(app, userID string) broker.Topic {
	return broker.Topic{App: app, Channel: "#watchers-" + userID}
}
