package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// stdEncode is encoding/json's string encoding without HTML escaping.
func stdEncode(t testing.TB, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// checkAppendString checks that AppendString(s) is one valid JSON string that
// decodes to s (or to s with invalid bytes replaced by U+FFFD, as
// encoding/json does).
func checkAppendString(t testing.TB, s string) {
	t.Helper()
	prefix := []byte("pre")
	out := AppendString(prefix, s)
	if !bytes.HasPrefix(out, []byte("pre")) {
		t.Fatalf("AppendString(%q) dropped dst: %q", s, out)
	}
	enc := out[len("pre"):]
	if !json.Valid(enc) {
		t.Fatalf("AppendString(%q) = %q: not valid JSON", s, enc)
	}
	if !utf8.Valid(enc) {
		t.Fatalf("AppendString(%q) = %q: not valid UTF-8", s, enc)
	}
	var got string
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatalf("AppendString(%q) = %q: %v", s, enc, err)
	}
	want := s
	if !utf8.ValidString(s) {
		want = replaceInvalid(s)
	}
	if got != want {
		t.Fatalf("AppendString(%q) round-trips to %q, want %q", s, got, want)
	}
	// No raw control characters, U+2028 or U+2029 in the output.
	for _, r := range string(enc) {
		if r < 0x20 || r == '\u2028' || r == '\u2029' {
			t.Fatalf("AppendString(%q) = %q: unescaped %U", s, enc, r)
		}
	}
}

// replaceInvalid replaces each invalid byte of s with U+FFFD, as
// encoding/json does (strings.ToValidUTF8 would merge runs).
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for an invalid byte
		i += size
	}
	return b.String()
}

var edgeStrings = []string{
	"",
	"a",
	"hello world",
	`"`, `\`, `\"`, `"\"`, "/",
	"\x00", "\x01", "\x07", "\b", "\f", "\n", "\r", "\t", "\v", "\x1b", "\x1f", "\x7f",
	"<script>&</script>", // not HTML-escaped, but valid either way
	"\u2028", "\u2029", "a\u2028b\u2029c",
	"é", "日本語", "😀", "\U0010FFFF", "\uFFFD", "\uFEFF",
	"\xff", "\xfe\xff", "a\xffb", "\xc3", "\xc3\x28", "\xe2\x82", "\xe2\x28\xa1", "\xf0\x9f\x98",
	"\xed\xa0\x80",         // UTF-16 surrogate encoded in UTF-8: invalid
	"\xc0\xaf",             // overlong '/'
	"\xf4\x90\x80\x80",     // above U+10FFFF
	"\xe2\x80\xa8\xff\x00", // U+2028, invalid, NUL
	`{"socket_id":"1.2","activity_timeout":120}`,
	strings.Repeat("\"\\\n", 100),
	strings.Repeat("x", 10000),
}

func TestAppendStringEdgeCases(t *testing.T) {
	for _, s := range edgeStrings {
		checkAppendString(t, s)
	}
}

// For input without \b and \f (which encoding/json writes as short escapes),
// AppendString produces the same bytes as encoding/json with HTML escaping off.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range edgeStrings {
		if strings.ContainsAny(s, "\b\f") {
			continue
		}
		if got, want := AppendString(nil, s), stdEncode(t, s); !bytes.Equal(got, want) {
			t.Errorf("AppendString(%q) = %q, encoding/json = %q", s, got, want)
		}
	}
}

func TestReplaceInvalidMatchesEncodingJSON(t *testing.T) {
	for _, s := range edgeStrings {
		var std string
		if err := json.Unmarshal(stdEncode(t, s), &std); err != nil {
			t.Fatal(err)
		}
		if got := replaceInvalid(s); got != std {
			t.Errorf("replaceInvalid(%q) = %q, encoding/json gives %q", s, got, std)
		}
	}
}

func TestAppendStringRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune{'a', 'Z', '0', '"', '\\', '/', '\n', '\r', '\t', 0, 1, 0x1f, 0x7f, 'é', '日', '😀', '\u2028', '\u2029', 0xFFFD}
	for i := 0; i < 5000; i++ {
		var b []byte
		n := r.IntN(40)
		for j := 0; j < n; j++ {
			switch r.IntN(3) {
			case 0: // random byte, often invalid UTF-8
				b = append(b, byte(r.IntN(256)))
			default:
				b = utf8.AppendRune(b, alphabet[r.IntN(len(alphabet))])
			}
		}
		checkAppendString(t, string(b))
	}
}

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		event, channel, data string
		want                 string
	}{
		{"pusher_internal:subscription_succeeded", "private-orders", "{}",
			`{"event":"pusher_internal:subscription_succeeded","data":"{}","channel":"private-orders"}`},
		{"pusher:pong", "", "{}", `{"event":"pusher:pong","data":"{}"}`},
		{"my-event", "my-channel", `{"message":"hi \"there\""}`,
			`{"event":"my-event","data":"{\"message\":\"hi \\\"there\\\"\"}","channel":"my-channel"}`},
		{"e", "c", "", `{"event":"e","data":"","channel":"c"}`},
		{"e", "c", "line\nbreak<&>", `{"event":"e","data":"line\nbreak<&>","channel":"c"}`},
	}
	for _, tt := range tests {
		got := AppendEvent([]byte("x"), tt.event, tt.channel, tt.data)
		if string(got) != "x"+tt.want {
			t.Errorf("AppendEvent(%q, %q, %q) =\n %s\nwant\n %s", tt.event, tt.channel, tt.data, got[1:], tt.want)
		}
		if got := Event(tt.event, tt.channel, tt.data); string(got) != tt.want {
			t.Errorf("Event(%q, %q, %q) = %s, want %s", tt.event, tt.channel, tt.data, got, tt.want)
		}
		var f struct {
			Event   string  `json:"event"`
			Data    string  `json:"data"`
			Channel *string `json:"channel"`
		}
		if err := json.Unmarshal([]byte(tt.want), &f); err != nil {
			t.Fatal(err)
		}
		if f.Event != tt.event || f.Data != tt.data || (tt.channel == "") != (f.Channel == nil) {
			t.Errorf("AppendEvent(%q, %q, %q) decodes to %+v", tt.event, tt.channel, tt.data, f)
		}
	}
}

func TestAppendEventRaw(t *testing.T) {
	tests := []struct {
		event, channel string
		raw            []byte
		userID         string
		want           string
	}{
		{"client-x", "presence-r", []byte(`{"a":1}`), "42",
			`{"event":"client-x","data":{"a":1},"channel":"presence-r","user_id":"42"}`},
		{"client-x", "private-r", []byte(`"str"`), "",
			`{"event":"client-x","data":"str","channel":"private-r"}`},
		{"pusher:signin_success", "", []byte(`{"user_data":"{}"}`), "",
			`{"event":"pusher:signin_success","data":{"user_data":"{}"}}`},
		{"e", "", nil, "", `{"event":"e","data":"{}"}`}, // data is always present
	}
	for _, tt := range tests {
		if got := AppendEventRaw(nil, tt.event, tt.channel, tt.raw, tt.userID); string(got) != tt.want {
			t.Errorf("AppendEventRaw(%q, %q, %s, %q) = %s, want %s", tt.event, tt.channel, tt.raw, tt.userID, got, tt.want)
		}
	}
}

func TestErrorFrame(t *testing.T) {
	tests := []struct {
		code    Code
		message string
		channel string
		want    string
	}{
		{CodeAppNotFound, "Application does not exist", "",
			`{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}`},
		{0, "Invalid signature: \"x\"", "",
			`{"event":"pusher:error","data":{"code":null,"message":"Invalid signature: \"x\""}}`},
		{CodeUnauthorized, "Connection is unauthorized", "private-orders",
			`{"event":"pusher:error","data":{"code":4009,"message":"Connection is unauthorized"},"channel":"private-orders"}`},
		{CodeClientEventLimit, "", "", `{"event":"pusher:error","data":{"code":4301,"message":""}}`},
	}
	for _, tt := range tests {
		got := ErrorFrame(tt.code, tt.message, tt.channel)
		if string(got) != tt.want {
			t.Errorf("ErrorFrame(%d, %q, %q) =\n %s\nwant\n %s", tt.code, tt.message, tt.channel, got, tt.want)
		}
		var f struct {
			Event string
			Data  struct {
				Code    *int
				Message string
			}
		}
		if err := json.Unmarshal(got, &f); err != nil {
			t.Fatalf("ErrorFrame not valid JSON: %v", err)
		}
		if (tt.code == 0) != (f.Data.Code == nil) || f.Data.Message != tt.message {
			t.Errorf("ErrorFrame(%d, %q) decodes to %+v", tt.code, tt.message, f.Data)
		}
	}
}

func TestConnectionEstablished(t *testing.T) {
	got := ConnectionEstablished("123456789.987654321", 120)
	want := `{"event":"pusher:connection_established","data":"{\"socket_id\":\"123456789.987654321\",\"activity_timeout\":120}"}`
	if string(got) != want {
		t.Fatalf("ConnectionEstablished =\n %s\nwant\n %s", got, want)
	}
	var f struct {
		Event string `json:"event"`
		Data  string `json:"data"`
	}
	if err := json.Unmarshal(got, &f); err != nil {
		t.Fatal(err)
	}
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(f.Data), &d); err != nil {
		t.Fatalf("data is not double-encoded JSON: %v", err)
	}
	if d.SocketID != "123456789.987654321" || d.ActivityTimeout != 120 {
		t.Fatalf("data = %+v", d)
	}
}

func TestPingPong(t *testing.T) {
	if string(Pong) != `{"event":"pusher:pong","data":"{}"}` {
		t.Errorf("Pong = %s", Pong)
	}
	if string(Ping) != `{"event":"pusher:ping","data":"{}"}` {
		t.Errorf("Ping = %s", Ping)
	}
}

