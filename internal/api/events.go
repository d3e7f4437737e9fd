package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
)

// event is one event of /events or one item of /batch_events.
type event struct {
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channels []string        `json:"channels"`
	Channel  string          `json:"channel"`
	SocketID string          `json:"socket_id"`
	Info     string          `json:"info"`

	data string // the data string to deliver
}

// apiError is a validation failure with its HTTP status.
type apiError struct {
	status int
	msg    string
}

func badRequest(msg string) *apiError { return &apiError{http.StatusBadRequest, msg} }

// validate checks e against the app's limits and fills e.data. batch items
// must name exactly one channel.
func validate(a *apps.App, e *event, batch bool) *apiError {
	if err := validateNameData(a, e.Name, e.Data, &e.data); err != nil {
		return err
	}
	if e.Channel != "" {
		if len(e.Channels) > 0 {
			return badRequest("Use either channel or channels, not both")
		}
		e.Channels = []string{e.Channel}
	}
	if len(e.Channels) == 0 {
		return badRequest("Missing channels")
	}
	if batch && len(e.Channels) != 1 {
		return badRequest("Each batch event must name exactly one channel")
	}
	if len(e.Channels) > a.MaxChannelsPerEvent {
		return badRequest("An event may be sent to at most " + strconv.Itoa(a.MaxChannelsPerEvent) + " channels")
	}
	for _, ch := range e.Channels {
		if err := protocol.ValidChannelName(ch, a.MaxChannelNameLength); err != nil {
			return badRequest("Invalid channel name " + strconv.Quote(truncate(ch, 256)) + ": " + err.Error())
		}
		if len(e.Channels) > 1 && protocol.Classify(ch).Type == protocol.ChannelEncrypted {
			return badRequest("Events to encrypted channels must be sent to one channel at a time")
		}
	}
	if e.SocketID != "" && !socketIDRe.MatchString(e.SocketID) {
		return badRequest("Invalid socket_id")
	}
	if e.Info != "" {
		for _, attr := range strings.Split(e.Info, ",") {
			if attr != "user_count" && attr != "subscription_count" {
				return badRequest("Unsupported info attribute " + strconv.Quote(truncate(attr, 64)))
			}
		}
	}
	return nil
}

// validateNameData checks an event's name and data against the app's limits
// and sets *data to the string to deliver.
func validateNameData(a *apps.App, name string, raw json.RawMessage, data *string) *apiError {
	if name == "" {
		return badRequest("Missing event name")
	}
	if len(name) > a.MaxEventNameLength {
		return badRequest("Event name is longer than " + strconv.Itoa(a.MaxEventNameLength) + " characters")
	}
	if strings.HasPrefix(name, "pusher:") || strings.HasPrefix(name, "pusher_internal:") || strings.HasPrefix(name, "herald:") {
		return badRequest("Event names starting with pusher:, pusher_internal: or herald: are reserved")
	}
	if len(raw) == 0 || string(raw) == "null" {
		return badRequest("Missing event data")
	}
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, data); err != nil {
			return badRequest("Invalid event data")
		}
	} else {
		// SDKs send data as a string; other JSON values are delivered as their JSON text.
		*data = string(raw)
	}
	if len(*data) > a.MaxEventSize {
		return &apiError{http.StatusRequestEntityTooLarge,
			"Event data is larger than " + strconv.Itoa(a.MaxEventSize) + " bytes"}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (a *API) publish(ctx context.Context, app *apps.App, e *event) error {
	for _, ch := range e.Channels {
		start := time.Now()
		err := a.node.PublishEvent(ctx, app, ch, e.Name, e.data, e.SocketID)
		if a.cfg.Metrics != nil {
			a.cfg.Metrics.Publish(time.Since(start), err)
		}
		if err != nil {
			a.log.Warn("publish failed", "app", app.ID, "channel", ch, "err", err)
			return err
		}
	}
	return nil
}

// info returns the requested attributes of each channel of e.
func (a *API) info(ctx context.Context, app *apps.App, e *event) (map[string]map[string]int, error) {
	out := make(map[string]map[string]int, len(e.Channels))
	attrs := strings.Split(e.Info, ",")
	for _, ch := range e.Channels {
		m := map[string]int{}
		for _, attr := range attrs {
			switch attr {
			case "user_count":
				if protocol.Classify(ch).IsPresence() {
					n, err := a.node.Presence.Count(ctx, app.ID, ch)
					if err != nil {
						return nil, err
					}
					m["user_count"] = n
				}
			case "subscription_count":
				if !protocol.Classify(ch).IsPresence() {
					n, err := a.node.Occupancy.Count(ctx, app.ID, ch)
					if err != nil {
						return nil, err
					}
					m["subscription_count"] = n
				}
			}
		}
		out[ch] = m
	}
	return out, nil
}

// events handles POST /apps/{app}/events.
func (a *API) events(w http.ResponseWriter, req *request) {
	var e event
	if err := json.Unmarshal(req.body, &e); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	if err := validate(req.app, &e, false); err != nil {
		writeError(w, err.status, err.msg)
		return
	}
	ctx := req.r.Context()
	if err := a.publish(ctx, req.app, &e); err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not publish the event, try again")
		return
	}
	if e.Info == "" {
		writeJSON(w, struct{}{})
		return
	}
	info, err := a.info(ctx, req.app, &e)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Could not read channel info")
		return
	}
	writeJSON(w, map[string]any{"channels": info})
}

// batchEvents handles POST /apps/{app}/batch_events. Every item is validated
// before any is published.
func (a *API) batchEvents(w http.ResponseWriter, req *request) {
	var body struct {
		Batch []*event `json:"batch"`
	}
	if err := json.Unmarshal(req.body, &body); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid JSON body")
		return
	}
	if len(body.Batch) == 0 {
		writeError(w, http.StatusBadRequest, "Missing batch")
		return
	}
	if len(body.Batch) > req.app.MaxBatchSize {
		writeError(w, http.StatusBadRequest, "Cannot batch-send more than "+strconv.Itoa(req.app.MaxBatchSize)+" events at once")
		return
	}
	withInfo := false
	for i, e := range body.Batch {
		if e == nil {
			writeError(w, http.StatusBadRequest, "batch["+strconv.Itoa(i)+"]: not an object")
			return
		}
		if err := validate(req.app, e, true); err != nil {
			writeError(w, err.status, "batch["+strconv.Itoa(i)+"]: "+err.msg)
			return
		}
		withInfo = withInfo || e.Info != ""
	}
	ctx := req.r.Context()
	for _, e := range body.Batch {
		if err := a.publish(ctx, req.app, e); err != nil {
			writeError(w, http.StatusServiceUnavailable, "Could not publish the events, try again")
			return
		}
	}
	if !withInfo {
		writeJSON(w, struct{}{})
		return
	}
	out := make([]map[string]int, len(body.Batch))
	for i, e := range body.Batch {
		out[i] = map[string]int{}
		if e.Info == "" {
			continue
		}
		info, err := a.info(ctx, req.app, e)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "Could not read channel info")
			return
		}
		out[i] = info[e.Channels[0]]
	}
	writeJSON(w, map[string]any{"batch": out})
}
