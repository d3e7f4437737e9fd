// Command wsserver is one Pusher-shaped WebSocket endpoint built on a selectable
// library / connection model, for measuring idle memory and broadcast cost.
//
//	wsserver -impl gorilla|coder|gobwas-epoll|nbio -addr 127.0.0.1:18080
//
// Endpoints (same port for all impls):
//
//	/app/test              WebSocket; sends pusher:connection_established, ignores input
//	/broadcast?n=100&mode=lib|raw
//	                       writes one n-byte text frame to every connection, reports JSON
//	/stats[?gc=1]          conns, goroutines, VmRSS and runtime memory stats as JSON
//	                       (gc=1: after runtime/debug.FreeOSMemory)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"herald/tools/wscandidates/internal/wsframe"
)

// impl is one candidate.
type impl interface {
	// Handler serves the WebSocket upgrade for /app/test.
	Handler() http.Handler
	// Serve serves mux (which already routes /app/test to Handler) on addr.
	Serve(addr string, mux *http.ServeMux) error
	// Count returns the number of open WebSocket connections.
	Count() int
	// Broadcast writes payload as one text frame to every connection.
	// frame is the same message pre-encoded; mode "raw" asks the impl to write
	// those bytes directly (if it can), "lib" to use the library's own API.
	// It returns messages written and write errors.
	Broadcast(mode string, payload, frame []byte) (sent, errs int, err error)
}

var impls = map[string]func() impl{
	"gorilla":      newGorilla,
	"coder":        newCoder,
	"gobwas-epoll": newEpoll,
	"nbio":         newNbio,
}

var greeting = []byte(wsframe.ConnectionEstablished)

func main() {
	name := flag.String("impl", "gorilla", "implementation: "+strings.Join(implNames(), ", "))
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	flag.Parse()

	mk, ok := impls[*name]
	if !ok {
		log.Fatalf("unknown -impl %q (have %s)", *name, strings.Join(implNames(), ", "))
	}
	raiseNofile()
	im := mk()

	mux := http.NewServeMux()
	mux.Handle("/app/test", im.Handler())
	mux.HandleFunc("/broadcast", func(w http.ResponseWriter, r *http.Request) { handleBroadcast(im, w, r) })
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) { handleStats(im, w, r.URL.Query().Get("gc") == "1") })

	log.Printf("wsserver impl=%s listening on %s (pid %d)", *name, *addr, os.Getpid())
	if err := im.Serve(*addr, mux); err != nil {
		log.Fatal(err)
	}
}

func implNames() []string {
	var s []string
	for k := range impls {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// raiseNofile lifts the soft RLIMIT_NOFILE to the hard limit.
func raiseNofile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// BroadcastResult is the JSON answer of /broadcast.
type BroadcastResult struct {
	Mode      string  `json:"mode"`
	Conns     int     `json:"conns"`
	Sent      int     `json:"sent"`
	Errors    int     `json:"errors"`
	ElapsedNs int64   `json:"elapsed_ns"` // first write start to last write return
	CPUNs     int64   `json:"cpu_ns"`     // process user+sys CPU over the same span
	UserNs    int64   `json:"user_ns"`    // user-space part of CPUNs (library + runtime overhead)
	CPUPerMsg float64 `json:"cpu_ns_per_msg"`
	// Context switches of the whole process over the span: voluntary ones
	// mean a writer blocked, involuntary ones mean the kernel preempted us.
	VolCtxSw   int64  `json:"vol_ctxsw"`
	InvolCtxSw int64  `json:"invol_ctxsw"`
	Err        string `json:"err,omitempty"`
}

func handleBroadcast(im impl, w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	if n <= 0 {
		n = 100
	}
	mode := r.URL.Query().Get("mode")
	if mode == "" {
		mode = "lib"
	}
	payload := makePayload(n)
	frame := wsframe.Encode(wsframe.OpText, payload)

	res := BroadcastResult{Mode: mode, Conns: im.Count()}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	sent, errs, err := im.Broadcast(mode, payload, frame)
	res.ElapsedNs = time.Since(t0).Nanoseconds()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.CPUNs = (cpuTime(&ru1) - cpuTime(&ru0)).Nanoseconds()
	res.UserNs = ru1.Utime.Nano() - ru0.Utime.Nano()
	res.VolCtxSw, res.InvolCtxSw = ru1.Nvcsw-ru0.Nvcsw, ru1.Nivcsw-ru0.Nivcsw
	res.Sent, res.Errors = sent, errs
	if err != nil {
		res.Err = err.Error()
	}
	if sent > 0 {
		res.CPUPerMsg = float64(res.CPUNs) / float64(sent)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// makePayload returns an n-byte JSON-ish Pusher event.
func makePayload(n int) []byte {
	p := []byte(`{"event":"e","channel":"c","data":"`)
	for len(p) < n-2 {
		p = append(p, 'x')
	}
	p = append(p, `"}`...)
	return p[:n]
}

// cpuTime is user+system CPU time (all threads of the process).
func cpuTime(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Stats is the JSON answer of /stats.
type Stats struct {
	Conns        int    `json:"conns"`
	Goroutines   int    `json:"goroutines"`
	VmRSS        int64  `json:"vmrss_bytes"`
	HeapInuse    uint64 `json:"heap_inuse"`
	HeapAlloc    uint64 `json:"heap_alloc"`
	StackInuse   uint64 `json:"stack_inuse"`
	Sys          uint64 `json:"sys"`
	NumGC        uint32 `json:"num_gc"`
	HeapReleased uint64 `json:"heap_released"`
}

func handleStats(im impl, w http.ResponseWriter, gc bool) {
	if gc {
		debug.FreeOSMemory() // forces a GC and returns freed pages to the OS
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := Stats{
		Conns:        im.Count(),
		Goroutines:   runtime.NumGoroutine(),
		VmRSS:        vmRSS(),
		HeapInuse:    ms.HeapInuse,
		HeapAlloc:    ms.HeapAlloc,
		StackInuse:   ms.StackInuse,
		Sys:          ms.Sys,
		NumGC:        ms.NumGC,
		HeapReleased: ms.HeapReleased,
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kb)
			return kb * 1024
		}
	}
	return -1
}

// errUnsupported is returned by Broadcast for a mode the library cannot do.
type errUnsupported string

func (e errUnsupported) Error() string { return string(e) }
