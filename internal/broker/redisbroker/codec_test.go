package redisbroker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/broker"
)

func TestCodecRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 200)
	for _, m := range []*broker.Message{
		{Kind: broker.KindEvent, Payload: []byte(`{"event":"e","channel":"c","data":"{}"}`)},
		{Kind: broker.KindEvent, Payload: []byte("p"), Exclude: "123.456"},
		{Kind: broker.KindTerminate},
		{Kind: broker.KindEvent, Exclude: long, Payload: []byte{0, 1, 2, 0xff}},
	} {
		data := appendMessage(nil, m)
		if len(data) != encodedLen(m) {
			t.Fatalf("encodedLen %d, encoded %d bytes", encodedLen(m), len(data))
		}
		got, err := decodeMessage(data)
		if err != nil {
			t.Fatalf("decode %q: %v", data, err)
		}
		if got.Kind != m.Kind || got.Exclude != m.Exclude || !bytes.Equal(got.Payload, m.Payload) {
			t.Fatalf("round trip: got %+v want %+v", got, m)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":         nil,
		"short":         {wireVersion, 0},
		"version":       {2, 0, 0, 'x'},
		"kind":          {wireVersion, 9, 0, 'x'},
		"exclude long":  {wireVersion, 0, 5, 'a', 'b'},
		"non-minimal":   {wireVersion, 0, 0x81, 0x00, 'a'},
		"varint cut":    {wireVersion, 0, 0x80},
		"exclude bound": append([]byte{wireVersion, 0, 0x81, 0x04}, make([]byte, 600)...), // 513 > maxExclude
		"varint huge":   {wireVersion, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		if m, err := decodeMessage(data); err == nil {
			t.Errorf("%s: decoded %+v", name, m)
		}
	}
}

// FuzzDecode: no input panics, and whatever decodes re-encodes to the same
// bytes (the encoding is canonical).
func FuzzDecode(f *testing.F) {
	f.Add(appendMessage(nil, &broker.Message{Kind: broker.KindEvent, Payload: []byte(`{"event":"x"}`), Exclude: "1.2"}))
	f.Add(appendMessage(nil, &broker.Message{Kind: broker.KindTerminate}))
	f.Add([]byte{wireVersion, 0, 0x81, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data)
		if err != nil {
			return
		}
		if again := appendMessage(nil, m); !bytes.Equal(again, data) {
			t.Fatalf("decode/encode not canonical: %x → %+v → %x", data, m, again)
		}
	})
}

func TestChannelNames(t *testing.T) {
	topics := []broker.Topic{
		{App: "a", Channel: "b:c"},
		{App: "a:b", Channel: "c"},
		{App: "", Channel: "x"},
		{App: "1", Channel: ""},
		{App: "app{tag}", Channel: "presence-{x}"},
		{App: "12", Channel: "3:4"},
		{App: "a\x00b", Channel: "ü-\n"},
	}
	seen := map[string]broker.Topic{}
	for _, tp := range topics {
		n := channelName(tp)
		if !strings.HasPrefix(n, topicPrefix) {
			t.Fatalf("%q lacks prefix", n)
		}
		if other, dup := seen[n]; dup {
			t.Fatalf("%+v and %+v share channel %q", tp, other, n)
		}
		seen[n] = tp
		if got, ok := parseChannelName(n); !ok || got != tp {
			t.Fatalf("parse %q = %+v %v, want %+v", n, got, ok, tp)
		}
	}
	if strings.HasPrefix(probeName("n1"), topicPrefix) {
		t.Fatal("probe channel could be mistaken for a topic")
	}
}

// FuzzChannelName: every topic has a name that parses back to it, and no
// string parses to a topic whose name is a different string.
func FuzzChannelName(f *testing.F) {
	f.Add("app", "private-x", "herald{}:3:app:x")
	f.Add("a:1", "", "herald{}:01:a:")
	f.Fuzz(func(t *testing.T, app, channel, name string) {
		tp := broker.Topic{App: app, Channel: channel}
		if got, ok := parseChannelName(channelName(tp)); !ok || got != tp {
			t.Fatalf("topic %+v does not round-trip: %+v %v", tp, got, ok)
		}
		if got, ok := parseChannelName(name); ok && channelName(got) != name {
			t.Fatalf("%q parsed to %+v, whose name is %q", name, got, channelName(got))
		}
	})
}
