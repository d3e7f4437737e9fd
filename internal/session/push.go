package session

import (
	"strconv"
	"strings"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
)

// Socket ids of a cluster carry the tag of the node that assigned them: the
// first integer is tag × 10¹² + 12 random digits, the second 12 random digits.
const (
	socketIDPart = 1_000_000_000_000
	// MaxSocketIDTag is the largest node tag (a stays below 2⁶⁴).
	MaxSocketIDTag = 18_000_000
)

// SocketIDTagOf returns the node tag written in socketID by the node that
// assigned it (0 when it has none, as in a single process); ok is false when
// socketID is not of the form ^\d+\.\d+$ or its first integer is out of range.
func SocketIDTagOf(socketID string) (tag uint64, ok bool) {
	a, b, found := strings.Cut(socketID, ".")
	if !found || !digits(a) || !digits(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, false
	}
	return v / socketIDPart, true
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// offerer is implemented by transports that report whether a frame was
// queued (the edge's connections).
type offerer interface {
	OfferPayload(payload []byte) bool
}

// PushLocalUser writes payload (a Pusher JSON frame) to every connection of
// this node signed in as userID in app and returns the socket ids that
// queued it (appended to ids).
func (n *Node) PushLocalUser(app, userID string, payload []byte, ids []string) []string {
	return n.Hub.DeliverTo(broker.Topic{App: app, Channel: protocol.UserChannel(userID)}, payload, ids)
}

// PushLocalSocket writes payload to the connection socketID of app if this
// node holds it, and reports whether the connection queued it: false when
// there is no such open connection of app here, or it is closing.
func (n *Node) PushLocalSocket(app, socketID string, payload []byte) bool {
	s := n.Session(socketID)
	if s == nil || s.app.ID != app {
		return false
	}
	// No session lock: a handler may hold it while it waits on Redis. A
	// connection being torn down refuses the frame itself.
	if o, ok := s.conn.(offerer); ok {
		if !o.OfferPayload(payload) {
			return false
		}
	} else {
		s.conn.SendPayload(payload)
	}
	n.Hub.CountDelivered(1)
	return true
}
