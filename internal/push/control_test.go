package push

import (
	"bytes"
	"slices"
	"testing"
)

func TestControlRoundTrip(t *testing.T) {
	req := appendRequest(nil, 42, "node-a", "app-id", kindUser, "u1", []byte(`{"event":"e"}`))
	m, err := decodeControl(req)
	if err != nil {
		t.Fatal(err)
	}
	if m.typ != typeRequest || m.id != 42 || m.from != "node-a" || m.app != "app-id" || m.kind != kindUser ||
		m.target != "u1" || !bytes.Equal(m.payload, []byte(`{"event":"e"}`)) {
		t.Fatalf("request decoded as %+v", m)
	}
	rep := appendReply(nil, 1<<40, "node-b", []string{"1.2", "3.4"})
	m, err = decodeControl(rep)
	if err != nil {
		t.Fatal(err)
	}
	if m.typ != typeReply || m.id != 1<<40 || m.from != "node-b" || !slices.Equal(m.sockets, []string{"1.2", "3.4"}) {
		t.Fatalf("reply decoded as %+v", m)
	}
	if m, err = decodeControl(appendReply(nil, 7, "n", nil)); err != nil || len(m.sockets) != 0 {
		t.Fatalf("empty reply: %+v %v", m, err)
	}
}

func TestControlRejectsMalformed(t *testing.T) {
	good := appendRequest(nil, 1, "a", "app", kindSocket, "1.2", []byte("{}"))
	for name, b := range map[string][]byte{
		"empty":          nil,
		"unknown type":   append([]byte{'X'}, good[1:]...),
		"bad kind":       appendRequest(nil, 1, "a", "app", 'z', "t", nil),
		"truncated":      good[:5],
		"no from":        appendRequest(nil, 1, "", "app", kindUser, "u", []byte("{}")),
		"long length":    {typeRequest, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"non-minimal":    {typeReply, 0x81, 0x00, 1, 'a', 0},
		"lying count":    {typeReply, 1, 1, 'a', 0x80, 0x80, 0x04},
		"reply trailing": append(appendReply(nil, 1, "a", []string{"x"}), 'y'),
		"string too big": appendReply(nil, 1, "a", []string{string(make([]byte, maxStr+1))}),
	} {
		if m, err := decodeControl(b); err == nil {
			t.Errorf("%s: decoded %+v", name, m)
		}
	}
}

// FuzzDecodeControl: any input decodes or is rejected without panicking, and
// what decodes re-encodes to the same bytes.
func FuzzDecodeControl(f *testing.F) {
	f.Add(appendRequest(nil, 9, "node", "app", kindUser, "u", []byte(`{"event":"x"}`)))
	f.Add(appendReply(nil, 9, "node", []string{"1.2", "3.4"}))
	f.Add([]byte{typeReply, 1, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeControl(b)
		if err != nil {
			return
		}
		var again []byte
		switch m.typ {
		case typeRequest:
			again = appendRequest(nil, m.id, m.from, m.app, m.kind, m.target, m.payload)
		case typeReply:
			again = appendReply(nil, m.id, m.from, m.sockets)
		default:
			t.Fatalf("decoded unknown type %q", m.typ)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %q as %q", b, again)
		}
	})
}
