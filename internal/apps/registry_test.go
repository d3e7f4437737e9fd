package apps

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestRegistry(t *testing.T) {
	a := DefaultApp("a", "ka", "s")
	b := DefaultApp("b", "kb", "s")
	r, err := NewRegistry([]*App{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if r.ByID("a") != a || r.ByID("b") != b || r.ByID("ka") != nil || r.ByID("") != nil {
		t.Error("ByID lookups wrong")
	}
	if r.ByKey("ka") != a || r.ByKey("kb") != b || r.ByKey("a") != nil || r.ByKey("") != nil {
		t.Error("ByKey lookups wrong")
	}
	all := r.All()
	if len(all) != 2 || all[0] != a || all[1] != b {
		t.Fatalf("All = %v", all)
	}
	all[0] = nil
	if r.All()[0] != a {
		t.Error("All exposes the registry's slice")
	}
}

func TestRegistryDoesNotAliasInput(t *testing.T) {
	in := []*App{DefaultApp("a", "ka", "s")}
	r, err := NewRegistry(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0] = DefaultApp("x", "kx", "s")
	if r.All()[0].ID != "a" {
		t.Error("registry shares the input slice")
	}
}

func TestRegistryRejects(t *testing.T) {
	tests := []struct {
		name string
		apps []*App
		dup  bool
		want string
	}{
		{"duplicate id", []*App{{ID: "a", Key: "k1"}, {ID: "a", Key: "k2"}}, true, `apps[1] (id "a"): id "a" duplicates apps[0] (id "a")`},
		{"duplicate key", []*App{{ID: "a", Key: "k"}, {ID: "b", Key: "k"}}, true, `apps[1] (id "b"): key "k" duplicates apps[0] (id "a")`},
		{"nil app", []*App{nil}, false, "apps[0]: is empty"},
		{"empty id", []*App{{Key: "k"}}, false, "apps[0]: id is required"},
		{"bad key", []*App{{ID: "a", Key: "k/1"}}, false, `key "k/1" may only contain`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRegistry(tt.apps)
			if r != nil || !errors.Is(err, ErrInvalid) || errors.Is(err, ErrDuplicate) != tt.dup {
				t.Fatalf("NewRegistry = %v, %v", r, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestRegistryEmpty(t *testing.T) {
	r, err := NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ByID("a") != nil || r.ByKey("a") != nil || len(r.All()) != 0 {
		t.Error("empty registry found something")
	}
}

func TestRegistryConcurrent(t *testing.T) {
	c, err := Load("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(c.Apps)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if r.ByKey("first-key") == nil || r.ByID("app.two") == nil || len(r.All()) != 2 {
					t.Error("lookup failed")
					return
				}
			}
		})
	}
	wg.Wait()
}
