package protocol

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// ClientFrame is a frame received from a client. Data is the raw JSON value of
// the "data" field: an object, a string, or absent.
type ClientFrame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// Frame decoding errors.
var (
	ErrNotJSON      = errors.New("message is not a JSON object")
	ErrMissingEvent = errors.New("message has no event")
)

// DecodeClientFrame parses one client message. It never panics on any input.
// A message nested deeper than MaxJSONDepth is refused with ErrTooDeep.
func DecodeClientFrame(b []byte) (*ClientFrame, error) {
	if TooDeep(b, MaxJSONDepth) {
		return nil, ErrTooDeep
	}
	var f ClientFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, ErrNotJSON
	}
	if f.Event == "" {
		return nil, ErrMissingEvent
	}
	return &f, nil
}

// DataObject returns the frame's data as raw JSON of an object, decoding one
// level of string encoding if the client double-encoded it. It returns nil if
// data is absent or null, or if the decoded string nests deeper than
// MaxJSONDepth.
func (f *ClientFrame) DataObject() json.RawMessage {
	d := f.Data
	if len(d) == 0 || string(d) == "null" {
		return nil
	}
	if d[0] == '"' {
		var s string
		if json.Unmarshal(d, &s) == nil {
			if TooDeep([]byte(s), MaxJSONDepth) {
				return nil
			}
			return json.RawMessage(s)
		}
	}
	return d
}

// AppendEvent appends the server frame {"event":…,"data":"<data>","channel":…}
// with data as a JSON string (the double encoding the protocol uses). channel
// is omitted when empty. Key order is event, data, channel as pusher.com sends.
func AppendEvent(dst []byte, event, channel, data string) []byte {
	dst = append(dst, `{"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"data":`...)
	dst = AppendString(dst, data)
	if channel != "" {
		dst = append(dst, `,"channel":`...)
		dst = AppendString(dst, channel)
	}
	return append(dst, '}')
}

// AppendEventRaw appends a frame whose data is the raw JSON value raw (an
// object or a string as a client sent it), with an optional user_id.
func AppendEventRaw(dst []byte, event, channel string, raw []byte, userID string) []byte {
	dst = append(dst, `{"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"data":`...)
	if len(raw) == 0 {
		dst = append(dst, `"{}"`...)
	} else {
		dst = append(dst, raw...)
	}
	if channel != "" {
		dst = append(dst, `,"channel":`...)
		dst = AppendString(dst, channel)
	}
	if userID != "" {
		dst = append(dst, `,"user_id":`...)
		dst = AppendString(dst, userID)
	}
	return append(dst, '}')
}

// Event returns a server frame with a string data field.
func Event(event, channel, data string) []byte {
	return AppendEvent(make([]byte, 0, 32+len(event)+len(channel)+len(data)*11/10), event, channel, data)
}

// ErrorFrame returns a pusher:error frame. Its data is an object (the one
// exception to double encoding); code 0 is sent as null. channel is optional.
func ErrorFrame(code Code, message, channel string) []byte {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"event":"pusher:error","data":{"code":`...)
	if code == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(code), 10)
	}
	b = append(b, `,"message":`...)
	b = AppendString(b, message)
	b = append(b, '}')
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = AppendString(b, channel)
	}
	return append(b, '}')
}

// ConnectionEstablished returns the first frame of every connection.
func ConnectionEstablished(socketID string, activityTimeout int) []byte {
	d := make([]byte, 0, 64)
	d = append(d, `{"socket_id":`...)
	d = AppendString(d, socketID)
	d = append(d, `,"activity_timeout":`...)
	d = strconv.AppendInt(d, int64(activityTimeout), 10)
	d = append(d, '}')
	return Event(EventConnectionEstablished, "", string(d))
}

// Pong is the reply to pusher:ping.
var Pong = []byte(`{"event":"pusher:pong","data":"{}"}`)

// Ping is the server's pusher:ping, sent to peers that stay silent.
var Ping = []byte(`{"event":"pusher:ping","data":"{}"}`)

// MarshalData JSON-encodes v for use as a data string. v must be encodable.
func MarshalData(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("protocol: MarshalData: " + err.Error())
	}
	return string(b)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping like encoding/json without
// HTML escaping; invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
