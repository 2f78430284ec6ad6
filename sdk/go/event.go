package polyfn

import (
	"encoding/json"
	"fmt"
)

// emptyObject is what an empty payload decodes as.
var emptyObject = []byte("{}")

// Event is the payload of one invocation.
//
// It follows the Baetyl payload rules: the event is the JSON-decoded payload
// when the payload is JSON, else the raw bytes; an empty payload is the
// empty JSON object {}. Raw always returns the payload as it arrived.
//
// The zero Event is an empty payload.
type Event struct {
	raw    []byte
	isJSON bool
}

// NewEvent returns the event for payload, as the SDK builds it for an
// invocation. It is meant for testing handlers. The event keeps payload: do
// not modify it afterwards.
func NewEvent(payload []byte) Event {
	return Event{raw: payload, isJSON: len(payload) == 0 || json.Valid(payload)}
}

// Raw returns the payload as it arrived (empty for an empty payload). The
// caller must not modify it.
func (e Event) Raw() []byte { return e.raw }

// Empty reports whether the payload is empty.
func (e Event) Empty() bool { return len(e.raw) == 0 }

// IsJSON reports whether the event is JSON: the payload is a JSON value or
// empty (an empty payload is {}).
func (e Event) IsJSON() bool { return e.isJSON || len(e.raw) == 0 }

// String returns the payload as a string.
func (e Event) String() string { return string(e.raw) }

// Value returns the event as a plain Go value: the JSON-decoded payload
// (map[string]any, []any, string, float64, bool or nil, as encoding/json
// decodes into an any) when it is JSON, map[string]any{} when it is empty,
// and the raw []byte otherwise. It decodes the payload on every call.
func (e Event) Value() any {
	if !e.IsJSON() {
		return e.raw
	}
	var v any
	if err := json.Unmarshal(e.json(), &v); err != nil {
		return e.raw // not reached: the payload was checked
	}
	return v
}

// Decode decodes the JSON event into v, as [json.Unmarshal] does. An empty
// payload decodes as {}, which leaves a struct at its zero value and gives an
// empty map. A payload that is not JSON is an error.
func (e Event) Decode(v any) error {
	if !e.IsJSON() {
		return fmt.Errorf("polyfn: the event is not JSON (%d bytes of raw payload)", len(e.raw))
	}
	return json.Unmarshal(e.json(), v)
}

// MarshalJSON encodes the event as JSON: the payload itself when it is JSON,
// {} when it is empty, and a base64 string (as for []byte) otherwise.
// Returning the event from a handler sends the payload back unchanged.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.IsJSON() {
		return e.json(), nil
	}
	return json.Marshal(e.raw)
}

// json returns the JSON text of a JSON event.
func (e Event) json() []byte {
	if len(e.raw) == 0 {
		return emptyObject
	}
	return e.raw
}
