package edge

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// event is one thing the parser reported.
type event struct {
	control bool
	op      ws.OpCode
	payload string
}

func (e event) String() string {
	return fmt.Sprintf("{ctl:%v op:%d %q}", e.control, e.op, e.payload)
}

// recSink records everything, copying payloads (they are only valid during
// the call).
type recSink struct{ events []event }

func (s *recSink) onMessage(op ws.OpCode, p []byte) {
	s.events = append(s.events, event{false, op, string(p)})
}

func (s *recSink) onControl(op ws.OpCode, p []byte) {
	s.events = append(s.events, event{true, op, string(p)})
}

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame returns a masked client frame.
func clientFrame(op ws.OpCode, fin bool, payload string) []byte {
	f := ws.NewFrame(op, fin, []byte(payload))
	f = ws.MaskFrameWith(f, testMask)
	return ws.MustCompileFrame(f)
}

// rawFrame hand-builds a frame with full control of the header bits.
func rawFrame(b0 byte, masked bool, payload []byte) []byte {
	var out []byte
	out = append(out, b0)
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		out = append(out, testMask[:]...)
		ws.Cipher(p, testMask, 0)
	}
	return append(out, p...)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func text(s string) event { return event{false, ws.OpText, s} }

// feedAll feeds chunks in order, stopping at the first error.
func feedAll(p *frameParser, maxMsg int, chunks ...[]byte) ([]event, error) {
	var s recSink
	for _, c := range chunks {
		if err := p.feed(append([]byte(nil), c...), maxMsg, &s); err != nil {
			return s.events, err
		}
	}
	return s.events, nil
}

