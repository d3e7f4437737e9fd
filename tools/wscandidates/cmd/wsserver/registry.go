package main

import (
	"net/http"
	"sync"
	"time"
)

// registry is the set of live connections, identical for every impl so the
// per-connection bookkeeping cost is the same everywhere.
type registry[T comparable] struct {
	mu sync.Mutex
	m  map[T]struct{}
}

func newRegistry[T comparable]() *registry[T] { return &registry[T]{m: make(map[T]struct{})} }

func (r *registry[T]) add(c T) {
	r.mu.Lock()
	r.m[c] = struct{}{}
	r.mu.Unlock()
}

func (r *registry[T]) remove(c T) {
	r.mu.Lock()
	delete(r.m, c)
	r.mu.Unlock()
}

func (r *registry[T]) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// snapshot copies the members so the broadcast loop runs without the lock.
func (r *registry[T]) snapshot() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := make([]T, 0, len(r.m))
	for c := range r.m {
		s = append(s, c)
	}
	return s
}

// stdServe runs a plain net/http server (used by gorilla, coder, gobwas-epoll).
func stdServe(addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}
