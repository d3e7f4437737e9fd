package protocol

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"unicode/utf8"
)

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"event":"pusher:ping","data":{}}`,
		`{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"k:s","channel_data":"{\"user_id\":1}"}}`,
		`{"event":"pusher:subscribe","data":"{\"channel\":\"x\"}"}`,
		`{"event":"client-x","channel":"private-x","data":"\"\\\"\""}`,
		`{"event":"e","data":"\ud800"}`,
		`{"event":"e","data":"null"}`,
		`{"event":"e","data":""}`,
		`{"event":"e","data":null}`,
		`{"event":""}`,
		`null`, `[]`, `{`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"event":"e","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`))
	f.Add([]byte(`{"event":"e","data":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"]\"]"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if json.Valid(b) {
			if want := jsonDepth(t, b) > MaxJSONDepth; TooDeep(b, MaxJSONDepth) != want {
				t.Fatalf("TooDeep(%q) = %v, want %v", b, !want, want)
			}
		}
		fr, err := DecodeClientFrame(b)
		if err != nil {
			if fr != nil {
				t.Fatalf("frame %+v with error %v", fr, err)
			}
			if err != ErrNotJSON && err != ErrMissingEvent && err != ErrTooDeep {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if fr.Event == "" {
			t.Fatal("decoded a frame without event")
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		if len(fr.Data) > 0 && !json.Valid(fr.Data) {
			t.Fatalf("Data %q is not valid JSON", fr.Data)
		}
		d := fr.DataObject() // must not panic
		if len(fr.Data) == 0 || string(fr.Data) == "null" {
			if d != nil {
				t.Fatalf("DataObject of absent/null data = %q", d)
			}
			return
		}
		if fr.Data[0] != '"' && string(d) != string(fr.Data) {
			t.Fatalf("DataObject of non-string %q = %q, want it unchanged", fr.Data, d)
		}
		if fr.Data[0] == '"' {
			var s string
			if json.Unmarshal(fr.Data, &s) == nil && string(d) != s && (d != nil || !TooDeep([]byte(s), MaxJSONDepth)) {
				t.Fatalf("DataObject of string %q = %q, want %q", fr.Data, d, s)
			}
		}
	})
}

// jsonDepth is the nesting depth of valid JSON b, from encoding/json's tokens.
func jsonDepth(t *testing.T, b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1e700 is valid JSON but no float64
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return deepest
		}
		if err != nil {
			// encoding/json refuses nesting past 10000 levels.
			return 10001
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range edgeStrings {
		if len(s) <= 512 { // long seeds make minimizing new inputs slow
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAppendString(t, s)
		// Also inside a frame: the frame must stay valid JSON.
		ev := AppendEvent(nil, s, s, s)
		if !json.Valid(ev) {
			t.Fatalf("AppendEvent with %q is not valid JSON: %q", s, ev)
		}
		if utf8.ValidString(s) {
			var fr struct{ Event, Data, Channel string }
			if err := json.Unmarshal(ev, &fr); err != nil {
				t.Fatal(err)
			}
			if fr.Event != s || fr.Data != s || (s != "" && fr.Channel != s) {
				t.Fatalf("AppendEvent(%q) decodes to %+v", s, fr)
			}
		}
		if e := ErrorFrame(CodeReconnect, s, s); !json.Valid(e) {
			t.Fatalf("ErrorFrame with %q is not valid JSON: %q", s, e)
		}
	})
}
