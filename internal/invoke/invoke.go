// Package invoke defines what flows through the host for one invocation: the
// request, the result, and the error classes every trigger maps to its own
// protocol (HTTP status, MQTT behaviour, CLI exit code).
package invoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Trigger names what turned an outside event into an invocation.
type Trigger string

// Triggers.
const (
	TriggerHTTP   Trigger = "http"
	TriggerInvoke Trigger = "invoke"
	TriggerMQTT   Trigger = "mqtt"
	TriggerTimer  Trigger = "timer"
)

// Request is one invocation's input.
type Request struct {
	// ID is the invocation id, unique per invocation.
	ID string
	// Function names the function to run.
	Function string
	Trigger  Trigger
	Payload  []byte
	// MessageID, QOS and Topic describe a triggering message (MQTT); zero otherwise.
	MessageID uint64
	QOS       uint32
	Topic     string
	// Timestamp is when the event happened: the message's arrival (MQTT),
	// the scheduled time of the tick (timer).
	Timestamp time.Time
	// HTTP describes the triggering HTTP request to a polyfn function (the
	// document its handler sees), nil for other triggers.
	HTTP *HTTPInfo
	// App names the Azure Functions app whose function Function is, set by
	// routing (Host.RouteApp); empty for polyfn functions.
	App string
	// HTTPRequest is the whole HTTP request an app function serves, which
	// the protocol adapter encodes in its own wire form (the stream
	// adapter: the worker's RpcHttp); the body is Payload. Nil otherwise.
	HTTPRequest *HTTPRequest
	// HTTPStream, set by the HTTP trigger for app functions, lets an adapter
	// whose worker serves HTTP itself pass the request and response bodies
	// through as they flow (httpstream.go). Nil otherwise.
	HTTPStream *HTTPStream
	// Instance is set by the pool to the instance that runs the invocation.
	Instance string
}

// HTTPRequest is an HTTP request as received, for functions that take the
// whole request (Azure Functions apps). It holds no body: that is the
// invocation's payload.
type HTTPRequest struct {
	Method string
	// TLS reports whether the request came over TLS.
	TLS bool
	// Host is the host the request was sent to: its Host header, else the
	// address it arrived on.
	Host string
	// Path is the request's path as received (escaped); RawQuery its query
	// without the '?'.
	Path     string
	RawQuery string
	// Header is the request's header as received.
	Header http.Header
	// Params are the parameters of the app route that matched the request.
	Params map[string]string
}

// NewHTTPRequest returns what an invocation needs of r: everything but the
// body. r's header is shared, not copied: the invocation must end before
// r's handler returns.
func NewHTTPRequest(r *http.Request, params map[string]string) *HTTPRequest {
	return &HTTPRequest{Method: r.Method, TLS: r.TLS != nil, Host: requestHost(r), Path: r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery, Header: r.Header, Params: params}
}

func requestHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL.Host != "" {
		return r.URL.Host
	}
	// An HTTP/1.0 request without Host: the address it arrived on.
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return addr.String()
	}
	return "localhost"
}

// HTTPInfo is what a function sees of the HTTP request that triggered it.
type HTTPInfo struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   map[string]string `json:"query"`
	Headers map[string]string `json:"headers"`
}

// Result is one invocation's output.
type Result struct {
	Payload []byte
	// HTTP is set when the function returned an explicit HTTP response;
	// Payload is then its body.
	HTTP *HTTPResponse
}

// HTTPResponse is the status and headers of an explicit HTTP response a
// function returned (docs/protocols.md, "HTTP response objects").
type HTTPResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	// Header holds headers with several values each (Set-Cookie), as an
	// Azure Functions app's response may have; the protocol adapter fills
	// it, never the function's JSON.
	Header http.Header `json:"-"`
}

// Validate checks what a worker sent.
func (r *HTTPResponse) Validate() error {
	if r.Status == 0 {
		r.Status = 200
	}
	if r.Status < 100 || r.Status > 599 {
		return fmt.Errorf("invalid HTTP status %d in the function's response", r.Status)
	}
	return nil
}

// Kind classifies an invocation error.
type Kind int

