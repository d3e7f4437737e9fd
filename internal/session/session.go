package session

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/hub"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/ratelimit"
)

// Conn is the transport of one WebSocket connection.
type Conn interface {
	hub.Conn
	// SendPayload encodes one Pusher JSON frame for this connection alone and
	// queues it.
	SendPayload(payload []byte)
	// Close sends the close code after everything already queued, then
	// closes the connection. It does not block.
	Close(code protocol.Code, reason string)
}

// ErrOverQuota is returned by Start when the app is at its connection quota.
var ErrOverQuota = errors.New("session: app is over its connection quota")

// Session is one connection's protocol state. The transport calls
// HandleMessage and Closed one at a time (never concurrently) and Closed once.
type Session struct {
	node     *Node
	app      *apps.App
	conn     Conn
	socketID string
	ctx      context.Context
	cancel   context.CancelFunc

	mu         sync.Mutex // guards everything below, held by every handler
	closed     bool
	subs       []*subscription
	user       *signedInUser
	authorized bool
	authTimer  *time.Timer
	events     ratelimit.Bucket // client events
}

type subscription struct {
	channel protocol.Channel
	userID  string   // presence only
	hub     hub.Conn // what joined the hub (nil: the session's conn)
}

// hubConn returns what sub joined the hub with.
func (sub *subscription) hubConn(c Conn) hub.Conn {
	if sub.hub != nil {
		return sub.hub
	}
	return c
}

type signedInUser struct {
	id        string
	userData  string
	userInfo  json.RawMessage
	watchlist []string
}

// Start admits a new connection of app: it reserves a quota slot and a socket
// id and sends pusher:connection_established. On ErrOverQuota the caller
// closes the connection with 4004.
func (n *Node) Start(a *apps.App, c Conn) (*Session, error) {
	s := &Session{node: n, app: a, conn: c}
	if !n.admit(a, s) {
		return nil, ErrOverQuota
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if t := a.AuthorizedConnectionsTimeout; t > 0 {
		s.authTimer = time.AfterFunc(time.Duration(t)*time.Second, s.authorizationTimeout)
	}
	return s, nil
}

// Established returns the pusher:connection_established frame to send first.
func (s *Session) Established() []byte {
	return protocol.ConnectionEstablished(s.socketID, s.app.ActivityTimeout)
}

// SocketID returns the connection's socket_id.
func (s *Session) SocketID() string { return s.socketID }

// App returns the session's app.
func (s *Session) App() *apps.App { return s.app }

func (s *Session) authorizationTimeout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.authorized {
		return
	}
	s.conn.SendPayload(protocol.ErrorFrame(protocol.CodeUnauthorized, "Connection not authorized within timeout.", ""))
	s.conn.Close(protocol.CodeUnauthorized, "Connection not authorized within timeout")
}

func (s *Session) markAuthorized() {
	s.authorized = true
	if s.authTimer != nil {
		s.authTimer.Stop()
	}
}

func (s *Session) sendError(code protocol.Code, msg, channel string) {
	s.conn.SendPayload(protocol.ErrorFrame(code, msg, channel))
}

// HandleMessage processes one text message from the client.
func (s *Session) HandleMessage(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	f, err := protocol.DecodeClientFrame(b)
	if err != nil {
		s.sendError(0, "Invalid message format: "+err.Error(), "")
		return
	}
	switch f.Event {
	case protocol.EventPing:
		s.conn.SendPayload(protocol.Pong)
	case protocol.EventPong:
		// Activity was recorded by the transport.
	case protocol.EventSubscribe:
		s.subscribe(f)
	case protocol.EventUnsubscribe:
		s.unsubscribe(f)
	case protocol.EventSignin:
		s.signin(f)
	default:
		switch {
		case hasPrefix(f.Event, protocol.ClientEventPrefix):
			s.clientEvent(f)
		case hasPrefix(f.Event, "pusher:"):
			s.sendError(0, "Unsupported event: "+truncate(f.Event, 64), "")
		default:
			// pusher_internal:* and anything else from a client is ignored.
		}
	}
}

// Closed releases everything the connection held: channels, presence
// membership, signin. The transport calls it once, after the last message.
func (s *Session) Closed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.authTimer != nil {
		s.authTimer.Stop()
	}
	for i := len(s.subs) - 1; i >= 0; i-- {
		s.leave(s.subs[i])
	}
	s.subs = nil
	if s.user != nil {
		s.signout()
	}
	s.node.release(s)
	s.cancel()
}

func (s *Session) find(name string) int {
	for i, sub := range s.subs {
		if sub.channel.Name == name {
			return i
		}
	}
	return -1
}

// IsSubscribed reports whether the session is on channel (for the API and tests).
func (s *Session) IsSubscribed(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.find(channel) >= 0
}

func (s *Session) topic(channel string) broker.Topic {
	return broker.Topic{App: s.app.ID, Channel: channel}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
