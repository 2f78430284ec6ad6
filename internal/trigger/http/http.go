// Package http is the HTTP trigger: every function is reachable at
// /function/{name} with any method; the request body is the payload and the
// result payload is the response body.
package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/metrics"
	"github.com/polyfn/polyfn/internal/peer"
	"github.com/polyfn/polyfn/internal/secret"
	"github.com/polyfn/polyfn/internal/tracing"
)

// InvocationIDHeader carries the invocation id on every /function response.
const InvocationIDHeader = "X-Polyfn-Invocation-Id"

// TriggerHeader, set to "invoke" by `polyfn invoke`, makes the function see
// trigger "invoke" instead of "http". Other values are ignored.
const TriggerHeader = "X-Polyfn-Trigger"

// Invoker runs invocations; *host.Host implements it.
type Invoker interface {
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
}

// AppRouter finds the Azure Functions app function serving a request under
// its app's route prefix; *host.Host implements it.
type AppRouter interface {
	HasApps() bool
	// RouteApp sets req's App, Function and route parameters from
	// req.HTTPRequest; the Invoker then runs it.
	RouteApp(ctx context.Context, req *invoke.Request) error
}

// WorkerGuarder tells connections from worker processes apart, so that the
// admin endpoints refuse them; *host.Host implements it.
type WorkerGuarder interface {
	WorkerGuard() peer.Guard
}

// MetricsSource has the metrics GET /metrics serves; *host.Host implements
// it.
type MetricsSource interface {
	Metrics() *metrics.Metrics
}

// AdminReporter gives the document GET /admin/functions serves;
// *host.Host implements it.
type AdminReporter interface {
	AdminDocument() any
}

// AppAuthLeveler gives the authLevel an Azure Functions app function
// declares; *host.Host implements it.
type AppAuthLeveler interface {
	AppAuthLevel(app, function string) string
}

// AppAllower gives the methods the app functions whose route matches a
// path accept, for the Allow header of a 405; *host.Host implements it.
type AppAllower interface {
	AppAllowed(path string) []string
}

// Readier tells whether a configuration is fully up; *host.Host
// implements it.
type Readier interface {
	Ready() bool
}

// Handler serves the HTTP trigger's routes for one configuration.
type Handler struct {
	inv     Invoker
	apps    AppRouter
	srv     *Server
	maxBody int64
	log     *slog.Logger
	mux     *http.ServeMux
	// auth checks keys (nil: none asked for); adminListener is set on the
	// admin listener's handler.
	auth          *auth
	adminListener bool
	health        *Health
	// cors holds the CORS policies (cors.go); nil: none.
	cors *corsPolicies
}

// HandlerOptions are a handler's settings beyond the invoker's.
type HandlerOptions struct {
	// Config, when set, gives the functions' auth levels and the keys;
	// without it no key is asked for.
	Config *config.Config
	// Admin makes the handler the admin listener's: /admin/*, /metrics
	// and the health endpoints, without a key; no function.
	Admin bool
	// Health says whether the server is draining; nil: never.
	Health *Health
	// Listener, when set, is the listener whose metrics /metrics serves
	// (the public one, on the admin listener) instead of srv's.
	Listener prometheus.Gatherer
}

// NewHandler returns the trigger's handler, asking for no key. maxBody
// bounds request bodies. srv is the server it runs behind, whose
// deadlines, body budget and metrics it uses; with nil (another server) it
// has none of them.
func NewHandler(inv Invoker, srv *Server, maxBody int64, log *slog.Logger) *Handler {
	return NewHandlerWith(inv, srv, maxBody, log, HandlerOptions{})
}

