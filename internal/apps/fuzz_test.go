package apps

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("apps:\n  -\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a config with an error")
			}
			if !errors.Is(err, ErrParse) && !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("foreign error: %v", err)
			}
			return
		}
		// A parsed config is valid, has defaults, and its apps index cleanly.
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		if c.LogLevel == "" || c.LogFormat == "" {
			t.Fatal("top-level defaults not applied")
		}
		for _, a := range c.Apps {
			if a.MaxEventSize <= 0 || a.ActivityTimeout <= 0 {
				t.Fatalf("app defaults not applied: %+v", a)
			}
			for _, r := range a.History {
				if r.MaxEvents <= 0 || r.MaxEvents > MaxHistoryMaxEvents || r.MaxAge.Duration < MinHistoryMaxAge || r.MaxAge.Duration > MaxHistoryMaxAge {
					t.Fatalf("history rule out of bounds after defaults: %+v", r)
				}
			}
		}
		if _, err := NewRegistry(c.Apps); err != nil {
			t.Fatalf("NewRegistry on a valid config: %v", err)
		}
	})
}
