package edge

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
)

// peers admits connections by source address (max_connections_per_ip) and
// remembers what each connection releases when it is torn down: its address
// slot and, for TLS, its bridge. Connections with neither are not recorded,
// so without a per-address limit plain connections cost nothing here.
type peers struct {
	max int // 0 = unlimited

	mu     sync.Mutex
	counts map[string]int     // address key → open connections
	held   map[*conn]peerHold // what teardown releases
	n      atomic.Int64       // len(held), read without the lock

	bridges atomic.Int64 // TLS bridges whose goroutines still run
}

type peerHold struct {
	addr   string // address key ("" when not counted)
	bridge *tlsBridge
}

// addrKey is the unit max_connections_per_ip counts: an IPv4 address, or
// the /64 of an IPv6 address (one host typically holds a whole /64).
func addrKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// acquire takes a connection slot for the request's source address. It
// returns the key to release, "" when no limit applies, and false when the
// address is at its limit.
func (p *peers) acquire(remoteAddr string) (string, bool) {
	if p.max <= 0 {
		return "", true
	}
	key := addrKey(remoteAddr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[key] >= p.max {
		return "", false
	}
	if p.counts == nil {
		p.counts = make(map[string]int)
	}
	p.counts[key]++
	return key, true
}

// release gives back a slot taken by acquire.
func (p *peers) release(key string) {
	if key == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[key] <= 1 {
		delete(p.counts, key)
	} else {
		p.counts[key]--
	}
}

// track records what c releases at teardown.
func (p *peers) track(c *conn, addr string, b *tlsBridge) {
	if addr == "" && b == nil {
		return
	}
	p.mu.Lock()
	if p.held == nil {
		p.held = make(map[*conn]peerHold)
	}
	p.held[c] = peerHold{addr: addr, bridge: b}
	p.n.Store(int64(len(p.held)))
	p.mu.Unlock()
}

// untrack releases what c holds; teardown calls it once per connection.
func (p *peers) untrack(c *conn) (bridge *tlsBridge) {
	if p.n.Load() == 0 {
		return nil
	}
	p.mu.Lock()
	h, ok := p.held[c]
	if ok {
		delete(p.held, c)
		p.n.Store(int64(len(p.held)))
	}
	p.mu.Unlock()
	if ok {
		p.release(h.addr)
	}
	return h.bridge
}

// admit runs the handshake checks that come after the app's (4003): the
// app's Origin allow-list (4009) and the source address's connection limit
// (4100). On success it returns the address slot to hand to takeOver, or to
// release if the connection goes no further; otherwise the code and message
// to refuse the connection with.
func (s *Server) admit(r *http.Request, app *apps.App) (addr string, code protocol.Code, msg string) {
	if !app.OriginAllowed(r.Header.Get("Origin")) {
		return "", protocol.CodeUnauthorized, "Origin not allowed"
	}
	addr, ok := s.peers.acquire(r.RemoteAddr)
	if !ok {
		return "", protocol.CodeOverCapacity, "Over capacity: too many connections from this address"
	}
	return addr, 0, ""
}

// refuse completes a refused handshake as every other refusal does:
// pusher:error with the code, then a close frame with the same code.
func (s *Server) refuse(nc net.Conn, code protocol.Code, msg, remote string) {
	s.stats.rejected.Add(1)
	s.log.Debug("connection rejected", "code", int(code), "reason", msg, "remote", remote)
	_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = nc.Write(EncodeText(protocol.ErrorFrame(code, msg, "")))
	_, _ = nc.Write(closeFrame(int(code), msg))
	nc.Close()
}

// untrack is called by teardown: it frees the connection's address slot and
// lets its TLS bridge finish.
func (s *Server) untrack(c *conn) {
	if b := s.peers.untrack(c); b != nil {
		b.finish(s.cfg.CloseGrace)
	}
}

// takeOver hands the upgraded socket to the epoll loop and returns its file
// descriptor: the socket itself for plain TCP, one end of a bridge for TLS.
// It records what c releases at teardown; on failure it releases addr.
func (s *Server) takeOver(nc net.Conn, c *conn, addr string) (int, error) {
	var (
		fd  int
		b   *tlsBridge
		err error
	)
	if tc, ok := nc.(*tls.Conn); ok {
		fd, b, err = s.bridgeTLS(tc)
	} else {
		fd, err = detach(nc)
	}
	if err != nil {
		s.peers.release(addr)
		return -1, err
	}
	s.peers.track(c, addr, b)
	return fd, nil
}
