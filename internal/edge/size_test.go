package edge

import (
	"bytes"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestConnSize keeps the per-connection struct in the 160-byte size class:
// every open connection carries one.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 160 {
		t.Errorf("conn is %d bytes, want at most 160", n)
	}
}

// TestWritevOrderAndEmptyBuffers writes more frames than one writev takes,
// with empty buffers among them, to a socketpair and reads them back in order.
func TestWritevOrderAndEmptyBuffers(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	c := &conn{fd: fds[0]}
	defer unix.Close(fds[0])
	var bufs [][]byte
	var want []byte
	for i := range 3*maxIovecs + 5 {
		b := []byte(strconv.Itoa(i) + ",")
		if i%7 == 0 {
			b = nil
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	done := make(chan []byte)
	go func() {
		var got []byte
		buf := make([]byte, 4096)
		for len(got) < len(want) {
			n, err := unix.Read(fds[1], buf)
			if err != nil || n == 0 {
				break
			}
			got = append(got, buf[:n]...)
		}
		done <- got
	}()
	rest, n, err := c.writev(bufs)
	if err != nil || len(rest) != 0 || n != len(want) {
		t.Fatalf("writev: rest %d, n %d of %d, err %v", len(rest), n, len(want), err)
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}
