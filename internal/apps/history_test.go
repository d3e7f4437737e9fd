package apps

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoadHistory(t *testing.T) {
	c, err := Load("testdata/history.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	a, none := c.Apps[0], c.Apps[1]
	if len(a.History) != 3 || len(none.History) != 0 {
		t.Fatalf("history = %+v / %+v", a.History, none.History)
	}
	r0, r1, r2 := a.History[0], a.History[1], a.History[2]
	if r0.MaxEvents != 500 || r0.MaxAge.Duration != time.Hour {
		t.Errorf("rule 0 = %+v", r0)
	}
	if r1.MaxEvents != DefaultHistoryMaxEvents || r1.MaxAge.Duration != DefaultHistoryMaxAge {
		t.Errorf("rule 1 defaults = %+v", r1)
	}
	if r2.MaxEvents != 10000 || r2.MaxAge.Duration != 90*time.Second {
		t.Errorf("rule 2 = %+v", r2)
	}
	for ch, want := range map[string]*HistoryRule{
		"chat-1":               &a.History[0],
		"private-orders-42":    &a.History[0],
		"presence-lobby":       &a.History[1],
		"cache-news-feed":      &a.History[1],
		"cache--feed":          &a.History[1],
		"news":                 &a.History[2], // "*" catches the rest
		"#server-to-user-1":    nil,           // internal channels never match
		"private-orders":       &a.History[2],
		"presence-lobby-other": &a.History[2],
	} {
		if got := a.HistoryFor(ch); got != want {
			t.Errorf("HistoryFor(%q) = %p, want %p", ch, got, want)
		}
	}
	if none.HistoryFor("chat-1") != nil {
		t.Error("an app without history matched a channel")
	}
}

func TestLoadHistoryErrors(t *testing.T) {
	_, err := Load("testdata/history_errors.yaml")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	wants := []string{
		`apps[0] (id "h"): history[0].channels must list at least one channel name or pattern`,
		`apps[0] (id "h"): history[1].channels[0] is empty`,
		`apps[0] (id "h"): history[1].channels[1] "chat-#" may only contain channel name characters`,
		`apps[0] (id "h"): history[1].max_events must be between 1 and 10000 (0 or unset: 100); got 10001`,
		`apps[0] (id "h"): history[1].max_age must be between 1s and 24h0m0s (a bare number is milliseconds: write "10m"); got 600ms`,
		`apps[0] (id "h"): history[2].max_events must be between 1 and 10000 (0 or unset: 100); got -1`,
		`apps[0] (id "h"): history[2].max_age must be a duration such as "10m"; got "later"`,
		`apps[0] (id "h"): history[3].max_age must be between 1s and 24h0m0s`,
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not report %q:\n%v", w, err)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != len(wants) {
		t.Errorf("got %d problems, want %d:\n%v", n, len(wants), err)
	}
}

func TestHistoryPatternLimit(t *testing.T) {
	a := &App{ID: "a", Key: "k", Secret: "s"}
	var chans []string
	for i := 0; i <= MaxHistoryPatterns; i++ {
		chans = append(chans, "c-*")
	}
	a.History = []HistoryRule{{Channels: chans}}
	err := (&Config{Apps: []*App{a}}).Validate()
	if err == nil || !strings.Contains(err.Error(), "history lists 101 channel patterns; at most 100") {
		t.Fatalf("error = %v", err)
	}
}

func TestMatchPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, name string
		want          bool
	}{
		{"chat-*", "chat-1", true},
		{"chat-*", "chat-", true},
		{"chat-*", "chat", false},
		{"chat-*", "xchat-1", false},
		{"*", "", true},
		{"*", "anything", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"*-orders-*", "private-orders-7", true},
		{"*-orders-*", "private-orders", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"**", "x", true},
		{"a*a*a*a*b", strings.Repeat("a", 200), false},
		{"", "", true},
		{"", "x", false},
	} {
		if got := MatchPattern(tt.pattern, tt.name); got != tt.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}