// NewHandlerWith is NewHandler with options.
func NewHandlerWith(inv Invoker, srv *Server, maxBody int64, log *slog.Logger, o HandlerOptions) *Handler {
	h := &Handler{inv: inv, srv: srv, maxBody: maxBody, log: log, mux: http.NewServeMux(), adminListener: o.Admin, health: o.Health}
	if o.Config != nil {
		h.auth = newAuth(o.Config)
		h.cors = newCORSPolicies(o.Config)
	}
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NotFound", "no route for "+r.URL.Path+"; functions are served at /function/{name}")
	}
	if o.Admin {
		notFound = func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "NotFound", "no route for "+r.URL.Path+" on the admin listener: it serves /admin/functions, /metrics and /healthz")
		}
	} else {
		h.mux.HandleFunc("/function/{name}", h.function)
		if apps, ok := inv.(AppRouter); ok && apps.HasApps() {
			// Azure Functions apps own every other path: their routes sit under a
			// prefix each app's host.json sets (/api/ by default, possibly none).
			h.apps = apps
			notFound = h.app
		}
	}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	h.mux.HandleFunc("GET /healthz/live", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	h.mux.HandleFunc("GET /healthz/ready", h.ready)
	h.mux.HandleFunc("/", notFound)
	guard := func(next http.Handler) http.Handler { return next }
	if g, ok := inv.(WorkerGuarder); ok {
		guard = func(next http.Handler) http.Handler { return h.refuseWorkers(g.WorkerGuard(), next) }
	}
	if m, ok := inv.(MetricsSource); ok {
		var listener []prometheus.Gatherer
		switch {
		case o.Listener != nil:
			listener = append(listener, o.Listener)
		case srv != nil:
			listener = append(listener, srv.Metrics())
		}
		h.mux.Handle("GET /metrics", guard(h.requireAdmin(m.Metrics().Handler(listener...), false)))
	}
	if a, ok := inv.(AdminReporter); ok {
		h.mux.Handle("GET /admin/functions", guard(h.requireAdmin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(a.AdminDocument())
		}), true)))
	}
	return h
}

