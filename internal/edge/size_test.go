package edge

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps the per-connection struct in the 160-byte size class:
// every open connection carries one.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 160 {
		t.Errorf("conn is %d bytes, want at most 160", n)
	}
}
