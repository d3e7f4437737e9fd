package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
)

// DrainGrace is how long a drain waits, after its window, for the last
// connections to finish closing before it gives up on them.
const DrainGrace = 10 * time.Second

// drainer is the state of a drain; the zero value is "not draining" (init
// sets done).
type drainer struct {
	once   sync.Once
	done   chan struct{} // closed when the drain is over
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	status DrainStatus
}

// DrainStatus describes a drain.
type DrainStatus struct {
	// Draining is true once a drain started.
	Draining bool `json:"draining"`
	// Done is true once every connection is gone or the deadline passed.
	Done bool `json:"done"`
	// WindowMS is the window the closes are spread over, in milliseconds.
	WindowMS int64 `json:"window_ms"`
	// Started and Deadline bound the drain.
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	// ConnectionsAtStart were open when it started; Connections are open now.
	ConnectionsAtStart int `json:"connections_at_start"`
	Connections        int `json:"connections"`
}

// Drain starts draining the node, once (later calls change nothing and
// return the state of the first): readiness fails (/readyz 503), no new
// WebSocket connection is accepted, and the open ones are closed with 4200
// spread over window (0: the configured drain_window) with jitter, so that
// clients reconnect to other nodes without arriving there all at once. The
// HTTP API keeps serving (a load balancer stops sending requests once
// readiness fails) and events keep reaching the connections still open.
// Drained is closed when no connection is left, or at window + DrainGrace;
// the caller then calls Shutdown, which lets in-flight requests finish.
func (s *Server) Drain(window time.Duration) DrainStatus {
	if window <= 0 {
		window = s.opts.Config.DrainWindowOrDefault()
	}
	s.dr.once.Do(func() {
		s.draining.Store(true)
		s.edge.StopAccepting()
		now := time.Now()
		st := DrainStatus{Draining: true, WindowMS: window.Milliseconds(), Started: now,
			Deadline: now.Add(window + DrainGrace), ConnectionsAtStart: s.edge.Connections()}
		ctx, cancel := context.WithDeadline(context.Background(), st.Deadline)
		s.dr.mu.Lock()
		s.dr.status = st
		s.dr.cancel = cancel
		s.dr.mu.Unlock()
		s.log.Info("draining: refusing new connections, closing the open ones with 4200 over the window",
			"window", window, "connections", st.ConnectionsAtStart, "deadline", st.Deadline.Format(time.RFC3339))
		s.dr.wg.Add(2)
		go func() {
			defer s.dr.wg.Done()
			r := s.edge.Drain(ctx, window, protocol.CodeReconnect)
			if r.Connections > 0 {
				s.log.Info("drain: every close frame queued", "connections", r.Connections,
					"last", r.Last.Round(time.Millisecond), "per_tenth_of_window", fmt.Sprint(r.PerTenth), "late", r.Late)
			}
		}()
		go func() {
			defer s.dr.wg.Done()
			defer close(s.dr.done)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for s.edge.Connections() > 0 {
				select {
				case <-ctx.Done():
					if ctx.Err() == context.DeadlineExceeded {
						s.log.Warn("drain deadline reached with connections still open", "connections", s.edge.Connections())
					}
					return
				case <-t.C:
				}
			}
			cancel() // nothing left to close
			s.log.Info("drained: no connection left", "took", time.Since(now).Round(time.Millisecond))
		}()
	})
	return s.DrainStatus()
}

// Drained is closed when a drain is over (see Drain).
func (s *Server) Drained() <-chan struct{} { return s.dr.done }

// DrainStatus returns the state of the drain.
func (s *Server) DrainStatus() DrainStatus {
	s.dr.mu.Lock()
	st := s.dr.status
	s.dr.mu.Unlock()
	select {
	case <-s.dr.done:
		st.Done = true
	default:
	}
	st.Connections = s.edge.Connections()
	return st
}

// stopDrain ends a drain in progress and waits for its goroutines (Shutdown).
func (s *Server) stopDrain() {
	s.dr.mu.Lock()
	cancel := s.dr.cancel
	s.dr.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.dr.wg.Wait()
}

// handleDrain serves POST /admin/drain (start a drain; ?window=30s overrides
// drain_window) and GET /admin/drain (its state) on the internal listener.
func (s *Server) handleDrain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(s.DrainStatus())
		return
	}
	var window time.Duration
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := apps.ParseDuration(v)
		if err != nil || d <= 0 || d > apps.MaxDrainWindow {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "window must be a duration such as 30s (or milliseconds), at most " +
				apps.MaxDrainWindow.String(), "code": http.StatusBadRequest})
			return
		}
		window = d
	}
	st := s.Drain(window)
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(st)
}
