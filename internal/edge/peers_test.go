package edge

import "testing"

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5555":                   "192.0.2.7",
		"[::ffff:192.0.2.7]:5555":          "192.0.2.7", // IPv4-mapped is the IPv4 address
		"[2001:db8:1:2:3:4:5:6]:443":       "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:ffff:0:1]:443": "2001:db8:1:2::/64", // same /64, same key
		"[2001:db8:1:3::1]:443":            "2001:db8:1:3::/64",
		"[fe80::1%eth0]:443":               "fe80::/64",
		"not an address":                   "not an address",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPeersLimit(t *testing.T) {
	p := peers{max: 2}
	a, ok1 := p.acquire("192.0.2.1:1")
	b, ok2 := p.acquire("192.0.2.1:2")
	_, ok3 := p.acquire("192.0.2.1:3")
	_, other := p.acquire("192.0.2.2:1")
	if !ok1 || !ok2 || ok3 || !other {
		t.Fatalf("acquire: %v %v %v %v, want true true false true", ok1, ok2, ok3, other)
	}
	p.release(a)
	if _, ok := p.acquire("192.0.2.1:4"); !ok {
		t.Fatal("a released slot is not reusable")
	}
	p.release(b)
	p.release("") // no limit: nothing to release
	if n := p.counts["192.0.2.1"]; n != 1 {
		t.Fatalf("count %d, want 1", n)
	}
	unlimited := peers{}
	for i := 0; i < 1000; i++ {
		if k, ok := unlimited.acquire("192.0.2.1:1"); !ok || k != "" {
			t.Fatal("an unlimited server refused or counted a connection")
		}
	}
	// Tracking: a connection with neither a slot nor a bridge is not recorded.
	c := &conn{}
	unlimited.track(c, "", nil)
	if unlimited.n.Load() != 0 || unlimited.untrack(c) != nil {
		t.Fatal("a plain unlimited connection was tracked")
	}
	p.track(c, "192.0.2.9", nil)
	p.counts["192.0.2.9"] = 1
	p.untrack(c)
	if p.n.Load() != 0 || p.counts["192.0.2.9"] != 0 {
		t.Fatal("untrack did not release the slot")
	}
}
