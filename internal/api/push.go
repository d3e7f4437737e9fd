package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldrt/herald/internal/apps"
	"github.com/heraldrt/herald/internal/protocol"
	"github.com/heraldrt/herald/internal/push"
)

// Pusher sends direct pushes with delivery receipts (push.Service).
type Pusher interface {
	ToUser(ctx context.Context, app, userID, event, data string, timeout time.Duration) (push.Result, error)
	ToSocket(ctx context.Context, app, socketID, event, data string, timeout time.Duration) (push.Result, error)
}

// pushBody is the body of a direct push: an event like a trigger's, without
// channels, and an optional timeout.
type pushBody struct {
	Name      string          `json:"name"`
	Data      json.RawMessage `json:"data"`
	TimeoutMS *int64          `json:"timeout_ms"`
}

// parsePush decodes and validates a direct push body; it returns the data to
// deliver and the timeout to wait.
func parsePush(app *apps.App, body []byte) (b pushBody, data string, timeout time.Duration, e *apiError) {
	if err := json.Unmarshal(body, &b); err != nil {
		return b, "", 0, badRequest("Invalid JSON body")
	}
	if err := validateNameData(app, b.Name, b.Data, &data); err != nil {
		return b, "", 0, err
	}
	timeout = app.PushTimeoutOrDefault()
	if b.TimeoutMS != nil {
		ms := *b.TimeoutMS
		if ms < 1 || ms > apps.MaxPushTimeout.Milliseconds() {
			return b, "", 0, badRequest("timeout_ms must be between 1 and " + strconv.FormatInt(apps.MaxPushTimeout.Milliseconds(), 10))
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	return b, data, timeout, nil
}

// pushUser handles POST /apps/{app}/users/{user}/events.
func (a *API) pushUser(w http.ResponseWriter, req *request) {
	id := req.r.PathValue("user")
	if err := protocol.ValidUserID(id, req.app.MaxUserIDLength); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid user id: "+err.Error())
		return
	}
	b, data, timeout, e := parsePush(req.app, req.body)
	if e != nil {
		writeError(w, e.status, e.msg)
		return
	}
	r, err := a.cfg.Push.ToUser(req.r.Context(), req.app.ID, id, b.Name, data, timeout)
	a.pushAnswer(w, req, r, err)
}

// pushSocket handles POST /apps/{app}/sockets/{socket}/events.
func (a *API) pushSocket(w http.ResponseWriter, req *request) {
	id := req.r.PathValue("socket")
	if !socketIDRe.MatchString(id) || len(id) > 64 {
		writeError(w, http.StatusBadRequest, "Invalid socket_id: expected two integers joined by a dot, e.g. 1234.5678")
		return
	}
	b, data, timeout, e := parsePush(req.app, req.body)
	if e != nil {
		writeError(w, e.status, e.msg)
		return
	}
	r, err := a.cfg.Push.ToSocket(req.r.Context(), req.app.ID, id, b.Name, data, timeout)
	a.pushAnswer(w, req, r, err)
}

func (a *API) pushAnswer(w http.ResponseWriter, req *request, r push.Result, err error) {
	switch {
	case err == nil:
		writeJSON(w, r)
	case errors.Is(err, push.ErrNoSocket):
		writeError(w, http.StatusNotFound, "No open connection with this socket_id (it closed, or never existed)")
	case errors.Is(err, push.ErrBadSocketID):
		writeError(w, http.StatusBadRequest, "Invalid socket_id")
	default:
		a.log.Warn("direct push failed", "app", req.app.ID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "Could not reach the cluster state, try again")
	}
}
