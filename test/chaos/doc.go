// Package chaos runs Herald under faults and load with real processes: real
// herald binaries (edge/api roles), real redis-server shards, and thousands of
// WebSocket connections from this test process. Each test reports its figures
// with t.Logf and in a JSON and Markdown summary (CHAOS_REPORT_DIR, default
// bin/ at the repository root), and asserts its thresholds.
//
// The tests build only with -tags chaos (make chaos, part of make test) or
// -tags soak (make soak): they are load tests, run without the race detector
// (the race detector allows at most 8128 goroutines and slows every process
// down several times, which would measure the detector, not Herald).
package chaos