func sameEvents(a, b []event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParserSingleFrame(t *testing.T) {
	var p frameParser
	msg := `{"event":"pusher:ping","data":{}}`
	got, err := feedAll(&p, 1<<20, clientFrame(ws.OpText, true, msg))
	if err != nil {
		t.Fatal(err)
	}
	if want := []event{text(msg)}; !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(p.partial) != 0 || len(p.frag) != 0 {
		t.Fatalf("parser kept memory after a complete frame: partial %d frag %d", len(p.partial), len(p.frag))
	}
	// Empty text frame and binary frame.
	got, err = feedAll(&p, 1<<20, clientFrame(ws.OpText, true, ""), clientFrame(ws.OpBinary, true, "\x00\xff"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []event{text(""), {false, ws.OpBinary, "\x00\xff"}}; !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParserLengthEncodings(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		var p frameParser
		msg := strings.Repeat("a", n)
		got, err := feedAll(&p, 1<<20, clientFrame(ws.OpText, true, msg))
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if len(got) != 1 || got[0] != text(msg) {
			t.Fatalf("len %d: got %d events", n, len(got))
		}
	}
}

func TestParserSeveralFramesInOneBuffer(t *testing.T) {
	var p frameParser
	buf := concat(
		clientFrame(ws.OpText, true, "one"),
		clientFrame(ws.OpPing, true, "p"),
		clientFrame(ws.OpText, true, strings.Repeat("2", 300)),
		clientFrame(ws.OpText, true, "three"),
	)
	got, err := feedAll(&p, 1<<20, buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []event{text("one"), {true, ws.OpPing, "p"}, text(strings.Repeat("2", 300)), text("three")}
	if !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParserByteAtATime(t *testing.T) {
	buf := concat(
		clientFrame(ws.OpText, true, "héllo"),
		clientFrame(ws.OpText, false, "frag"),
		clientFrame(ws.OpPing, true, "ping"),
		clientFrame(ws.OpContinuation, true, "ment"),
		clientFrame(ws.OpText, true, strings.Repeat("x", 200)),
		clientFrame(ws.OpText, true, strings.Repeat("y", 70000)),
		clientFrame(ws.OpClose, true, "\x03\xe8bye"),
	)
	want := []event{text("héllo"), {true, ws.OpPing, "ping"}, text("fragment"), text(strings.Repeat("x", 200)),
		text(strings.Repeat("y", 70000)), {true, ws.OpClose, "\x03\xe8bye"}}
	var p frameParser
	var s recSink
	for i := range buf {
		if err := p.feed([]byte{buf[i]}, 1<<20, &s); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
		if len(p.partial) > 70000+14 {
			t.Fatalf("partial grew to %d", len(p.partial))
		}
	}
	if !sameEvents(s.events, want) {
		t.Fatalf("got %v, want %v", s.events, want)
	}
	if len(p.partial) != 0 || len(p.frag) != 0 {
		t.Fatal("parser kept memory after complete input")
	}

	// Every split point of a smaller stream gives the same result.
	small := concat(clientFrame(ws.OpText, true, "a"), clientFrame(ws.OpText, false, "b"),
		clientFrame(ws.OpPong, true, ""), clientFrame(ws.OpContinuation, true, "c"),
		clientFrame(ws.OpText, true, strings.Repeat("z", 130)))
	wantSmall := []event{text("a"), {true, ws.OpPong, ""}, text("bc"), text(strings.Repeat("z", 130))}
	for i := 0; i <= len(small); i++ {
		var p frameParser
		got, err := feedAll(&p, 1<<20, small[:i], small[i:])
		if err != nil || !sameEvents(got, wantSmall) {
			t.Fatalf("split at %d: got %v, %v", i, got, err)
		}
	}
}

// Payloads are unmasked in place; the caller's buffer is only used during feed.
func TestParserTailIsCopied(t *testing.T) {
	f := clientFrame(ws.OpText, true, "hello world")
	var p frameParser
	var s recSink
	buf := append([]byte(nil), f[:5]...)
	if err := p.feed(buf, 1<<20, &s); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0xee // the caller reuses its read buffer
	}
	if err := p.feed(append([]byte(nil), f[5:]...), 1<<20, &s); err != nil {
		t.Fatal(err)
	}
	if !sameEvents(s.events, []event{text("hello world")}) {
		t.Fatalf("got %v", s.events)
	}
}

func TestParserFragmented(t *testing.T) {
	var p frameParser
	got, err := feedAll(&p, 1<<20,
		clientFrame(ws.OpText, false, `{"event":`),
		clientFrame(ws.OpContinuation, false, `"client-x",`),
		clientFrame(ws.OpContinuation, false, ``),
		clientFrame(ws.OpContinuation, true, `"data":{}}`),
		clientFrame(ws.OpBinary, false, "\x01"),
		clientFrame(ws.OpContinuation, true, "\x02"),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []event{text(`{"event":"client-x","data":{}}`), {false, ws.OpBinary, "\x01\x02"}}
	if !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(p.frag) != 0 {
		t.Fatal("frag not released after the final fragment")
	}

	// A multi-byte rune split across fragments is valid UTF-8 as a whole.
	euro := "€" // e2 82 ac
	got, err = feedAll(&p, 1<<20, clientFrame(ws.OpText, false, euro[:1]), clientFrame(ws.OpContinuation, true, euro[1:]))
	if err != nil || !sameEvents(got, []event{text(euro)}) {
		t.Fatalf("split rune: got %v, %v", got, err)
	}
}

func TestParserControlInterleavedInFragments(t *testing.T) {
	var p frameParser
	got, err := feedAll(&p, 1<<20, concat(
		clientFrame(ws.OpText, false, "ab"),
		clientFrame(ws.OpPing, true, "1"),
		clientFrame(ws.OpContinuation, false, "cd"),
		clientFrame(ws.OpPong, true, "2"),
		clientFrame(ws.OpPing, true, ""),
		clientFrame(ws.OpContinuation, true, "ef"),
	))
	if err != nil {
		t.Fatal(err)
	}
	want := []event{{true, ws.OpPing, "1"}, {true, ws.OpPong, "2"}, {true, ws.OpPing, ""}, text("abcdef")}
	if !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Control frames are not part of the fragmented message, so they must not
// count against its size limit. With maxMsg 100 and 90 bytes of fragments
// buffered, a 20-byte ping is legal (RFC 6455 §5.4) and the message, which
// ends at 100 bytes, fits.
//
// KNOWN BUG: feed applies len(p.frag)+h.Length > maxMsg to control frames too
// and returns errTooBig for the ping.
func TestParserControlInFragmentNotCountedInLimit(t *testing.T) {
	var p frameParser
	got, err := feedAll(&p, 100, concat(
		clientFrame(ws.OpText, false, strings.Repeat("a", 90)),
		clientFrame(ws.OpPing, true, strings.Repeat("p", 20)),
		clientFrame(ws.OpContinuation, true, strings.Repeat("b", 10)),
	))
	if err != nil {
		t.Fatalf("ping inside a fragmented message near the size limit: %v (want no error)", err)
	}
	want := []event{{true, ws.OpPing, strings.Repeat("p", 20)}, text(strings.Repeat("a", 90) + strings.Repeat("b", 10))}
	if !sameEvents(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParserErrors(t *testing.T) {
	const max = 1000
	tests := []struct {
		name  string
		input []byte
		want  error
		// events expected before the error
		before []event
	}{
		{"unmasked text", rawFrame(0x81, false, []byte("hi")), errNotMasked, nil},
		{"unmasked after a good frame", concat(clientFrame(ws.OpText, true, "ok"), rawFrame(0x81, false, []byte("hi"))), errNotMasked, []event{text("ok")}},
		{"unmasked ping", rawFrame(0x89, false, nil), errNotMasked, nil},
		{"too big single", clientFrame(ws.OpText, true, strings.Repeat("a", max+1)), errTooBig, nil},
		{"too big header only", rawFrame(0x81, true, make([]byte, max+1))[:8], errTooBig, nil},
		{"too big 64-bit length", []byte{0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, errTooBig, nil},
		{"too big across fragments", concat(clientFrame(ws.OpText, false, strings.Repeat("a", 600)), clientFrame(ws.OpContinuation, true, strings.Repeat("b", 401))), errTooBig, nil},
		{"exactly max", clientFrame(ws.OpText, true, strings.Repeat("a", max)), nil, []event{text(strings.Repeat("a", max))}},
		{"exactly max across fragments", concat(clientFrame(ws.OpText, false, strings.Repeat("a", 600)), clientFrame(ws.OpContinuation, true, strings.Repeat("b", 400))), nil, []event{text(strings.Repeat("a", 600) + strings.Repeat("b", 400))}},
		{"bad utf8", clientFrame(ws.OpText, true, "a\xffb"), errNotUTF8, nil},
		{"bad utf8 surrogate", clientFrame(ws.OpText, true, "\xed\xa0\x80"), errNotUTF8, nil},
		{"bad utf8 truncated at end", clientFrame(ws.OpText, true, "€"[:2]), errNotUTF8, nil},
		{"bad utf8 fragmented", concat(clientFrame(ws.OpText, false, "ok"), clientFrame(ws.OpContinuation, true, "\xc3")), errNotUTF8, nil},
		{"binary not utf8 is fine", clientFrame(ws.OpBinary, true, "\xff"), nil, []event{{false, ws.OpBinary, "\xff"}}},
		{"rsv1", rawFrame(0x80|0x40|0x1, true, []byte("x")), errReserved, nil},
		{"rsv2", rawFrame(0x80|0x20|0x1, true, []byte("x")), errReserved, nil},
		{"rsv3", rawFrame(0x80|0x10|0x1, true, []byte("x")), errReserved, nil},
		{"reserved opcode 3", rawFrame(0x83, true, []byte("x")), errReserved, nil},
		{"reserved opcode 7", rawFrame(0x87, true, nil), errReserved, nil},
		{"reserved opcode 0xb", rawFrame(0x8b, true, nil), errReserved, nil},
		{"reserved opcode 0xf", rawFrame(0x8f, true, nil), errReserved, nil},
		{"continuation without start", clientFrame(ws.OpContinuation, true, "x"), errContinuation, nil},
		{"continuation (not fin) without start", clientFrame(ws.OpContinuation, false, "x"), errContinuation, nil},
		{"continuation after finished message", concat(clientFrame(ws.OpText, true, "a"), clientFrame(ws.OpContinuation, true, "b")), errContinuation, []event{text("a")}},
		{"new text inside fragments", concat(clientFrame(ws.OpText, false, "a"), clientFrame(ws.OpText, true, "b")), errContinuation, nil},
		{"ping payload 126", rawFrame(0x89, true, make([]byte, 126)), errControl, nil},
		{"ping payload 125 ok", rawFrame(0x89, true, make([]byte, 125)), nil, []event{{true, ws.OpPing, string(make([]byte, 125))}}},
		{"close payload 126", rawFrame(0x88, true, make([]byte, 126)), errControl, nil},
		{"fragmented ping", rawFrame(0x09, true, []byte("x")), errControl, nil},
		{"64-bit length with MSB set", []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, errControl, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p frameParser
			got, err := feedAll(&p, max, tt.input)
			if tt.want == nil && err != nil {
				t.Fatalf("error %v, want none", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if !sameEvents(got, tt.before) {
				t.Fatalf("events %v, want %v", got, tt.before)
			}
		})
	}
}

func TestCloseStatus(t *testing.T) {
	tests := map[error]ws.StatusCode{
		errTooBig:       ws.StatusMessageTooBig,
		errNotUTF8:      ws.StatusInvalidFramePayloadData,
		errNotMasked:    ws.StatusProtocolError,
		errReserved:     ws.StatusProtocolError,
		errControl:      ws.StatusProtocolError,
		errContinuation: ws.StatusProtocolError,
	}
	for err, want := range tests {
		if got := closeStatus(err); got != want {
			t.Errorf("closeStatus(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestEncodeTextRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 100000} {
		payload := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		wire := EncodeText(payload)
		f, err := ws.ReadFrame(bytes.NewReader(wire))
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if !f.Header.Fin || f.Header.OpCode != ws.OpText || f.Header.Masked || f.Header.Rsv != 0 {
			t.Fatalf("len %d: header %+v", n, f.Header)
		}
		if f.Header.Length != int64(n) || !bytes.Equal(f.Payload, payload) {
			t.Fatalf("len %d: got length %d", n, f.Header.Length)
		}
		wantHeader := 2
		switch {
		case n > 65535:
			wantHeader = 10
		case n > 125:
			wantHeader = 4
		}
		if len(wire) != wantHeader+n {
			t.Fatalf("len %d: frame is %d bytes, want minimal header %d + payload", n, len(wire), wantHeader)
		}
	}
}

func TestCloseFrameRoundTrip(t *testing.T) {
	tests := []struct {
		code   int
		reason string
		want   string
	}{
		{4001, "Application does not exist", "Application does not exist"},
		{1000, "", ""},
		{4200, strings.Repeat("r", 123), strings.Repeat("r", 123)},
		{4200, strings.Repeat("r", 200), strings.Repeat("r", 123)}, // truncated to fit 125 bytes
	}
	for _, tt := range tests {
		wire := closeFrame(tt.code, tt.reason)
		f, err := ws.ReadFrame(bytes.NewReader(wire))
		if err != nil {
			t.Fatalf("closeFrame(%d): %v", tt.code, err)
		}
		if f.Header.OpCode != ws.OpClose || !f.Header.Fin || f.Header.Masked || f.Header.Length > 125 {
			t.Fatalf("closeFrame(%d) header %+v", tt.code, f.Header)
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		if int(code) != tt.code || reason != tt.want {
			t.Fatalf("closeFrame(%d, %q...) parses to %d %q", tt.code, tt.reason[:min(len(tt.reason), 10)], code, reason)
		}
	}
}

// RFC 6455 §5.5.1: the close reason must be valid UTF-8, so truncation to 123
// bytes must not cut a multi-byte rune.
//
// KNOWN BUG: closeFrame truncates at byte 123 regardless of rune boundaries.
func TestCloseFrameTruncatesOnRuneBoundary(t *testing.T) {
	reason := strings.Repeat("é", 100) // 200 bytes; byte 123 is inside a rune
	f, err := ws.ReadFrame(bytes.NewReader(closeFrame(4200, reason)))
	if err != nil {
		t.Fatal(err)
	}
	_, got := ws.ParseCloseFrameData(f.Payload)
	if len(got) > 123 || !strings.HasPrefix(reason, got) {
		t.Fatalf("reason %q is not a prefix of at most 123 bytes", got)
	}
	if !utf8.ValidString(got) {
		t.Fatalf("close reason truncated inside a rune: % x", got[len(got)-3:])
	}
}

// A server frame produced by EncodeText, masked like a client would, goes
// through the parser intact.
func TestEncodeTextThroughParser(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		payload := strings.Repeat("q", n)
		wire := EncodeText([]byte(payload))
		f, err := ws.ReadFrame(bytes.NewReader(wire))
		if err != nil {
			t.Fatal(err)
		}
		client := ws.MustCompileFrame(ws.MaskFrameWith(f, testMask))
		var p frameParser
		got, err := feedAll(&p, 1<<20, client)
		if err != nil || len(got) != 1 || got[0] != text(payload) {
			t.Fatalf("len %d: %v (%d events)", n, err, len(got))
		}
	}
}

func BenchmarkParserFeed(b *testing.B) {
	msg := clientFrame(ws.OpText, true, `{"event":"client-move","channel":"presence-room","data":{"x":12,"y":34}}`)
	buf := make([]byte, len(msg))
	var p frameParser
	var s nopSink
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		copy(buf, msg)
		if err := p.feed(buf, 1<<20, s); err != nil {
			b.Fatal(err)
		}
	}
}

type nopSink struct{}

func (nopSink) onMessage(ws.OpCode, []byte) {}
func (nopSink) onControl(ws.OpCode, []byte) {}
