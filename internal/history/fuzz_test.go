package history_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldrt/herald/internal/history"
)

// FuzzSerial: SerialOf never panics and only accepts frames ending with
// ,"serial":<digits>} within range; AppendFrame gives valid JSON whose
// serial, event, channel and data read back exactly, and SerialOf finds the
// serial in it.
func FuzzSerial(f *testing.F) {
	f.Add([]byte(`{"event":"e","data":"d","channel":"c","serial":42}`), uint64(42), "msg", "chat-1", `{"text":"hi"}`)
	f.Add([]byte(`{"event":"e","data":{"serial":5},"channel":"c"}`), uint64(history.MaxSerial), "", "", "")
	f.Add([]byte(`,"serial":9007199254740992}`), uint64(1<<63), "\u2028", "x", "\x00\"\\")
	f.Fuzz(func(t *testing.T, raw []byte, serial uint64, event, channel, data string) {
		if v, ok := history.SerialOf(raw); ok {
			str := string(raw)
			i := strings.LastIndex(str, `,"serial":`)
			digits := strings.TrimSuffix(str[max(i, 0)+len(`,"serial":`):], "}")
			n, err := strconv.ParseUint(digits, 10, 64)
			if i < 0 || !strings.HasSuffix(str, "}") || err != nil || n != v || v > history.MaxSerial {
				t.Fatalf("SerialOf(%q) = %d", raw, v)
			}
		}
		s := serial % (history.MaxSerial + 1)
		frame := history.AppendFrame(nil, event, channel, data, s)
		if got, ok := history.SerialOf(frame); !ok || got != s {
			t.Fatalf("SerialOf(AppendFrame(…, %d)) = %d, %v: %s", s, got, ok, frame)
		}
		var v struct {
			Event   string `json:"event"`
			Channel string `json:"channel"`
			Data    string `json:"data"`
			Serial  uint64 `json:"serial"`
		}
		if err := json.Unmarshal(frame, &v); err != nil {
			t.Fatalf("frame is not JSON: %v: %s", err, frame)
		}
		if v.Serial != s {
			t.Fatalf("serial %d read back as %d", s, v.Serial)
		}
		if utf8.ValidString(event) && utf8.ValidString(channel) && utf8.ValidString(data) && (v.Event != event || (channel != "" && v.Channel != channel) || v.Data != data) {
			t.Fatalf("frame %s does not read back %q %q %q", frame, event, channel, data)
		}
	})
}
