package main

import (
	"context"
	"io"
	"log"
	"net/http"

	"github.com/coder/websocket"
)

// coderImpl: github.com/coder/websocket on net/http, the HTTP handler
// goroutine stays as the per-connection reader.
type coderImpl struct {
	conns *registry[*websocket.Conn]
}

func newCoder() impl { return &coderImpl{conns: newRegistry[*websocket.Conn]()} }

func (c *coderImpl) Serve(addr string, mux *http.ServeMux) error { return stdServe(addr, mux) }
func (c *coderImpl) Count() int                                  { return c.conns.count() }

func (c *coderImpl) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			log.Printf("coder accept: %v", err)
			return
		}
		ctx := context.Background()
		if err := conn.Write(ctx, websocket.MessageText, greeting); err != nil {
			conn.CloseNow()
			return
		}
		c.conns.add(conn)
		defer func() { c.conns.remove(conn); conn.CloseNow() }()
		for {
			_, rd, err := conn.Reader(ctx)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
		}
	})
}

func (c *coderImpl) Broadcast(mode string, payload, _ []byte) (sent, errs int, err error) {
	if mode != "lib" {
		// coder/websocket exposes no net.Conn and no prepared-message API.
		return 0, 0, errUnsupported("coder/websocket cannot write pre-encoded frames")
	}
	ctx := context.Background()
	for _, conn := range c.conns.snapshot() {
		if err := conn.Write(ctx, websocket.MessageText, payload); err != nil {
			errs++
		} else {
			sent++
		}
	}
	return sent, errs, nil
}
