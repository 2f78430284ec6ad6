package polyfn

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Triggers, the values of [Context.Trigger].
const (
	TriggerHTTP   = "http"
	TriggerMQTT   = "mqtt"
	TriggerTimer  = "timer"
	TriggerInvoke = "invoke"
)

// Context describes one invocation. Its JSON form uses the keys of the
// Baetyl context (messageQOS, functionInvokeID, ...).
type Context struct {
	// FunctionName names the function invoked. A worker serves one function,
	// or in stream mode every function of a shared app, all with the same
	// handler.
	FunctionName string `json:"functionName"`
	// InvocationID is unique per invocation (Baetyl's functionInvokeID).
	InvocationID string `json:"functionInvokeID"`
	// Trigger is what caused the invocation: "http", "mqtt", "timer", or
	// "invoke" when the host says nothing else.
	Trigger string `json:"trigger"`
	// MessageQOS, MessageTopic and MessageID describe a triggering MQTT
	// message; zero otherwise.
	MessageQOS   uint32 `json:"messageQOS"`
	MessageTopic string `json:"messageTopic"`
	MessageID    uint64 `json:"messageID"`
	// MessageTimestamp is when the event happened, in Unix seconds.
	MessageTimestamp int64 `json:"messageTimestamp"`
	// Deadline is when the invocation times out; zero when it has none. The
	// handler's ctx has the same deadline.
	Deadline time.Time `json:"deadline,omitzero"`
	// ScheduledTime is the tick a timer invocation runs for, to the
	// nanosecond; zero for other triggers. MessageTimestamp holds the same
	// time in whole seconds.
	ScheduledTime time.Time `json:"scheduledTime,omitzero"`
	// HTTP describes the triggering HTTP request; nil for other triggers.
	HTTP *HTTPRequest `json:"http,omitempty"`
}

// HTTPRequest is what a function sees of the HTTP request that triggered it.
// The body is the event.
type HTTPRequest struct {
	Method string `json:"method"`
	// Path is the request path.
	Path string `json:"path"`
	// Query holds the query parameters (the first value of each).
	Query map[string]string `json:"query"`
	// Headers holds the request headers, names in lower case.
	Headers map[string]string `json:"headers"`
}

// invocationKey is the context key of an *invocation.
type invocationKey struct{}

// invocation is what the SDK attaches to a handler's ctx.
type invocation struct {
	info *Context
	sink logSink
	// http, in stream mode, is the JSON of the triggering HTTP request as
	// the host sent it. The first FromContext decodes it into info.HTTP:
	// most handlers never look, and decoding it costs more than the rest
	// of an invocation's context.
	http     string
	httpOnce sync.Once
}

// FromContext returns the invocation context of a handler's ctx, or nil
// when ctx does not belong to an invocation.
func FromContext(ctx context.Context) *Context {
	if inv := invocationFrom(ctx); inv != nil {
		if inv.http != "" {
			inv.httpOnce.Do(inv.decodeHTTP)
		}
		return inv.info
	}
	return nil
}

func (inv *invocation) decodeHTTP() {
	var h HTTPRequest
	if json.Unmarshal([]byte(inv.http), &h) == nil {
		inv.info.HTTP = &h
	}
}

// NewContext returns a copy of parent that carries c, as a handler's ctx
// does: [FromContext] returns c and [Logger] tags records with its function
// and invocation id (writing them to stderr). It is meant for testing
// handlers; it does not set a deadline.
func NewContext(parent context.Context, c *Context) context.Context {
	return withInvocation(parent, c, defaultSink())
}

func withInvocation(parent context.Context, c *Context, sink logSink) context.Context {
	return context.WithValue(parent, invocationKey{}, &invocation{info: c, sink: sink})
}

// withStreamInvocation is withInvocation with the HTTP request still in
// its JSON form (see invocation.http).
func withStreamInvocation(parent context.Context, c *Context, httpJSON string, sink logSink) context.Context {
	return context.WithValue(parent, invocationKey{}, &invocation{info: c, sink: sink, http: httpJSON})
}

func invocationFrom(ctx context.Context) *invocation {
	if ctx == nil {
		return nil
	}
	inv, _ := ctx.Value(invocationKey{}).(*invocation)
	return inv
}
