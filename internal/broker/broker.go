// Package broker defines how Herald nodes exchange channel messages. The local
// hub subscribes a node to a topic once, on the first local subscriber of a
// channel, and releases it after the last; Publish reaches every node
// subscribed to the topic, this one included.
package broker

import (
	"context"
	"errors"
)

// Kind says what a Message asks the receiving nodes to do.
type Kind uint8

const (
	// KindEvent delivers Payload to every local subscriber except Exclude.
	KindEvent Kind = iota
	// KindTerminate closes every local socket on the topic (used on
	// #server-to-user- topics to terminate a user's connections).
	KindTerminate
)

// Topic names one channel of one app.
type Topic struct {
	App     string
	Channel string
}

// Message is one event for one topic.
type Message struct {
	Topic Topic
	Kind  Kind
	// Payload is the Pusher JSON frame exactly as subscribers receive it.
	Payload []byte
	// Exclude is a socket_id that must not receive the message ("" for none).
	Exclude string
}

// Handler receives the messages of topics this node subscribed to. It must not
// block: it is called on the broker's delivery path.
type Handler func(m *Message)

// Broker moves messages between nodes. All methods are safe for concurrent use.
type Broker interface {
	// Publish sends m to every node subscribed to m.Topic. A nil error means
	// the broker accepted the message.
	Publish(ctx context.Context, m *Message) error
	// Subscribe makes this node receive the topic's messages through its
	// Handler. When it returns nil, messages published afterwards arrive.
	Subscribe(ctx context.Context, t Topic) error
	// Unsubscribe stops delivery of the topic to this node.
	Unsubscribe(ctx context.Context, t Topic) error
	// Close releases the broker's resources; later calls fail with ErrClosed.
	Close() error
}

// ErrClosed is returned by a Broker used after Close.
var ErrClosed = errors.New("broker: closed")
