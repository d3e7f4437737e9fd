package edge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// EncodeText returns a complete unmasked server text frame carrying payload.
// The result is immutable and may be shared by any number of connections.
func EncodeText(payload []byte) []byte {
	return encodeFrame(ws.OpText, payload)
}

// encodeFrame returns a final, unmasked frame of op carrying payload, in one
// allocation (RFC 6455 §5.2 header: 2, 4 or 10 bytes).
func encodeFrame(op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	h := 2
	switch {
	case n > 0xffff:
		h = 10
	case n > 125:
		h = 4
	}
	b := make([]byte, h, h+n)
	b[0] = 0x80 | byte(op)
	switch h {
	case 2:
		b[1] = byte(n)
	case 4:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	return append(b, payload...)
}

// closeFrame returns a close frame with a status code and reason (≤ 123 bytes).
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		cut := 123
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	return encodeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), reason))
}

// Frame parsing errors; each closes the connection with its WebSocket status.
var (
	errNotMasked    = errors.New("client frame is not masked")
	errReserved     = errors.New("reserved bits or opcode set")
	errControl      = errors.New("bad control frame")
	errTooBig       = errors.New("message too big")
	errContinuation = errors.New("unexpected continuation frame")
	errNotUTF8      = errors.New("text message is not valid UTF-8")
)

// closeStatus maps a parse error to the WebSocket close status to send.
func closeStatus(err error) ws.StatusCode {
	switch err {
	case errTooBig:
		return ws.StatusMessageTooBig
	case errNotUTF8:
		return ws.StatusInvalidFramePayloadData
	}
	return ws.StatusProtocolError
}

// headerLen returns the length of the frame header whose first two bytes are
// b0 and b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// frameParser assembles client messages from raw bytes. It keeps no memory
// between calls unless a frame or fragmented message is incomplete.
type frameParser struct {
	partial []byte // bytes of an incomplete frame
	frag    []byte // payload of an incomplete fragmented message
	fragOp  ws.OpCode
}

// idle reports whether the parser holds nothing between calls.
func (p *frameParser) idle() bool {
	return len(p.partial) == 0 && p.fragOp == 0 && p.frag == nil
}

// frameSink receives what the parser finds. Payloads are only valid during the
// call.
type frameSink interface {
	onMessage(op ws.OpCode, payload []byte)
	onControl(op ws.OpCode, payload []byte)
}

// feed parses data (which it may modify: payloads are unmasked in place) and
// reports complete frames to sink. maxMsg caps a message's payload.
func (p *frameParser) feed(data []byte, maxMsg int, sink frameSink) error {
	usingPartial := len(p.partial) > 0
	if usingPartial {
		p.partial = append(p.partial, data...)
		data = p.partial
	}
	for len(data) >= 2 {
		hl := headerLen(data[1])
		if len(data) < hl {
			break
		}
		h, err := ws.ReadHeaderBuffer(bytes.NewReader(data[:hl]), make([]byte, 0, ws.MaxHeaderSize))
		if err != nil {
			return errControl
		}
		if !h.Masked {
			return errNotMasked
		}
		if h.Rsv != 0 || h.OpCode.IsReserved() {
			return errReserved
		}
		if h.OpCode.IsControl() && (h.Length > 125 || !h.Fin) {
			return errControl
		}
		if h.Length > int64(maxMsg) || (!h.OpCode.IsControl() && int64(len(p.frag))+h.Length > int64(maxMsg)) {
			return errTooBig
		}
		end := hl + int(h.Length)
		if len(data) < end {
			break
		}
		payload := data[hl:end]
		ws.Cipher(payload, h.Mask, 0)
		data = data[end:]
		if err := p.frame(h, payload, sink); err != nil {
			return err
		}
	}
	if len(data) == 0 {
		// Nothing pending: an idle connection holds no buffer.
		p.partial = nil
		return nil
	}
	// Keep the incomplete tail; copy since data may alias the caller's buffer.
	if usingPartial {
		n := copy(p.partial, data)
		p.partial = p.partial[:n]
	} else {
		p.partial = append(p.partial[:0], data...)
	}
	return nil
}

func (p *frameParser) frame(h ws.Header, payload []byte, sink frameSink) error {
	switch {
	case h.OpCode.IsControl():
		sink.onControl(h.OpCode, payload)
		return nil
	case h.OpCode == ws.OpContinuation:
		if p.fragOp == 0 {
			return errContinuation
		}
		p.frag = append(p.frag, payload...)
		if !h.Fin {
			return nil
		}
		op, msg := p.fragOp, p.frag
		p.fragOp, p.frag = 0, nil
		return deliver(op, msg, sink)
	default:
		if p.fragOp != 0 {
			return errContinuation
		}
		if !h.Fin {
			p.fragOp = h.OpCode
			p.frag = append([]byte(nil), payload...)
			return nil
		}
		return deliver(h.OpCode, payload, sink)
	}
}

func deliver(op ws.OpCode, msg []byte, sink frameSink) error {
	if op == ws.OpText && !utf8.Valid(msg) {
		return errNotUTF8
	}
	sink.onMessage(op, msg)
	return nil
}