func TestMarshalData(t *testing.T) {
	if got := MarshalData(map[string]int{"a": 1}); got != `{"a":1}` {
		t.Errorf("MarshalData = %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("MarshalData(func) did not panic")
		}
	}()
	MarshalData(func() {})
}

func TestDecodeClientFrameValid(t *testing.T) {
	tests := []struct {
		in      string
		event   string
		channel string
		data    string // raw data, "" when absent
	}{
		{`{"event":"pusher:ping","data":{}}`, "pusher:ping", "", `{}`},
		{`{"event":"pusher:ping"}`, "pusher:ping", "", ``},
		{`{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"k:s"}}`, "pusher:subscribe", "", `{"channel":"private-x","auth":"k:s"}`},
		{`{"event":"client-move","channel":"private-x","data":"{\"x\":1}"}`, "client-move", "private-x", `"{\"x\":1}"`},
		{` { "data" : [1, 2] , "event" : "e" } `, "e", "", `[1, 2]`},
		{`{"event":"e","data":null}`, "e", "", `null`},
		{`{"event":"e","unknown":{"deep":[1,{"x":null}]}}`, "e", "", ``},
		{`{"event":"\u0065","channel":"c\u002d1"}`, "e", "c-1", ``},
	}
	for _, tt := range tests {
		f, err := DecodeClientFrame([]byte(tt.in))
		if err != nil {
			t.Errorf("DecodeClientFrame(%s): %v", tt.in, err)
			continue
		}
		if f.Event != tt.event || f.Channel != tt.channel || string(f.Data) != tt.data {
			t.Errorf("DecodeClientFrame(%s) = {%q %q %s}, want {%q %q %s}", tt.in, f.Event, f.Channel, f.Data, tt.event, tt.channel, tt.data)
		}
	}
}

func TestDecodeClientFrameInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{``, ErrNotJSON},
		{`   `, ErrNotJSON},
		{`{`, ErrNotJSON},
		{`{"event":"e"`, ErrNotJSON},
		{`{"event":"e"}x`, ErrNotJSON},
		{`[]`, ErrNotJSON},
		{`"pusher:ping"`, ErrNotJSON},
		{`42`, ErrNotJSON},
		{`{"event":42}`, ErrNotJSON},
		{`{"event":"e","channel":["x"]}`, ErrNotJSON},
		{"\xff\xfe", ErrNotJSON},
		{`{}`, ErrMissingEvent},
		{`{"event":""}`, ErrMissingEvent},
		{`{"event":null}`, ErrMissingEvent},
		{`{"channel":"x","data":{}}`, ErrMissingEvent},
		{`null`, ErrMissingEvent},
	}
	for _, tt := range tests {
		f, err := DecodeClientFrame([]byte(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("DecodeClientFrame(%q) = %v, %v; want error %v", tt.in, f, err, tt.want)
		}
		if f != nil {
			t.Errorf("DecodeClientFrame(%q) returned a frame with error %v", tt.in, err)
		}
	}
}

func TestDataObject(t *testing.T) {
	tests := []struct {
		in   string
		want string // "<nil>" for nil
	}{
		{`{"event":"e","data":{"channel":"x"}}`, `{"channel":"x"}`},
		{`{"event":"e","data":"{\"channel\":\"x\"}"}`, `{"channel":"x"}`},
		{`{"event":"e","data":"{\"a\":\"\\\"q\\\"\"}"}`, `{"a":"\"q\""}`},
		{`{"event":"e","data":{}}`, `{}`},
		{`{"event":"e","data":"{}"}`, `{}`},
		{`{"event":"e"}`, "<nil>"},
		{`{"event":"e","data":null}`, "<nil>"},
		{`{"event":"e","data":[1]}`, `[1]`},
	}
	for _, tt := range tests {
		f, err := DecodeClientFrame([]byte(tt.in))
		if err != nil {
			t.Fatalf("DecodeClientFrame(%s): %v", tt.in, err)
		}
		got := f.DataObject()
		if tt.want == "<nil>" {
			if got != nil {
				t.Errorf("DataObject of %s = %q, want nil", tt.in, got)
			}
			continue
		}
		if string(got) != tt.want {
			t.Errorf("DataObject of %s = %s, want %s", tt.in, got, tt.want)
		}
	}
	// Only one level of string encoding is removed.
	f := &ClientFrame{Event: "e", Data: json.RawMessage(`"\"{}\""`)}
	if got := f.DataObject(); string(got) != `"{}"` {
		t.Errorf("DataObject of a triple-encoded object = %s, want \"{}\"", got)
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	data := `{"message":"hello, world","n":12345,"nested":{"ok":true,"s":"quote \" and \\ backslash"}}`
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = AppendEvent(buf[:0], "my-event", "private-orders", data)
	}
}

func BenchmarkDecodeClientFrame(b *testing.B) {
	msg := []byte(`{"event":"client-move","channel":"presence-room","data":{"x":12,"y":34,"name":"player one"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := DecodeClientFrame(msg); err != nil {
			b.Fatal(err)
		}
	}
}
