// Package state holds the cluster-visible state of channels and users behind
// interfaces: presence members, channel occupancy (subscription counts), signed-in
// users, and cache-channel events. The memory implementations serve a single
// process; Redis implementations slot in behind the same interfaces.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrChannelFull is returned by Presence.Join when a new user would pass the
// channel's member limit.
var ErrChannelFull = errors.New("state: presence channel is full")

// Member is one user of a presence channel.
type Member struct {
	UserID string
	// UserInfo is the raw JSON user_info, or nil.
	UserInfo json.RawMessage
}

// Presence tracks the members of presence channels with a per-user socket
// count: a user is a member while at least one of its sockets is subscribed.
type Presence interface {
	// Join records socketID as a connection of m.UserID in channel. added is
	// true when this is the user's first connection (send member_added).
	// A user not yet a member is refused with ErrChannelFull when the channel
	// already has max distinct users.
	Join(ctx context.Context, app, channel string, m Member, socketID string, max int) (added bool, err error)
	// Leave removes socketID's membership. removed is true when it was the
	// user's last connection (send member_removed).
	Leave(ctx context.Context, app, channel, userID, socketID string) (removed bool, err error)
	// Members lists the channel's distinct users, ordered by user id.
	Members(ctx context.Context, app, channel string) ([]Member, error)
	// Count returns the number of distinct users.
	Count(ctx context.Context, app, channel string) (int, error)
}

// Occupancy counts the subscriptions (sockets) of every channel.
type Occupancy interface {
	// Add counts one more subscription and returns the new count; 1 means the
	// channel just became occupied.
	Add(ctx context.Context, app, channel string) (int, error)
	// Remove counts one subscription less and returns the new count; 0 means
	// the channel was vacated.
	Remove(ctx context.Context, app, channel string) (int, error)
	// Count returns the channel's subscriptions.
	Count(ctx context.Context, app, channel string) (int, error)
	// Channels returns every occupied channel whose name starts with prefix,
	// with its subscription count.
	Channels(ctx context.Context, app, prefix string) (map[string]int, error)
}

// Users tracks which sockets are signed in as which user.
type Users interface {
	// SignIn records socketID as signed in as userID. first is true when the
	// user had no signed-in socket before (the user came online).
	SignIn(ctx context.Context, app, userID, socketID string) (first bool, err error)
	// SignOut forgets socketID. last is true when the user has no signed-in
	// socket left (the user went offline).
	SignOut(ctx context.Context, app, userID, socketID string) (last bool, err error)
	// Online reports for each id whether that user is signed in anywhere.
	Online(ctx context.Context, app string, userIDs []string) ([]bool, error)
}

// CachedEvent is the last API event of a cache channel.
type CachedEvent struct {
	Event string
	Data  string
}

// Cache keeps the last event of cache channels for a time.
type Cache interface {
	// Set stores ev for channel for ttl.
	Set(ctx context.Context, app, channel string, ev CachedEvent, ttl time.Duration) error
	// Get returns the cached event and its remaining time to live; ok is false
	// when nothing is cached.
	Get(ctx context.Context, app, channel string) (ev CachedEvent, ttl time.Duration, ok bool, err error)
}

// Locks grants short-lived named locks that expire on their own: the
// subscription-count throttle (one broadcast per channel per interval, across
// the cluster) takes one per large channel.
type Locks interface {
	// TryLock takes the lock name for ttl. ok is false while another holder's
	// lock on name has not expired.
	TryLock(ctx context.Context, app, name string, ttl time.Duration) (ok bool, err error)
}
