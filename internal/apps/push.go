package apps

import (
	"fmt"
	"time"
)

// Direct push and draining settings.
const (
	// DefaultPushTimeout is App.PushTimeout's default.
	DefaultPushTimeout = 2 * time.Second
	// MaxPushTimeout is the longest accepted push timeout, in the config and
	// in a request.
	MaxPushTimeout = 10 * time.Second
	// DefaultDrainWindow is Config.DrainWindow's default.
	DefaultDrainWindow = 30 * time.Second
	// MaxDrainWindow is the longest accepted drain window.
	MaxDrainWindow = time.Hour
)

// PushTimeoutOrDefault returns the app's push timeout, or the default.
func (a *App) PushTimeoutOrDefault() time.Duration {
	if a.PushTimeout.Duration > 0 {
		return a.PushTimeout.Duration
	}
	return DefaultPushTimeout
}

// DrainWindowOrDefault returns the drain window, or the default.
func (c *Config) DrainWindowOrDefault() time.Duration {
	if c.DrainWindow.Duration > 0 {
		return c.DrainWindow.Duration
	}
	return DefaultDrainWindow
}

func validatePush(a *App, add func(field, problem string)) {
	if a.PushTimeout.invalid != "" {
		add("push_timeout", fmt.Sprintf(`must be a duration such as "2s" or a number of milliseconds; got %q`, a.PushTimeout.invalid))
	} else if d := a.PushTimeout.Duration; d < 0 || d > MaxPushTimeout {
		add("push_timeout", fmt.Sprintf("must be between 0 (the default, %s) and %s; got %s", DefaultPushTimeout, MaxPushTimeout, d))
	}
}

func validateDrain(c *Config, add func(*FieldError)) {
	if c.DrainWindow.invalid != "" {
		add(&FieldError{Field: "drain_window", Problem: fmt.Sprintf(`must be a duration such as "30s" or a number of milliseconds; got %q`, c.DrainWindow.invalid)})
	} else if d := c.DrainWindow.Duration; d < 0 || d > MaxDrainWindow {
		add(&FieldError{Field: "drain_window", Problem: fmt.Sprintf("must be between 0 (the default, %s) and %s; got %s", DefaultDrainWindow, MaxDrainWindow, d)})
	}
}

// SetDuration sets d from a config string (as in YAML: a Go duration or a
// bare number of milliseconds); text that does not parse is kept for
// Validate to report. For flags and environment variables.
func (d *Duration) SetDuration(s string) {
	*d = Duration{}
	v, err := ParseDuration(s)
	if err != nil {
		d.invalid = s
		return
	}
	d.Duration = v
}
