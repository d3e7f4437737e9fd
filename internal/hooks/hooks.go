// Package hooks is the seam through which channel and member transitions, client
// events and cache misses leave the connection layer: webhooks (and later the
// dashboard) implement Observer. Calls must not block; implementations queue.
package hooks

// Observer is told about the transitions webhooks report. app is the app id.
type Observer interface {
	ChannelOccupied(app, channel string)
	ChannelVacated(app, channel string)
	MemberAdded(app, channel, userID string)
	MemberRemoved(app, channel, userID string)
	// ClientEvent reports an accepted client event; data is the event's data
	// as a string (JSON-encoded when the client sent an object).
	ClientEvent(app, channel, event, data, socketID, userID string)
	CacheMiss(app, channel string)
	SubscriptionCount(app, channel string, count int)
}

// Nop is an Observer that does nothing.
type Nop struct{}

var _ Observer = Nop{}

func (Nop) ChannelOccupied(string, string)                             {}
func (Nop) ChannelVacated(string, string)                              {}
func (Nop) MemberAdded(string, string, string)                         {}
func (Nop) MemberRemoved(string, string, string)                       {}
func (Nop) ClientEvent(string, string, string, string, string, string) {}
func (Nop) CacheMiss(string, string)                                   {}
func (Nop) SubscriptionCount(string, string, int)                      {}
