package invoke

import (
	"errors"
	"io"
	"net/http"
)

// HTTPStream is what an adapter needs to answer an app function's HTTP
// request itself, streaming both bodies, when the function's worker serves
// HTTP (the Azure Functions HttpUri capability). The trigger sets it on
// every app request; an adapter that does not stream ignores it and the
// trigger answers from the Result as usual.
type HTTPStream struct {
	// Body is the request body, not yet read, when the trigger knew the
	// function streams (its body is then not in Payload); nil when the body
	// was read into Payload. Reading past the stream limit fails with
	// ErrStreamTooLarge.
	Body io.Reader
	// ContentLength is the request body's declared length, -1 when
	// unknown; it is meaningful when Body is set.
	ContentLength int64
	// RemoteAddr is the client's address, for X-Forwarded-For.
	RemoteAddr string
	// Writer is the client's response. An adapter that writes to it calls
	// Started first.
	Writer http.ResponseWriter
	// CopyHeader, when set, copies one header of the worker's response
	// into Writer's headers as the trigger copies a function's own (under
	// a CORS policy it drops Access-Control-* and adds to Vary); nil
	// copies it as it is.
	CopyHeader func(dst http.Header, name string, values []string)
	// Defaults are headers the response gets when the worker's does not
	// set them (host.json extensions.http.customHeaders); they pass
	// through CopyHeader like the worker's own.
	Defaults http.Header
	started  bool
	aborted  bool
}

// ErrStreamTooLarge is the error of reading a streamed request body past
// http.max_stream_body.
var ErrStreamTooLarge = errors.New("request body exceeds http.max_stream_body")

// Started records that the adapter answers the request itself: from then on
// the trigger writes nothing to the response, whatever the invocation's
// outcome.
func (s *HTTPStream) Started() { s.started = true }

// Answered reports whether the adapter answered the request itself.
func (s *HTTPStream) Answered() bool { return s != nil && s.started }

// Abort records that the response the adapter started was cut off (the
// worker's body broke off, the client went away, the invocation timed
// out): the trigger must abort the connection so that the client does not
// take the truncated body for a whole one.
func (s *HTTPStream) Abort() { s.aborted = true }

// Aborted reports whether the response was cut off.
func (s *HTTPStream) Aborted() bool { return s != nil && s.aborted }
