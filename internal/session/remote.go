package session

import (
	"context"

	"github.com/heraldrt/herald/internal/broker"
	"github.com/heraldrt/herald/internal/protocol"
)

// Transitions decided outside this node's sessions: in a cluster, a dead
// node's connections are removed from the shared state by a surviving node,
// which then tells subscribers and webhooks what the dead node's sessions
// would have said had they closed normally. Unknown apps are ignored.

// RemoteMemberRemoved reports that userID left presence channel (its last
// socket was on a dead node): member_removed to the channel and the webhook.
func (n *Node) RemoteMemberRemoved(ctx context.Context, app, channel, userID string) {
	if n.Apps.ByID(app) == nil {
		return
	}
	data := `{"user_id":` + string(protocol.AppendString(nil, userID)) + `}`
	if err := n.Broker.Publish(ctx, &broker.Message{
		Topic:   broker.Topic{App: app, Channel: channel},
		Payload: protocol.Event(protocol.EventMemberRemoved, channel, data),
	}); err != nil {
		n.log().Warn("member_removed publish failed", "app", app, "channel", channel, "err", err)
	}
	n.observer().MemberRemoved(app, channel, userID)
}

// RemoteChannelVacated reports that channel lost its last subscriber.
func (n *Node) RemoteChannelVacated(app, channel string) {
	if n.Apps.ByID(app) == nil {
		return
	}
	n.observer().ChannelVacated(app, channel)
}

// RemoteUserOffline tells userID's watchers that it went offline.
func (n *Node) RemoteUserOffline(ctx context.Context, app, userID string) {
	if n.Apps.ByID(app) == nil {
		return
	}
	n.publishWatchlist(ctx, app, userID, "offline")
}

// RemoteCountChanged reports a channel's new subscription count.
func (n *Node) RemoteCountChanged(ctx context.Context, app, channel string, count int) {
	a := n.Apps.ByID(app)
	if a == nil {
		return
	}
	n.subscriptionCount(ctx, a, protocol.Classify(channel), count)
}