// refuseWorkers answers 403 to requests that come from a worker process
// (or anything a worker started): the admin endpoints are for operators,
// not for the functions the host runs.
func (h *Handler) refuseWorkers(g peer.Guard, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if local != nil {
			fromWorker, err := g.FromWorker(r.RemoteAddr, local.String())
			if err != nil {
				h.log.Warn("admin endpoint: cannot tell whether the client is a worker", "remote", r.RemoteAddr, "error", err)
			}
			if fromWorker || err != nil {
				writeError(w, http.StatusForbidden, "Forbidden", "the admin endpoints are not available to function workers")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// serverSpan starts the HTTP server span of a request, continuing the
// caller's W3C trace context. With trace export off it starts none and only
// takes the caller's trace context, if it sent one, into r's context.
func serverSpan(r *http.Request, route string) (*http.Request, trace.Span) {
	if !tracing.Exporting() {
		if _, ok := r.Header["Traceparent"]; ok {
			r = r.WithContext(tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		return r, noop.Span{}
	}
	ctx := tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracing.Tracer().Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path), attribute.String("http.route", route)))
	return r.WithContext(ctx), span
}

func (h *Handler) function(w http.ResponseWriter, r *http.Request) {
	r, span := serverSpan(r, "/function/{name}")
	defer span.End()
	name := r.PathValue("name")
	cors := h.cors.of(name)
	if cors != nil && isPreflight(r) {
		cors.preflight(w, r, name)
		return
	}
	cors.actual(w, r)
	id := invoke.NewID()
	w.Header().Set(InvocationIDHeader, id)
	// The code parameter is a key only where one is asked for; an
	// anonymous function gets its own code parameter (an OAuth redirect's).
	level := h.auth.level(name)
	key := takeKey(r, level != config.LevelAnonymous, KeyHeader)
	if !h.auth.allows(level, key) {
		h.unauthorized(w, name, level, KeyHeader)
		return
	}
	body, held, ok := h.readBody(w, r)
	if !ok {
		return
	}
	defer h.srv.give(held)
	req := &invoke.Request{
		ID:        id,
		Function:  name,
		Trigger:   invoke.TriggerHTTP,
		Payload:   body,
		Timestamp: time.Now(),
		HTTP:      httpInfo(r),
	}
	if r.Header.Get(TriggerHeader) == string(invoke.TriggerInvoke) {
		req.Trigger = invoke.TriggerInvoke
	}
	res, err := h.inv.Invoke(r.Context(), req)
	h.srv.responding(w)
	if err != nil {
		h.writeInvokeError(w, r, err)
		return
	}
	writeResult(w, res, cors != nil)
}

// autoLength is the size from which a response body gets its
// Content-Length from writeResult: net/http sets it for smaller bodies,
// which it buffers whole, and would send larger ones chunked.
const autoLength = 2048

// writeResult answers an invocation that succeeded: the function's explicit
// HTTP response, else 200 with the result as the body. A body without a
// Content-Type is application/json when it is valid JSON, else
// application/octet-stream. Under a CORS policy (cors) the function's own
// Access-Control-* headers are dropped (the policy's stand) and its Vary
// adds to the policy's.
func writeResult(w http.ResponseWriter, res *invoke.Result, cors bool) {
	status := http.StatusOK
	if res.HTTP != nil {
		h := w.Header()
		// canon: the name is canonicalised (Headers); else kept as the
		// function wrote it (Header).
		copyHeader := func(k string, vs []string, canon bool) {
			if !strings.EqualFold(k, "Content-Length") {
				copyFunctionHeader(h, k, vs, canon, cors)
			}
		}
		for k, v := range res.HTTP.Headers {
			copyHeader(k, []string{v}, true)
		}
		for k, vs := range res.HTTP.Header {
			copyHeader(k, vs, false)
		}
		status = res.HTTP.Status
	}
	if status == http.StatusNoContent || status == http.StatusNotModified {
		w.WriteHeader(status) // no body
		return
	}
	if len(res.Payload) > 0 && w.Header().Get("Content-Type") == "" {
		ct := "application/octet-stream"
		if json.Valid(res.Payload) {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
	}
	if len(res.Payload) >= autoLength {
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(res.Payload))}
	}
	w.WriteHeader(status)
	_, _ = w.Write(res.Payload)
}

// copyFunctionHeader copies header k of a function's response (a result's
// or a streamed one's) into h. Under a CORS policy (cors) an
// Access-Control-* header is dropped (the policy's stand) and Vary adds to
// the policy's. canon: the name is canonicalised and the first value set;
// else kept as the function wrote it.
func copyFunctionHeader(h http.Header, k string, vs []string, canon, cors bool) {
	switch {
	case cors && isCORSHeader(k):
	case cors && strings.EqualFold(k, "Vary"):
		for _, v := range vs {
			h.Add("Vary", v)
		}
	case canon:
		h.Set(k, vs[0])
	default:
		h[k] = vs
	}
}

// app serves an HTTP function of an Azure Functions app: the request goes
// to the app's worker as it came, the stream adapter encoding it for the
// worker and decoding its response as the Azure Functions host would. A
// function whose worker serves HTTP itself streams: the adapter forwards
// the request and relays the response (appstream.go).
func (h *Handler) app(w http.ResponseWriter, r *http.Request) {
	r, span := serverSpan(r, "app")
	defer span.End()
	if h.cors != nil && isPreflight(r) {
		// The policy is that of the app serving the method asked for.
		if cors := h.appPolicy(r.Context(), r, r.Header.Get("Access-Control-Request-Method")); cors != nil {
			cors.preflight(w, r, r.URL.Path)
			return
		}
	}
	id := invoke.NewID()
	w.Header().Set(InvocationIDHeader, id)
	// An app function never sees a key: the headers and the code parameter
	// are taken whatever its authLevel (which is known once routed).
	key := takeKey(r, true, AzureKeyHeader, KeyHeader)
	req := &invoke.Request{
		ID:          id,
		Trigger:     invoke.TriggerHTTP,
		HTTPRequest: invoke.NewHTTPRequest(r, nil),
	}
	// Routing comes first: a function whose worker serves HTTP itself
	// streams, and its body is then not read here. Routing may wait for an
	// app still being indexed, so the body's deadline starts after it.
	err := h.apps.RouteApp(r.Context(), req)
	var cors *corsPolicy
	if h.cors != nil {
		cors = h.cors.host
		if err == nil {
			cors = h.cors.of(req.App)
		}
		cors.actual(w, r)
	}
	if err != nil {
		h.srv.responding(w)
		if al, ok := h.apps.(AppAllower); ok && invoke.KindOf(err) == invoke.KindMethodNotAllowed {
			if m := al.AppAllowed(req.HTTPRequest.Path); len(m) > 0 {
				w.Header().Set("Allow", strings.Join(m, ", "))
			}
		}
		// Routing runs before the key check: a broken app's reasons are
		// for a client with a key only (appbroken.go).
		h.writeInvokeError(w, r, h.withoutReasons(err, key))
		return
	}
	streaming := false
	if s, ok := h.apps.(AppStreamer); ok {
		streaming = s.AppStreams(req.App)
	}
	h.srv.rearm(w, r)
	if !streaming {
		body, held, ok := h.readBody(w, r)
		if !ok {
			return
		}
		defer h.srv.give(held)
		req.Payload = body
	}
	req.Timestamp = time.Now()
	if h.auth != nil {
		own := config.LevelAdmin
		if l, ok := h.apps.(AppAuthLeveler); ok {
			own = l.AppAuthLevel(req.App, req.Function)
		}
		if level := h.auth.appLevel(own); !h.auth.allows(level, key) {
			h.srv.responding(w)
			h.unauthorized(w, req.App+"/"+req.Function, level, AzureKeyHeader)
			return
		}
	}
	var ok bool
	if req.HTTPStream, ok = h.httpStream(w, r, streaming, cors != nil); !ok {
		return
	}
	res, err := h.inv.Invoke(r.Context(), req)
	if req.HTTPStream.Answered() {
		// The adapter relayed the worker's response itself.
		if req.HTTPStream.Aborted() {
			panic(http.ErrAbortHandler) // the client must not take a cut body for a whole one
		}
		return
	}
	h.srv.responding(w)
	if err != nil {
		if req.HTTPStream.Body != nil {
			// The body may be left unread (past max_stream_body, say): the
			// connection cannot carry another request.
			w.Header().Set("Connection", "close")
		}
		h.writeInvokeError(w, r, err)
		return
	}
	writeResult(w, res, cors != nil)
}

// firstChunk is the largest buffer a request body starts in. The buffer
// then doubles as bytes arrive, up to the declared length (or max_body),
// so the memory a request costs follows what its client sent, never what
// it declared.
const firstChunk = 16 << 10

// readBody reads the request body within http.max_body, its buffer held
// against http.max_body_total; held is what to give back to the budget
// once the request is done. When it cannot read the body it answers the
// request itself (413, 503, 408 or 400) and returns ok false.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, held int64, ok bool) {
	if r.ContentLength > h.maxBody {
		h.tooLarge(w)
		return nil, 0, false
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, 0, true // no body (Content-Length: 0, or none on a request that has none)
	}
	// limit is the most the buffer may grow to: the declared length, or
	// for a chunked body one byte past max_body, which tells it too large.
	limit := r.ContentLength
	if limit < 0 {
		limit = h.maxBody + 1
	}
	held = min(limit, firstChunk)
	if !h.srv.take(held) {
		h.busy(w)
		return nil, 0, false
	}
	buf := make([]byte, 0, held)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == limit {
				if r.ContentLength < 0 {
					h.srv.give(held)
					h.tooLarge(w)
					return nil, 0, false
				}
				// Every declared byte is in; one more read sees the end, so
				// that the server starts watching the connection.
				var probe [1]byte
				if _, err := r.Body.Read(probe[:]); err != nil && err != io.EOF {
					h.srv.give(held)
					h.bodyError(w, err)
					return nil, 0, false
				}
				break
			}
			grow := min(2*int64(cap(buf)), limit) - int64(cap(buf))
			if !h.srv.take(grow) {
				h.srv.give(held)
				h.busy(w)
				return nil, 0, false
			}
			held += grow
			next := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(next, buf)
			buf = next
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			h.srv.give(held)
			h.bodyError(w, err)
			return nil, 0, false
		}
	}
	return buf, held, true
}

