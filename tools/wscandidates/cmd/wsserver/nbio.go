package main

import (
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// nbioImpl: github.com/lesismal/nbio nbhttp.Engine in IOModNonBlocking (the
// default) with the default level-triggered, read-in-poller mode: every
// connection (HTTP and WebSocket) is served by the engine's poller goroutines,
// each poller owning one shared read buffer. That is the lowest per-connection
// memory mode nbio offers; IOModBlocking/IOModMixed add a goroutine and a
// read buffer per connection. The same engine serves the plain net/http mux.
type nbioImpl struct {
	up    *websocket.Upgrader
	conns *registry[*websocket.Conn]
}

func newNbio() impl {
	n := &nbioImpl{up: websocket.NewUpgrader(), conns: newRegistry[*websocket.Conn]()}
	n.up.OnMessage(func(*websocket.Conn, websocket.MessageType, []byte) {}) // ignore input
	n.up.OnClose(func(c *websocket.Conn, _ error) { n.conns.remove(c) })
	return n
}

func (n *nbioImpl) Count() int { return n.conns.count() }

func (n *nbioImpl) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := n.up.Upgrade(w, r, nil)
		if err != nil {
			log.Printf("nbio upgrade: %v", err)
			return
		}
		if err := c.WriteMessage(websocket.TextMessage, greeting); err != nil {
			c.Close()
			return
		}
		n.conns.add(c)
	})
}

func (n *nbioImpl) Serve(addr string, mux *http.ServeMux) error {
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{addr},
		MaxLoad:                 1 << 20,
		ReleaseWebsocketPayload: true,
		IOMod:                   nbhttp.IOModNonBlocking,
		Handler:                 mux,
	})
	if err := engine.Start(); err != nil {
		return err
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt)
	<-ch
	engine.Stop()
	return nil
}

func (n *nbioImpl) Broadcast(mode string, payload, frame []byte) (sent, errs int, err error) {
	var write func(c *websocket.Conn) error
	switch mode {
	case "lib":
		write = func(c *websocket.Conn) error { return c.WriteMessage(websocket.TextMessage, payload) }
	case "raw":
		// The embedded net.Conn is the *nbio.Conn; its Write/Writev are
		// goroutine-safe and queue on EAGAIN, so whole pre-encoded frames
		// cannot interleave with the library's own frames.
		write = func(c *websocket.Conn) error { _, err := c.Conn.Write(frame); return err }
	default:
		return 0, 0, errUnsupported("mode " + mode)
	}
	for _, c := range n.conns.snapshot() {
		if write(c) != nil {
			errs++
		} else {
			sent++
		}
	}
	return sent, errs, nil
}
