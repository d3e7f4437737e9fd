// Package wsframe holds the tiny amount of RFC 6455 framing shared by the
// measurement binaries: encoding an unmasked server frame once, and parsing
// frame headers out of a byte slice that may end mid-frame.
package wsframe

import (
	"encoding/binary"
	"errors"
)

// Opcodes used here.
const (
	OpCont   = 0x0
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// ConnectionEstablished is the Pusher greeting every server sends first.
const ConnectionEstablished = `{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}`

// Encode returns a complete, unmasked, FIN frame (server → client).
func Encode(op byte, payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xFFFF:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | op
	return append(b, payload...)
}

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	Op     byte
	Masked bool
	Mask   [4]byte
	Len    int // payload length
	Size   int // header length in bytes
}

// ErrTooLarge is returned for frames whose payload exceeds the caller's limit.
var ErrTooLarge = errors.New("wsframe: frame too large")

// Parse parses the header at the start of b. ok=false means b does not yet
// hold the whole header; the caller must keep the bytes and wait for more.
func Parse(b []byte, limit int) (h Header, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Op = b[0] & 0x0F
	h.Masked = b[1]&0x80 != 0
	l := int(b[1] & 0x7F)
	h.Size = 2
	switch l {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		l = int(binary.BigEndian.Uint16(b[2:]))
		h.Size = 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > uint64(limit) {
			return h, false, ErrTooLarge
		}
		l = int(u)
		h.Size = 10
	}
	if l > limit {
		return h, false, ErrTooLarge
	}
	h.Len = l
	if h.Masked {
		if len(b) < h.Size+4 {
			return h, false, nil
		}
		copy(h.Mask[:], b[h.Size:])
		h.Size += 4
	}
	return h, true, nil
}

// Unmask XORs p in place with the mask.
func Unmask(p []byte, mask [4]byte) {
	for i := range p {
		p[i] ^= mask[i&3]
	}
}