// Error kinds. Each trigger maps them once, at its boundary.
const (
	// KindFunction: the function raised or returned an error.
	KindFunction Kind = iota + 1
	// KindNotFound: no function of that name.
	KindNotFound
	// KindTooLarge: the payload exceeds the configured limit.
	KindTooLarge
	// KindOverloaded: every slot is busy and the queue is full.
	KindOverloaded
	// KindWorkerCrashed: the worker died or dropped the connection while it held the invocation.
	KindWorkerCrashed
	// KindWorkerStart: no worker could be started for the invocation.
	KindWorkerStart
	// KindTimeout: the invocation ran past the function's timeout.
	KindTimeout
	// KindUnavailable: the host is shutting down.
	KindUnavailable
	// KindBadRequest: the request cannot be turned into an invocation.
	KindBadRequest
	// KindMethodNotAllowed: the function does not accept the request's method.
	KindMethodNotAllowed
	// KindInternal: the host failed (a bug, or an error of unknown origin);
	// never the function's fault.
	KindInternal
	// KindInvalidResponse: the worker answered with a result the trigger
	// cannot deliver (an Azure Functions app's HTTP result that is not a
	// valid HTTP response).
	KindInvalidResponse
)

// Error is an invocation that did not produce a result.
type Error struct {
	Kind Kind
	// Type is a short machine-readable name: the exception class for
	// function errors (ValueError), else one of the names in kindTypes.
	Type    string
	Message string
	// Err is the underlying cause, if any.
	Err error
	// Stack is the function's stack trace as its worker reported it (a
	// function error), for the log; never sent to the caller.
	Stack string
	// Undelivered marks a WorkerCrashed error of an invocation that never
	// reached the worker (it was already gone): it is safe to retry.
	Undelivered bool
}

var kindTypes = map[Kind]string{
	KindFunction:         "FunctionError",
	KindNotFound:         "FunctionNotFound",
	KindTooLarge:         "PayloadTooLarge",
	KindOverloaded:       "Overloaded",
	KindWorkerCrashed:    "WorkerCrashed",
	KindWorkerStart:      "WorkerStartFailed",
	KindTimeout:          "Timeout",
	KindUnavailable:      "Unavailable",
	KindBadRequest:       "BadRequest",
	KindMethodNotAllowed: "MethodNotAllowed",
	KindInternal:         "InternalError",
	KindInvalidResponse:  "InvalidResponse",
}

// TypeOutOfMemory is the type of a KindWorkerCrashed error whose worker the
// kernel killed for exceeding its memory limit (limits.memory).
const TypeOutOfMemory = "OutOfMemory"

// Errorf returns an *Error of kind k with the kind's type name.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Type: kindTypes[k], Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of kind k whose message is err's.
func Wrap(k Kind, err error) *Error {
	return &Error{Kind: k, Type: kindTypes[k], Message: err.Error(), Err: err}
}

func (e *Error) Error() string {
	if e.Type == "" {
		return e.Message
	}
	return e.Type + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Outcome names how an invocation ended, for metrics: "success", or the
// kind's type name (FunctionError for any function error; OutOfMemory for a
// worker killed at its memory limit).
func Outcome(err error) string {
	if err == nil {
		return "success"
	}
	var e *Error
	if errors.As(err, &e) && e.Kind == KindWorkerCrashed && e.Type == TypeOutOfMemory {
		return TypeOutOfMemory
	}
	return kindTypes[KindOf(err)]
}

// KindOf returns err's kind. An error that is not an *Error is of unknown
// origin and so the host's: KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// TimeoutCause is the cause (context.Cause) of an invocation's context when
// the function's timeout ended it: it names the timeout and the config key
// that sets it, so that a Timeout error can say which bound expired.
type TimeoutCause struct {
	// Function is the function (or app) whose timeout it is.
	Function string
	// Timeout is the timeout's value.
	Timeout time.Duration
	// Key is the config key that sets it, such as functions[2].timeout.
	Key string
}

func (c *TimeoutCause) Error() string {
	return fmt.Sprintf("the timeout of function %s, %s (%s, queueing included), expired", c.Function, c.Timeout, c.Key)
}

type timeoutKey struct{}

// WithTimeout returns ctx bounded by cause's timeout; when it expires,
// context.Cause of the returned context is cause.
func WithTimeout(ctx context.Context, cause *TimeoutCause) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(context.WithValue(ctx, timeoutKey{}, cause), cause.Timeout, cause)
}

// TimeoutError returns the Timeout error of an invocation whose context ctx
// expired while it was doing what ("function f did not finish"): the
// message names the expired timeout and its config key when ctx carries a
// TimeoutCause (also when the worker saw the deadline pass a moment before
// ctx did).
func TimeoutError(ctx context.Context, what string) *Error {
	var c *TimeoutCause
	if !errors.As(context.Cause(ctx), &c) {
		c, _ = ctx.Value(timeoutKey{}).(*TimeoutCause)
	}
	if c != nil {
		return Errorf(KindTimeout, "%s: %v", what, c)
	}
	return Errorf(KindTimeout, "%s: its deadline expired", what)
}

// NewID returns a random invocation id in the UUID v4 form.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
