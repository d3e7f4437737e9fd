package protocol

import (
	"errors"
	"strings"
)

// ChannelType is what a channel name's prefix makes it.
type ChannelType uint8

// Channel types, from the most specific prefix to the least.
const (
	ChannelPublic ChannelType = iota
	ChannelPrivate
	ChannelPresence
	ChannelEncrypted // private-encrypted-
	ChannelUser      // #server-to-user-{id}
)

// Prefixes that classify channels (PROTOCOL.md §2.5).
const (
	PrefixUser           = "#server-to-user-"
	PrefixPrivate        = "private-"
	PrefixEncrypted      = "private-encrypted-"
	PrefixPresence       = "presence-"
	PrefixCache          = "cache-"
	PrefixPrivateCache   = "private-cache-"
	PrefixPresenceCache  = "presence-cache-"
	PrefixEncryptedCache = "private-encrypted-cache-"
)

// Channel is a classified channel name.
type Channel struct {
	Name  string
	Type  ChannelType
	Cache bool // a cache channel: the last API event is replayed to new subscribers
}

// Classify returns the type of name by exact prefix (with the dash).
func Classify(name string) Channel {
	c := Channel{Name: name}
	switch {
	case strings.HasPrefix(name, PrefixUser):
		c.Type = ChannelUser
	case strings.HasPrefix(name, PrefixEncryptedCache):
		c.Type, c.Cache = ChannelEncrypted, true
	case strings.HasPrefix(name, PrefixEncrypted):
		c.Type = ChannelEncrypted
	case strings.HasPrefix(name, PrefixPrivateCache):
		c.Type, c.Cache = ChannelPrivate, true
	case strings.HasPrefix(name, PrefixPrivate):
		c.Type = ChannelPrivate
	case strings.HasPrefix(name, PrefixPresenceCache):
		c.Type, c.Cache = ChannelPresence, true
	case strings.HasPrefix(name, PrefixPresence):
		c.Type = ChannelPresence
	case strings.HasPrefix(name, PrefixCache):
		c.Cache = true
	}
	return c
}

// NeedsAuth reports whether subscribing needs a signature (private-, presence-).
func (c Channel) NeedsAuth() bool {
	return c.Type == ChannelPrivate || c.Type == ChannelPresence || c.Type == ChannelEncrypted
}

// IsPresence reports whether c is a presence channel.
func (c Channel) IsPresence() bool { return c.Type == ChannelPresence }

// AllowsClientEvents reports whether client events may be sent on c
// (private and presence channels only, encrypted included).
func (c Channel) AllowsClientEvents() bool { return c.NeedsAuth() }

// UserID returns the user id of a #server-to-user- channel.
func (c Channel) UserID() string { return strings.TrimPrefix(c.Name, PrefixUser) }

// UserChannel returns the name of the channel that reaches user id.
func UserChannel(id string) string { return PrefixUser + id }

// Name validation errors.
var (
	ErrNameEmpty   = errors.New("name is empty")
	ErrNameTooLong = errors.New("name is too long")
	ErrNameChars   = errors.New("name has characters outside A-Z a-z 0-9 _ - = @ , . ;")
)

// DefaultMaxChannelName is the documented channel name limit, prefix included.
const DefaultMaxChannelName = 164

// validNameByte reports whether b may appear in channel names and user ids.
func validNameByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	switch b {
	case '_', '-', '=', '@', ',', '.', ';':
		return true
	}
	return false
}

// ValidName checks a name against the channel charset and a length limit.
func ValidName(name string, max int) error {
	if name == "" {
		return ErrNameEmpty
	}
	if len(name) > max {
		return ErrNameTooLong
	}
	for i := 0; i < len(name); i++ {
		if !validNameByte(name[i]) {
			return ErrNameChars
		}
	}
	return nil
}

// ValidChannelName validates a channel name. The only name allowed to contain
// '#' is #server-to-user-{id}, whose id must itself be a valid user id.
func ValidChannelName(name string, max int) error {
	if strings.HasPrefix(name, PrefixUser) {
		if len(name) > max+len(PrefixUser) {
			return ErrNameTooLong
		}
		return ValidName(name[len(PrefixUser):], max)
	}
	return ValidName(name, max)
}

// ValidUserID validates a user id (same charset as channels).
func ValidUserID(id string, max int) error { return ValidName(id, max) }
