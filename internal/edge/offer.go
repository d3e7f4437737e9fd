package edge

// Direct push (internal/push) needs to know whether a frame really entered a
// connection's write queue, so that a delivery receipt counts only frames the
// connection accepted.

// Offer implements hub.Offerer: it queues a shared, pre-encoded frame like
// Send and reports whether it was queued. It is false when the connection is
// closing (a close frame is queued or it is torn down) or when the frame
// would pass the app's max_queued_bytes (the connection is then closed as a
// slow consumer). It never blocks.
func (c *conn) Offer(wire []byte) bool { return c.enqueue(wire, false) }

// OfferPayload encodes one Pusher JSON frame for this connection alone and
// queues it like Offer, reporting whether it was queued.
func (c *conn) OfferPayload(payload []byte) bool { return c.enqueue(EncodeText(payload), false) }
