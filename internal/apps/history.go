package apps

import (
	"fmt"
	"strings"
	"time"
)

// Defaults and bounds of a HistoryRule.
const (
	DefaultHistoryMaxEvents = 100
	MaxHistoryMaxEvents     = 10000
	DefaultHistoryMaxAge    = 10 * time.Minute
	MinHistoryMaxAge        = time.Second
	MaxHistoryMaxAge        = 24 * time.Hour
	// MaxHistoryPatterns bounds the channel patterns of one app (all rules
	// together): each API publish is matched against them.
	MaxHistoryPatterns = 100
	// maxPatternLength bounds one pattern: a channel name (at most 200 bytes)
	// plus a few '*'.
	maxPatternLength = 256
)

// HistoryRule opts channels into history and recovery (YAML: an entry of the
// app's history list). Every event published through the HTTP API on a
// matching channel gets a per-channel serial, and the channel keeps its last
// MaxEvents events that are at most MaxAge old.
type HistoryRule struct {
	// Channels are channel names or patterns in which '*' matches any run of
	// characters ("chat-*", "private-orders-*", "*"). Required; names
	// starting with '#' (internal channels) never match.
	Channels []string `yaml:"channels"`
	// MaxEvents is how many events each channel keeps. Default 100; at most
	// 10000.
	MaxEvents int `yaml:"max_events"`
	// MaxAge is how long an event is kept ("10m", "90s"; a bare number is
	// milliseconds). Default 10m; between 1s and 24h.
	MaxAge Duration `yaml:"max_age"`
}

// HistoryFor returns the first history rule whose patterns match channel, or
// nil when the channel keeps no history. Names starting with '#' never match.
func (a *App) HistoryFor(channel string) *HistoryRule {
	if len(a.History) == 0 || strings.HasPrefix(channel, "#") {
		return nil
	}
	for i := range a.History {
		r := &a.History[i]
		for _, p := range r.Channels {
			if MatchPattern(p, channel) {
				return r
			}
		}
	}
	return nil
}

// MatchPattern reports whether name matches pattern, in which '*' matches any
// run of characters (possibly empty) and every other byte matches itself.
func MatchPattern(pattern, name string) bool {
	// Iterative glob with single backtracking point: linear in practice,
	// O(len(pattern)·len(name)) at worst.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// applyHistoryDefaults fills each rule's zero limits.
func (a *App) applyHistoryDefaults() {
	for i := range a.History {
		r := &a.History[i]
		if r.MaxEvents == 0 {
			r.MaxEvents = DefaultHistoryMaxEvents
		}
		if r.MaxAge.Duration == 0 && r.MaxAge.invalid == "" {
			r.MaxAge.Duration = DefaultHistoryMaxAge
		}
	}
}

// validPatternByte reports whether b may appear in a history pattern: the
// channel name characters and '*'.
func validPatternByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("_-=@,.;*", b) >= 0
}

// validateHistory reports problems with a's history rules through add.
func validateHistory(a *App, add func(field, problem string)) {
	patterns := 0
	for i, r := range a.History {
		field := func(name string) string { return fmt.Sprintf("history[%d].%s", i, name) }
		if len(r.Channels) == 0 {
			add(field("channels"), `must list at least one channel name or pattern, e.g. ["chat-*"]`)
		}
		for j, p := range r.Channels {
			patterns++
			f := fmt.Sprintf("%s[%d]", field("channels"), j)
			switch {
			case p == "":
				add(f, "is empty")
			case len(p) > maxPatternLength:
				add(f, fmt.Sprintf("is longer than %d characters", maxPatternLength))
			default:
				for k := 0; k < len(p); k++ {
					if !validPatternByte(p[k]) {
						add(f, fmt.Sprintf("%q may only contain channel name characters (A-Z a-z 0-9 _ - = @ , . ;) and '*'", p))
						break
					}
				}
			}
		}
		if r.MaxEvents < 0 || r.MaxEvents > MaxHistoryMaxEvents {
			add(field("max_events"), fmt.Sprintf("must be between 1 and %d (0 or unset: %d); got %d",
				MaxHistoryMaxEvents, DefaultHistoryMaxEvents, r.MaxEvents))
		}
		switch d := r.MaxAge.Duration; {
		case r.MaxAge.invalid != "":
			add(field("max_age"), fmt.Sprintf(`must be a duration such as "10m"; got %q`, r.MaxAge.invalid))
		case d != 0 && (d < MinHistoryMaxAge || d > MaxHistoryMaxAge):
			add(field("max_age"), fmt.Sprintf(`must be between %s and %s (a bare number is milliseconds: write "10m"); got %s`,
				MinHistoryMaxAge, MaxHistoryMaxAge, d))
		}
	}
	if patterns > MaxHistoryPatterns {
		add("history", fmt.Sprintf("lists %d channel patterns; at most %d", patterns, MaxHistoryPatterns))
	}
}
