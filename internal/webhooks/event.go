package webhooks

import (
	"strconv"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
)

// event is one webhook event. It is immutable once queued and may sit in
// several webhooks' queues at once.
type event struct {
	name     string // apps.Webhook* type
	channel  string
	event    string // client_event: the event name
	data     string // client_event: the data, always a string
	socketID string // client_event: the sender
	userID   string // member_*; client_event on presence channels
	count    int    // subscription_count
	at       time.Time
}

// appendJSON appends the event object of PROTOCOL.md §8.3: name and channel,
// then the fields of its type.
func (e *event) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = protocol.AppendString(b, e.name)
	b = append(b, `,"channel":`...)
	b = protocol.AppendString(b, e.channel)
	switch e.name {
	case apps.WebhookMemberAdded, apps.WebhookMemberRemoved:
		b = append(b, `,"user_id":`...)
		b = protocol.AppendString(b, e.userID)
	case apps.WebhookClientEvent:
		b = append(b, `,"event":`...)
		b = protocol.AppendString(b, e.event)
		b = append(b, `,"data":`...)
		b = protocol.AppendString(b, e.data)
		b = append(b, `,"socket_id":`...)
		b = protocol.AppendString(b, e.socketID)
		if e.userID != "" {
			b = append(b, `,"user_id":`...)
			b = protocol.AppendString(b, e.userID)
		}
	case apps.WebhookSubscriptionCount:
		b = append(b, `,"subscription_count":`...)
		b = strconv.AppendInt(b, int64(e.count), 10)
	}
	return append(b, '}')
}

// body returns the request body for events (in order):
// {"time_ms":<when the first was queued, Unix ms>,"events":[…]}.
func body(events []*event) []byte {
	n := 40
	for _, e := range events {
		n += 64 + len(e.channel) + len(e.data) + len(e.event)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"time_ms":`...)
	b = strconv.AppendInt(b, events[0].at.UnixMilli(), 10)
	b = append(b, `,"events":[`...)
	for i, e := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.appendJSON(b)
	}
	return append(b, "]}"...)
}
