package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestConsumeSplitFrames feeds client frames to the epoll parser one byte at
// a time: partial frames must be buffered and a split ping must still produce
// exactly one pong.
func TestConsumeSplitFrames(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	c := &econn{nc: srv}

	var in bytes.Buffer
	for _, f := range []ws.Frame{
		ws.NewTextFrame(bytes.Repeat([]byte("a"), 300)), // 16-bit length
		ws.NewPingFrame([]byte("hi")),
		ws.NewTextFrame([]byte("x")),
	} {
		ws.MustWriteFrame(&in, ws.MaskFrame(f))
	}

	got := make(chan ws.Frame, 1)
	go func() {
		_ = cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := ws.ReadFrame(cli)
		if err != nil && err != io.EOF {
			t.Error(err)
		}
		got <- f
	}()
	for _, b := range in.Bytes() {
		if !c.consume([]byte{b}) {
			t.Fatal("consume rejected a valid stream")
		}
	}
	if c.pending != nil {
		t.Fatalf("pending = %d bytes after whole frames, want nil", len(c.pending))
	}
	f := <-got
	if f.Header.OpCode != ws.OpPong || string(f.Payload) != "hi" {
		t.Fatalf("got %v %q, want pong \"hi\"", f.Header.OpCode, f.Payload)
	}
}

func TestConsumeRejectsUnmaskedAndHuge(t *testing.T) {
	c := &econn{}
	if c.consume(ws.MustCompileFrame(ws.NewTextFrame([]byte("x")))) {
		t.Fatal("accepted unmasked client frame")
	}
	c = &econn{}
	hdr := []byte{0x81, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0} // 64-bit length 1 GiB
	if c.consume(hdr) {
		t.Fatal("accepted oversized frame header")
	}
}
