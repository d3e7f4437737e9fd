package session

import (
	"regexp"
	"testing"
)

func TestSocketIDTag(t *testing.T) {
	re := regexp.MustCompile(`^\d+\.\d+$`)
	for _, tag := range []uint64{0, 1, 42, MaxSocketIDTag} {
		for range 100 {
			id := newSocketID(tag)
			if !re.MatchString(id) {
				t.Fatalf("socket id %q does not match ^\\d+\\.\\d+$", id)
			}
			if got, ok := SocketIDTagOf(id); !ok || got != tag {
				t.Fatalf("SocketIDTagOf(%q) = %d, %v; want %d", id, got, ok, tag)
			}
		}
	}
	for _, bad := range []string{"", ".", "1.", ".1", "1.2.3", "a.1", "1.b", "-1.2", "1 .2", "99999999999999999999999.1"} {
		if _, ok := SocketIDTagOf(bad); ok {
			t.Errorf("SocketIDTagOf(%q) accepted", bad)
		}
	}
}