// tooLarge answers a body larger than http.max_body.
func (h *Handler) tooLarge(w http.ResponseWriter) {
	h.srv.rejected(metrics.RejectMaxBody)
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", fmt.Sprintf("request body exceeds the limit of %d bytes (http.max_body)", h.maxBody))
}

// busy answers a request whose body would take the buffered bytes past
// http.max_body_total.
func (h *Handler) busy(w http.ResponseWriter) {
	h.srv.rejected(metrics.RejectMaxBodyTotal)
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "HostBusy", fmt.Sprintf("the host holds its maximum of %d request-body bytes (http.max_body_total); try again later", h.srv.cfg.MaxBodyTotal))
}

// bodyError answers a body that could not be read: 408 when it did not
// arrive within http.body_timeout, else 400. The connection is closed.
func (h *Handler) bodyError(w http.ResponseWriter, err error) {
	w.Header().Set("Connection", "close")
	if errors.Is(err, os.ErrDeadlineExceeded) && h.srv != nil {
		h.srv.rejected(metrics.RejectBodyTimeout)
		writeError(w, http.StatusRequestTimeout, "RequestTimeout", fmt.Sprintf("the request body did not arrive within %s (http.body_timeout)", h.srv.cfg.BodyTimeout))
		return
	}
	writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("read request body: %v", err))
}

