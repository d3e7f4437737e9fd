package redisbroker

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/internal/broker"
)

// Wire format of a message published on a topic's Redis channel (the topic
// itself is the channel name, so it is not repeated):
//
//	byte 0      version (wireVersion)
//	byte 1      kind (broker.Kind)
//	uvarint     length of Exclude, minimally encoded
//	bytes       Exclude (a socket_id, usually empty)
//	rest        Payload, the Pusher JSON frame as subscribers receive it
//
// Anything else (unknown version or kind, a truncated or non-minimal length,
// an exclude longer than the message) is rejected by decodeMessage.
const wireVersion = 1

// maxExclude bounds the socket_id a message may carry; Pusher socket ids are
// two decimal integers ("1234.5678"), far below this.
const maxExclude = 256

var (
	errShort   = errors.New("redisbroker: message too short")
	errVersion = errors.New("redisbroker: unknown message version")
	errKind    = errors.New("redisbroker: unknown message kind")
	errLength  = errors.New("redisbroker: bad exclude length")
)

// appendMessage appends m's wire encoding to dst.
func appendMessage(dst []byte, m *broker.Message) []byte {
	dst = append(dst, wireVersion, byte(m.Kind))
	dst = binary.AppendUvarint(dst, uint64(len(m.Exclude)))
	dst = append(dst, m.Exclude...)
	return append(dst, m.Payload...)
}

// encodedLen is the size of m's wire encoding.
func encodedLen(m *broker.Message) int {
	return 2 + uvarintLen(uint64(len(m.Exclude))) + len(m.Exclude) + len(m.Payload)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// decodeMessage parses a wire message. Payload aliases data. Topic is left
// empty: the caller knows it from the channel the message came on.
func decodeMessage(data []byte) (*broker.Message, error) {
	if len(data) < 3 {
		return nil, errShort
	}
	if data[0] != wireVersion {
		return nil, errVersion
	}
	kind := broker.Kind(data[1])
	if kind > broker.KindTerminate {
		return nil, errKind
	}
	n, w := binary.Uvarint(data[2:])
	if w <= 0 || w != uvarintLen(n) || n > maxExclude || n > uint64(len(data)-2-w) {
		return nil, errLength
	}
	rest := data[2+w:]
	m := &broker.Message{Kind: kind, Exclude: string(rest[:n])}
	if p := rest[n:]; len(p) > 0 {
		m.Payload = p
	}
	return m, nil
}

// Redis channel names. A topic's channel is
//
//	herald{}:<len(app)>:<app>:<channel>
//
// The decimal length of the app id makes the name unambiguous whatever
// characters app ids and channel names contain. The empty hash tag "{}" comes
// first so Redis Cluster always hashes the whole name: without it a "{...}"
// inside an app id or channel name would become the hash tag and could pin
// many channels to one slot.
const (
	topicPrefix = "herald{}:"
	probePrefix = "herald{}probe:"
)

// channelName is the Redis channel of topic t.
func channelName(t broker.Topic) string {
	var b strings.Builder
	b.Grow(len(topicPrefix) + 4 + len(t.App) + len(t.Channel))
	b.WriteString(topicPrefix)
	b.WriteString(strconv.Itoa(len(t.App)))
	b.WriteByte(':')
	b.WriteString(t.App)
	b.WriteByte(':')
	b.WriteString(t.Channel)
	return b.String()
}

// parseChannelName inverts channelName.
func parseChannelName(name string) (broker.Topic, bool) {
	rest, ok := strings.CutPrefix(name, topicPrefix)
	if !ok {
		return broker.Topic{}, false
	}
	i := strings.IndexByte(rest, ':')
	// The length is canonical decimal: digits only (Atoi alone would take
	// "+1"), no leading zero; so a name parses only if it is the name of
	// its topic.
	if i <= 0 || rest[0] < '0' || rest[0] > '9' || (i > 1 && rest[0] == '0') {
		return broker.Topic{}, false
	}
	n, err := strconv.Atoi(rest[:i])
	if err != nil || n < 0 || n > len(rest)-i-2 || rest[i+1+n] != ':' {
		return broker.Topic{}, false
	}
	return broker.Topic{App: rest[i+1 : i+1+n], Channel: rest[i+2+n:]}, true
}

// probeName is the channel a node's liveness probe uses in shard mode.
func probeName(nodeID string) string { return probePrefix + nodeID }

// clusterProbeName is a node's probe channel on one Redis Cluster master: the
// hash tag places it in a slot that master owns.
func clusterProbeName(tag, nodeID string) string {
	return "herald{" + tag + "}probe:" + nodeID
}
