package http

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/metrics"
)

// AppStreamer tells which Azure Functions apps stream HTTP (their worker
// serves HTTP itself, the HttpUri capability); *host.Host implements it.
type AppStreamer interface {
	AppStreams(app string) bool
	// MaxStreamBody bounds a streaming function's request body
	// (http.max_stream_body).
	MaxStreamBody() int64
}

// httpStream is what lets the adapter answer an app request itself. With
// streaming, the request body is handed over unread, bounded by
// http.max_stream_body (413 up front for a larger declared length), and the
// connection is made full duplex so that the worker may answer while the
// body still comes. For a streamed request and response, body_timeout and
// write_timeout bound each read of the body and each write of the response
// (a stall), not the whole transfer: the function's timeout bounds that.
// A relayed response's headers pass the filter of writeResult: under a
// CORS policy (cors) the worker's Access-Control-* are dropped and its
// Vary adds to the policy's. ok is false when the request was answered
// here.
func (h *Handler) httpStream(w http.ResponseWriter, r *http.Request, streaming, cors bool) (st *invoke.HTTPStream, ok bool) {
	st = &invoke.HTTPStream{RemoteAddr: r.RemoteAddr, Writer: &deadlineWriter{ResponseWriter: w, srv: h.srv}}
	if cors {
		st.CopyHeader = func(dst http.Header, k string, vs []string) { copyFunctionHeader(dst, k, vs, false, true) }
	}
	if !streaming {
		return st, true
	}
	limit := int64(0)
	if s, ok := h.apps.(AppStreamer); ok {
		limit = s.MaxStreamBody()
	}
	if r.ContentLength > limit {
		h.srv.rejected(metrics.RejectMaxBody)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", fmt.Sprintf("request body exceeds the limit of %d bytes for a streaming function (http.max_stream_body)", limit))
		return nil, false
	}
	if r.Body == nil || r.Body == http.NoBody {
		return st, true
	}
	_ = http.NewResponseController(w).EnableFullDuplex()
	st.Body = &deadlineReader{r: r.Body, w: w, srv: h.srv, left: limit}
	st.ContentLength = r.ContentLength
	return st, true
}

// deadlineReader reads a streamed request body: each read must complete
// within body_timeout, and reading past the limit fails with
// invoke.ErrStreamTooLarge.
type deadlineReader struct {
	r    io.Reader
	w    http.ResponseWriter
	srv  *Server
	left int64
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.left < 0 {
		return 0, invoke.ErrStreamTooLarge
	}
	if d.srv != nil {
		_ = http.NewResponseController(d.w).SetReadDeadline(time.Now().Add(d.srv.cfg.BodyTimeout.D()))
	}
	if int64(len(p)) > d.left+1 {
		p = p[:d.left+1] // one byte past the limit tells it too large
	}
	n, err := d.r.Read(p)
	d.left -= int64(n)
	if d.left < 0 {
		if d.srv != nil {
			d.srv.rejected(metrics.RejectMaxBody)
		}
		return n - 1, invoke.ErrStreamTooLarge
	}
	return n, err
}

// deadlineWriter gives every write of a relayed response (its header
// included) write_timeout to complete.
type deadlineWriter struct {
	http.ResponseWriter
	srv *Server
}

func (d *deadlineWriter) extend() {
	if d.srv != nil {
		_ = http.NewResponseController(d.ResponseWriter).SetWriteDeadline(time.Now().Add(d.srv.cfg.WriteTimeout.D()))
	}
}

func (d *deadlineWriter) WriteHeader(status int) { d.extend(); d.ResponseWriter.WriteHeader(status) }

func (d *deadlineWriter) Write(p []byte) (int, error) { d.extend(); return d.ResponseWriter.Write(p) }

func (d *deadlineWriter) FlushError() error {
	d.extend()
	return http.NewResponseController(d.ResponseWriter).Flush()
}

// Unwrap lets an http.ResponseController reach the connection's writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// rearm gives the request body body_timeout from now to arrive, and the
// response what ServeHTTP gave it: an app request is routed before its body
// is read, and routing may wait for an app still being indexed.
func (s *Server) rearm(w http.ResponseWriter, r *http.Request) {
	if s == nil {
		return
	}
	s.armDeadlines(w, r)
}
