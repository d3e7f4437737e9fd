package main

import (
	"log"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// gorillaImpl: github.com/gorilla/websocket on net/http, one reader goroutine
// (the HTTP handler goroutine itself) per connection. Default Upgrader buffer
// settings, i.e. the read buffer and write buffer are the hijacked net/http
// bufio buffers (4 KiB each) kept for the life of the connection.
type gorillaImpl struct {
	up    websocket.Upgrader
	conns *registry[*gorillaConn]
}

type gorillaConn struct {
	wmu sync.Mutex // gorilla allows one concurrent writer
	c   *websocket.Conn
}

func newGorilla() impl { return &gorillaImpl{conns: newRegistry[*gorillaConn]()} }

func (g *gorillaImpl) Serve(addr string, mux *http.ServeMux) error { return stdServe(addr, mux) }
func (g *gorillaImpl) Count() int                                  { return g.conns.count() }

func (g *gorillaImpl) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := g.up.Upgrade(w, r, nil)
		if err != nil {
			log.Printf("gorilla upgrade: %v", err)
			return
		}
		gc := &gorillaConn{c: c}
		if err := c.WriteMessage(websocket.TextMessage, greeting); err != nil {
			c.Close()
			return
		}
		g.conns.add(gc)
		defer func() { g.conns.remove(gc); c.Close() }()
		for {
			// NextReader + discard avoids ReadMessage's per-message allocation.
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	})
}

func (g *gorillaImpl) Broadcast(mode string, payload, frame []byte) (sent, errs int, err error) {
	var pm *websocket.PreparedMessage
	if mode == "lib" {
		if pm, err = websocket.NewPreparedMessage(websocket.TextMessage, payload); err != nil {
			return 0, 0, err
		}
	} else if mode != "raw" {
		return 0, 0, errUnsupported("mode " + mode)
	}
	for _, gc := range g.conns.snapshot() {
		gc.wmu.Lock()
		if pm != nil {
			err = gc.c.WritePreparedMessage(pm)
		} else {
			// Pre-encoded bytes straight to the socket. Safe only because every
			// data write goes through wmu; gorilla's own control-frame writes
			// (pong/close) could still interleave, so this is a measurement aid.
			_, err = gc.c.NetConn().Write(frame)
		}
		gc.wmu.Unlock()
		if err != nil {
			errs++
		} else {
			sent++
		}
	}
	return sent, errs, nil
}
