package push

import (
	"encoding/binary"
	"errors"
)

// Control messages travel between nodes on per-node broker topics
// (NodeTopic). Their wire format, inside broker.Message.Payload:
//
//	request  'Q' uvarint(id) str(from) str(app) kind str(target) payload…
//	reply    'A' uvarint(id) str(from) uvarint(n) n × str(socket id)
//
// str is a uvarint length and that many bytes; kind is 'u' (a user id) or
// 's' (a socket id); payload, the rest of a request, is the Pusher JSON frame
// to deliver. id is the requester's call id; from is the sender's node id
// (the requester's for a request, the answering node's for a reply).
// decodeControl rejects anything else: an unknown type or kind, a truncated
// or non-minimal length, trailing bytes after a reply, more than maxIDs ids.

const (
	typeRequest = 'Q'
	typeReply   = 'A'

	kindUser   = 'u'
	kindSocket = 's'

	// maxStr bounds node ids, app ids, user ids and socket ids on the wire.
	maxStr = 1024
	// maxIDs bounds the socket ids of one reply.
	maxIDs = 1 << 20
)

var errControl = errors.New("push: malformed control message")

// control is a decoded control message.
type control struct {
	typ     byte
	id      uint64
	from    string
	app     string // request
	kind    byte   // request
	target  string // request
	payload []byte // request; aliases the input
	sockets []string
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendRequest encodes a request.
func appendRequest(dst []byte, id uint64, from, app string, kind byte, target string, payload []byte) []byte {
	dst = append(dst, typeRequest)
	dst = binary.AppendUvarint(dst, id)
	dst = appendStr(dst, from)
	dst = appendStr(dst, app)
	dst = append(dst, kind)
	dst = appendStr(dst, target)
	return append(dst, payload...)
}

// appendReply encodes a reply.
func appendReply(dst []byte, id uint64, from string, sockets []string) []byte {
	dst = append(dst, typeReply)
	dst = binary.AppendUvarint(dst, id)
	dst = appendStr(dst, from)
	dst = binary.AppendUvarint(dst, uint64(len(sockets)))
	for _, s := range sockets {
		dst = appendStr(dst, s)
	}
	return dst
}

// reader consumes a control message; the first error sticks.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	if r.bad {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != uvarintLen(v) {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.bad || len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.bad || n > maxStr || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// decodeControl parses a control message. A request's payload aliases b.
func decodeControl(b []byte) (*control, error) {
	r := &reader{b: b}
	m := &control{typ: r.byte()}
	m.id = r.uvarint()
	m.from = r.str()
	switch m.typ {
	case typeRequest:
		m.app = r.str()
		m.kind = r.byte()
		m.target = r.str()
		if m.kind != kindUser && m.kind != kindSocket {
			r.bad = true
		}
		if !r.bad && len(r.b) > 0 {
			m.payload = r.b
		}
	case typeReply:
		n := r.uvarint()
		// Every id takes at least one byte: a count beyond the rest is a lie.
		if n > maxIDs || n > uint64(len(r.b)) {
			r.bad = true
		}
		for i := uint64(0); i < n && !r.bad; i++ {
			m.sockets = append(m.sockets, r.str())
		}
		if len(r.b) > 0 {
			r.bad = true
		}
	default:
		r.bad = true
	}
	if r.bad || m.from == "" {
		return nil, errControl
	}
	return m, nil
}
