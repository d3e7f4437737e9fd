package edge

import (
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// parseChunks feeds data in the given pieces (copies: feed unmasks in place)
// and checks the parser's memory bound after every call.
func parseChunks(t *testing.T, maxMsg int, chunks ...[]byte) ([]event, error) {
	t.Helper()
	var p frameParser
	var s recSink
	for _, c := range chunks {
		err := p.feed(append([]byte(nil), c...), maxMsg, &s)
		if err != nil {
			return s.events, err
		}
		if len(p.partial) > maxMsg+14 {
			t.Fatalf("partial holds %d bytes, more than maxMsg+14 = %d", len(p.partial), maxMsg+14)
		}
		if len(p.frag) > maxMsg {
			t.Fatalf("frag holds %d bytes, more than maxMsg = %d", len(p.frag), maxMsg)
		}
	}
	return s.events, nil
}

func FuzzFrameParser(f *testing.F) {
	seeds := [][]byte{
		clientFrame(ws.OpText, true, `{"event":"pusher:ping","data":{}}`),
		concat(clientFrame(ws.OpText, false, "ab"), clientFrame(ws.OpPing, true, "p"), clientFrame(ws.OpContinuation, true, "cd")),
		concat(clientFrame(ws.OpText, true, strings.Repeat("x", 126)), clientFrame(ws.OpClose, true, "\x03\xe8")),
		clientFrame(ws.OpText, true, strings.Repeat("y", 300)), // over the fuzz limit
		clientFrame(ws.OpBinary, true, "\xff\x00"),
		clientFrame(ws.OpText, true, "\xff"),
		clientFrame(ws.OpContinuation, true, "x"),
		rawFrame(0x81, false, []byte("unmasked")),
		rawFrame(0xc1, true, []byte("rsv")),
		rawFrame(0x89, true, make([]byte, 126)),
		{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
		{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 'a'},
		{},
	}
	for i, s := range seeds {
		f.Add(s, uint16(i*3), uint8(200))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16, limit uint8) {
		maxMsg := int(limit) + 1
		whole, wholeErr := parseChunks(t, maxMsg, data)
		at := int(split) % (len(data) + 1)
		two, twoErr := parseChunks(t, maxMsg, data[:at], data[at:])
		if (wholeErr == nil) != (twoErr == nil) {
			t.Fatalf("whole: err %v; split at %d: err %v", wholeErr, at, twoErr)
		}
		if wholeErr != nil && wholeErr != twoErr {
			t.Fatalf("whole: err %v; split at %d: err %v", wholeErr, at, twoErr)
		}
		if !sameEvents(whole, two) {
			t.Fatalf("whole gave %v; split at %d gave %v", whole, at, two)
		}
		if len(data) <= 512 {
			pieces := make([][]byte, len(data))
			for i := range data {
				pieces[i] = data[i : i+1]
			}
			one, oneErr := parseChunks(t, maxMsg, pieces...)
			if (wholeErr == nil) != (oneErr == nil) || !sameEvents(whole, one) {
				t.Fatalf("whole gave %v, %v; byte at a time gave %v, %v", whole, wholeErr, one, oneErr)
			}
		}
		for _, e := range whole {
			if !e.control && len(e.payload) > maxMsg {
				t.Fatalf("message of %d bytes passed the %d limit", len(e.payload), maxMsg)
			}
			if e.control && len(e.payload) > 125 {
				t.Fatalf("control frame with %d bytes", len(e.payload))
			}
		}
	})
}
