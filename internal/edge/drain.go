package edge

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/heraldrt/herald/internal/protocol"
)

// StopAccepting makes the endpoint refuse new WebSocket connections (HTTP
// 503 before the upgrade), as Shutdown and Drain do first. Open connections
// are left alone.
func (s *Server) StopAccepting() { s.drain.Store(true) }

// Accepting reports whether new connections are accepted.
func (s *Server) Accepting() bool { return !s.drain.Load() }

// DrainReason is the close reason text of connections closed by Drain.
const DrainReason = "server draining"

// DrainReport says when a drain queued its close frames.
type DrainReport struct {
	// Connections is the number open when the drain started.
	Connections int
	// PerTenth counts the close frames queued in each tenth of the window;
	// Late those queued after it (a busy machine, or ctx ended early).
	PerTenth [10]int
	Late     int
	// Last is when the last close frame was queued, since the start.
	Last time.Duration
}

// Drain stops accepting connections and closes every open one with code,
// spread over window so that clients reconnecting elsewhere do not arrive at
// once: the connections are taken in random order and connection i of n is
// closed at a random moment of the i-th of n equal slices of the window
// (stratified jitter: an even rate, and two nodes drained together do not
// close in lockstep). Connections that arrived while the drain started are
// closed at the end. Drain returns once the last close frame is queued; ctx
// ending closes the rest at once. The endpoint keeps running: call Shutdown
// afterwards.
func (s *Server) Drain(ctx context.Context, window time.Duration, code protocol.Code) DrainReport {
	s.StopAccepting()
	conns := s.poller.snapshot(nil)
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	n := len(conns)
	r := DrainReport{Connections: n}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	w := window
	for i := 0; i < n; i++ {
		if at := slot(i, n, w); at > time.Since(start) {
			// One wake-up per connection at most; connections whose moment
			// has passed (a slow loop, a tiny window) are closed at once.
			timer.Reset(at - time.Since(start))
			select {
			case <-timer.C:
			case <-ctx.Done():
				w = 0 // the rest now
			}
		}
		conns[i].Close(code, DrainReason)
		conns[i] = nil
		r.Last = time.Since(start)
		if window > 0 && r.Last < window {
			r.PerTenth[int(r.Last*10/window)]++
		} else {
			r.Late++
		}
	}
	for _, c := range s.poller.snapshot(nil) {
		c.Close(code, DrainReason) // a no-op for those closing already
	}
	return r
}

// slot is when connection i of n closes: a random moment of the i-th of n
// equal slices of window.
func slot(i, n int, window time.Duration) time.Duration {
	if window <= 0 || n == 0 {
		return 0
	}
	return time.Duration((float64(i) + rand.Float64()) * float64(window) / float64(n))
}