func httpInfo(r *http.Request) *invoke.HTTPInfo {
	info := &invoke.HTTPInfo{
		Method:  r.Method,
		Path:    r.URL.Path,
		Headers: make(map[string]string, len(r.Header)),
	}
	if r.URL.RawQuery == "" {
		info.Query = map[string]string{}
	} else {
		q := r.URL.Query()
		info.Query = make(map[string]string, len(q))
		for k, v := range q {
			info.Query[k] = strings.Join(v, ",")
		}
	}
	for k, v := range r.Header {
		info.Headers[lowerHeader(k)] = strings.Join(v, ", ")
	}
	return info
}

// lowerHeaders holds the lower-case names of common request headers, so
// that naming them costs no allocation.
var lowerHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control", "Connection",
		"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Forwarded", "If-Match", "If-Modified-Since", "If-None-Match",
		"Origin", "Pragma", "Referer", "Traceparent", "Tracestate", "Baggage", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id", "X-Polyfn-Trigger"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerHeader(k string) string {
	if l, ok := lowerHeaders[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// Status maps an invocation error kind to its HTTP status
// (invoke.HTTPStatus).
func Status(k invoke.Kind) int { return invoke.HTTPStatus(k) }

// writeInvokeError answers an invocation that failed. An error that is not
// an *invoke.Error has no known origin: it is the host's, answered 500
// InternalError and logged as a bug, never passed off as the function's.
func (h *Handler) writeInvokeError(w http.ResponseWriter, r *http.Request, err error) {
	var ie *invoke.Error
	if !errors.As(err, &ie) {
		id := w.Header().Get(InvocationIDHeader)
		h.log.Error("internal error: a host bug", "method", r.Method, "path", r.URL.Path, "invocation", id, "error", err)
		ie = invoke.Errorf(invoke.KindInternal, "the host failed to run the invocation; its log has the cause under invocation %s", id)
	}
	status := Status(ie.Kind)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	// The message may quote a worker's stderr or log, which may print its
	// environment: every secret of the configuration is masked, whichever
	// path the error took.
	writeError(w, status, ie.Type, secret.Process.Redact(ie.Message))
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	var b ErrorBody
	b.Error.Type, b.Error.Message = typ, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}
