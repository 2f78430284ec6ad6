package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/peer"
)

// This file is HTTP streaming of Azure Functions apps, as the official host
// does it (its DefaultHttpProxyService): a worker that serves HTTP itself
// (Node.js v4 app.setup({enableHttpStream: true}), Python's http-v2
// extensions) advertises the URI of its HTTP server in the HttpUri
// capability. For each invocation of an HTTP function the host then sends an
// InvocationRequest whose HTTP input is empty (the route parameters only,
// when the worker advertises RequiresRouteParameters) with the usual trigger
// metadata, and forwards the client's request to that URI with the
// invocation id in the x-ms-invocation-id header. The worker answers the
// forwarded request itself, streaming; its InvocationResponse (which the
// Node.js library sends once the response body is written) completes the
// invocation.
//
// The worker is untrusted: polyfn only connects to a loopback address
// (the URI must name localhost or a loopback IP, and every address dialed
// is checked), follows no redirect and uses no proxy from the environment.

// Capabilities of HTTP streaming.
const (
	CapHTTPURI                 = "HttpUri"
	CapRequiresRouteParameters = "RequiresRouteParameters"
)

// InvocationIDHeader is the header that carries the invocation id on the
// request forwarded to a streaming worker (the official host's
// HttpProxyCorrelationHeader); the worker pairs the request with its
// InvocationRequest by it.
const InvocationIDHeader = "X-Ms-Invocation-Id"

// Named bounds of the connection to a streaming worker's HTTP server.
const (
	// proxyDialTimeout bounds connecting to the worker's HTTP server (a
	// loopback address: a worker that accepts nothing fails fast).
	proxyDialTimeout = 5 * time.Second
	// proxyIdleConns bounds the idle keep-alive connections kept to one
	// worker's HTTP server; proxyIdleTimeout closes those idle for longer.
	proxyIdleConns   = 32
	proxyIdleTimeout = 90 * time.Second
	// proxyMaxHeaderBytes bounds the response header the worker sends.
	proxyMaxHeaderBytes = 1 << 20
	// forwardLostWait is how long an invocation whose forwarded request
	// failed waits for the worker's stream to tell more (a worker that died
	// takes its HTTP server with it) before it is given up.
	forwardLostWait = 250 * time.Millisecond
	// proxyCopyBuffer is the buffer through which each response body is
	// relayed (and flushed to the client after every read).
	proxyCopyBuffer = 32 << 10
)

// httpProxy forwards requests to one worker's HTTP server.
type httpProxy struct {
	base      *url.URL
	transport *http.Transport
}

// newHTTPProxy checks the URI a worker advertised in HttpUri and returns
// the proxy to it. Only http URIs naming localhost or a loopback IP address
// are accepted. worker is the worker's process id: each connection must be
// accepted by a process of its tree (peer.TCPServer), so that a worker
// cannot point the host at another loopback server (the admin listener,
// another function's worker); 0 skips the check (tests of the URI rules).
func newHTTPProxy(uri string, worker int) (*httpProxy, error) {
	u, err := parseHTTPURI(uri)
	if err != nil {
		return nil, fmt.Errorf("the worker's %s capability %q is refused: %w", CapHTTPURI, uri, err)
	}
	dialer := &net.Dialer{Timeout: proxyDialTimeout, Control: loopbackOnly}
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, address)
		if err != nil || worker == 0 {
			return c, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("the worker's HTTP server at %s: not a TCP connection", address)
		}
		check, cancel := context.WithTimeout(ctx, proxyDialTimeout)
		defer cancel()
		if _, err := peer.TCPServer(check, worker, tc.LocalAddr().(*net.TCPAddr).AddrPort(), tc.RemoteAddr().(*net.TCPAddr).AddrPort()); err != nil {
			c.Close()
			return nil, fmt.Errorf("the worker's HTTP server at %s: %w", address, err)
		}
		return c, nil
	}
	return &httpProxy{base: u, transport: &http.Transport{
		Proxy:                  nil, // never HTTP_PROXY: the worker is on this host
		DialContext:            dial,
		DisableCompression:     true, // bodies pass through as the worker sent them
		MaxIdleConnsPerHost:    proxyIdleConns,
		IdleConnTimeout:        proxyIdleTimeout,
		MaxResponseHeaderBytes: proxyMaxHeaderBytes,
	}}, nil
}

// parseHTTPURI parses an HttpUri: http, a host that is localhost or a
// loopback IP, an explicit port, no user information.
func parseHTTPURI(uri string) (*url.URL, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("not a URI: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("scheme %q: polyfn forwards streaming requests over plain http to the worker's own loopback address", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("a URI with user information is not accepted")
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("host %q is not a loopback address: polyfn forwards streaming requests only to localhost, 127.0.0.0/8 or ::1", host)
	}
	if u.Port() == "" {
		return nil, errors.New("the URI has no port")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("a URI with a query or fragment is not accepted")
	}
	return u, nil
}

// loopbackOnly refuses to connect to any address that is not a loopback
// one, whatever a name resolved to.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to %s: a streaming worker's HTTP server must be on a loopback address", address)
	}
	return nil
}

func (p *httpProxy) close() { p.transport.CloseIdleConnections() }

// hopHeaders are the hop-by-hop headers, not forwarded either way.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"}

// removeHopHeaders deletes the hop-by-hop headers of h and those its
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// forwardRequest is the request forwarded to the worker for req: its
// method, path and query, its header without hop-by-hop headers, the
// invocation id, and X-Forwarded-Host/-Proto/-For as the official host's
// forwarder sets them (the Node.js library builds the request URL from
// them). body reads the request body.
func (p *httpProxy) forwardRequest(ctx context.Context, req *invoke.Request, requestURL string, body io.Reader, length int64) (*http.Request, error) {
	hr := req.HTTPRequest
	target := *p.base
	target.Path = strings.TrimSuffix(p.base.Path, "/") + "/" + strings.TrimPrefix(hr.Path, "/")
	target.RawPath = strings.TrimSuffix(p.base.EscapedPath(), "/") + "/" + strings.TrimPrefix(hr.Path, "/")
	target.RawQuery = hr.RawQuery
	out, err := http.NewRequestWithContext(ctx, hr.Method, target.String(), body)
	if err != nil {
		return nil, fmt.Errorf("forwarded request: %w", err)
	}
	out.Header = hr.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	removeHopHeaders(out.Header)
	out.Header.Del("Host")
	out.Header.Set(InvocationIDHeader, req.ID)
	proto, host := "http", hr.Host
	if u, err := url.Parse(requestURL); err == nil {
		proto, host = u.Scheme, u.Host
	}
	out.Header.Set("X-Forwarded-Host", host)
	out.Header.Set("X-Forwarded-Proto", proto)
	out.Header.Del("X-Forwarded-For")
	if st := req.HTTPStream; st != nil {
		if ip, _, err := net.SplitHostPort(st.RemoteAddr); err == nil {
			out.Header.Set("X-Forwarded-For", ip)
		}
	}
	out.ContentLength = length
	if length == 0 {
		out.Body = http.NoBody
	}
	return out, nil
}

// proxyInput fills ir for an invocation of app function fn whose request is
// forwarded to the worker: the HTTP input is empty (route parameters only,
// for a worker that requires them), the trigger metadata is what the
// official host sends (headers, query and route parameters; no body
// properties, since the body is not read). It returns the request URL the
// worker would see in RpcHttp.
func proxyInput(ir *rpc.InvocationRequest, fn *azure.Function, req *invoke.Request, caps azure.Capabilities) string {
	full := azure.EncodeHTTP(req.HTTPRequest, nil, caps)
	bare := &rpc.RpcHttp{}
	if caps.Has(CapRequiresRouteParameters) {
		bare.Params, bare.NullableParams = full.Params, full.NullableParams
	}
	in, md := azure.InvocationInput(fn, full, caps)
	minData := &rpc.TypedData{Data: &rpc.TypedData_Http{Http: bare}}
	for _, b := range in {
		b.RpcData = &rpc.ParameterBinding_Data{Data: minData}
		if td, ok := md[b.Name]; ok && td.GetHttp() != nil {
			md[b.Name] = minData
		}
	}
	ir.FunctionId = fn.ID
	ir.InputData, ir.TriggerMetadata = in, md
	return full.GetUrl()
}

// stickyReader remembers the first error its reader returned and how much
// it read. The transport reads it on a goroutine of its own, which may
// outlive RoundTrip.
type stickyReader struct {
	r    io.Reader
	mu   sync.Mutex
	err  error
	read int64
}

func (s *stickyReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.mu.Lock()
	s.read += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	return n, err
}

// state returns the bytes read so far and the first error.
func (s *stickyReader) state() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read, s.err
}

type forwarded struct {
	resp *http.Response
	err  error
}

type answered struct {
	m   *rpc.StreamingMessage
	err error
}

// invokeProxied runs an invocation of app function fn on a streaming
// worker: the InvocationRequest and the forwarded request go out together;
// the worker's response is relayed to the client as it comes (status and
// header first, then the body, flushed after every read); the
// InvocationResponse completes the invocation. The function's timeout (ctx)
// bounds the whole exchange, the relay of the response body included.
// When the client goes away (ctx is cancelled) or the invocation fails
// before the response began, the forwarded request is cancelled, which the
// worker sees as its request closing, and the worker is sent
// InvocationCancel if it handles it.
func (i *Instance) invokeProxied(ctx context.Context, req *invoke.Request, fn *azure.Function, m *rpc.StreamingMessage, ir *rpc.InvocationRequest) (*invoke.Result, error) {
	var sticky *stickyReader
	res, err := i.forward(ctx, req, fn, m, ir, &sticky)
	var ie *invoke.Error
	if errors.As(err, &ie) && ie.Undelivered {
		// The pool retries an invocation the worker never received on
		// another instance; not one whose body was read in part or whose
		// response began.
		if read, _ := sticky.state(); read > 0 || req.HTTPStream.Answered() {
			ie.Undelivered = false
		}
	}
	return res, err
}

func (i *Instance) forward(ctx context.Context, req *invoke.Request, fn *azure.Function, m *rpc.StreamingMessage, ir *rpc.InvocationRequest, stickyOut **stickyReader) (*invoke.Result, error) {
	*stickyOut = &stickyReader{}
	st := req.HTTPStream
	if st == nil || st.Writer == nil {
		return nil, invoke.Errorf(invoke.KindBadRequest, "function %s of app %s streams its HTTP response (HttpUri); only the HTTP trigger can invoke it", fn.Name, req.App)
	}
	requestURL := proxyInput(ir, fn, req, azure.Capabilities(i.caps))
	var body io.Reader = bytes.NewReader(req.Payload)
	length := int64(len(req.Payload))
	if st.Body != nil {
		body, length = st.Body, st.ContentLength
	}
	sticky := *stickyOut
	sticky.r = body
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out, err := i.proxy.forwardRequest(ctx, req, requestURL, sticky, length)
	if err != nil {
		return nil, invoke.Errorf(invoke.KindBadRequest, "%v", err)
	}
	if length == 0 {
		out.Body = http.NoBody
	}
	fwd := make(chan forwarded, 1)
	go func() {
		resp, err := i.proxy.transport.RoundTrip(out)
		fwd <- forwarded{resp, err}
	}()
	inv := make(chan answered, 1)
	go func() {
		resp, err := i.request(ctx, req.ID, req.Function, m)
		inv <- answered{resp, err}
	}()

	// Until the worker's response header: either may come first.
	var (
		resp    *http.Response
		got     answered
		gotResp bool
	)
	for resp == nil {
		select {
		case f := <-fwd:
			if f.err != nil {
				if !gotResp {
					got = i.giveUp(ctx, cancel, f.err, inv)
				}
				return nil, i.forwardError(ctx, fn, sticky, f.err, got)
			}
			resp = f.resp
		case got = <-inv:
			inv, gotResp = nil, true
			if err := invocationOutcome(got); err != nil {
				// The function failed before it answered: give up the
				// forwarded request (the worker sees it closed).
				cancel(err)
				if f := <-fwd; f.resp != nil {
					f.resp.Body.Close()
				}
				return nil, err
			}
			// Answered without a response yet: wait for it, within ctx.
		}
	}

	// Relay the response.
	st.Started()
	w := st.Writer
	h := w.Header()
	removeHopHeaders(resp.Header)
	for k, vs := range st.Defaults {
		if _, set := resp.Header[k]; !set && len(vs) > 0 {
			resp.Header[k] = vs
		}
	}
	for k, vs := range resp.Header {
		if st.CopyHeader != nil {
			st.CopyHeader(h, k, vs)
		} else {
			h[k] = vs
		}
	}
	if resp.ContentLength >= 0 && h.Get("Content-Length") == "" && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		h.Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	n, werr, rerr := relay(w, rc, resp.Body)
	resp.Body.Close()
	switch {
	case werr != nil:
		// The client went away: end the invocation.
		st.Abort()
		cancel(fmt.Errorf("the client went away: %w", werr))
	case rerr != nil:
		st.Abort()
		cancel(fmt.Errorf("the worker's response body broke off: %w", rerr))
	}
	if !gotResp {
		got = <-inv
	}
	if err := invocationOutcome(got); err != nil {
		return nil, err
	}
	switch {
	case werr != nil:
		return nil, invoke.Errorf(invoke.KindUnavailable, "the client went away after %d bytes of the response: %v", n, werr)
	case rerr != nil:
		return nil, invoke.Errorf(invoke.KindWorkerCrashed, "the response body from instance %s broke off after %d bytes: %v", i.ID(), n, rerr)
	}
	return &invoke.Result{HTTP: &invoke.HTTPResponse{Status: resp.StatusCode}}, nil
}

// relay copies the worker's response body to the client, flushing after
// every read so that a streamed response reaches the client as it comes.
// werr is the client's error, rerr the worker's.
func relay(w io.Writer, rc *http.ResponseController, body io.Reader) (n int64, werr, rerr error) {
	buf := make([]byte, proxyCopyBuffer)
	for {
		nr, er := body.Read(buf)
		if nr > 0 {
			nw, ew := w.Write(buf[:nr])
			n += int64(nw)
			if ew != nil {
				return n, ew, nil
			}
			if ef := rc.Flush(); ef != nil {
				return n, ef, nil
			}
		}
		if er == io.EOF {
			return n, nil, nil
		}
		if er != nil {
			return n, nil, er
		}
	}
}

// invocationOutcome is the error of an InvocationResponse (or of waiting for
// it); nil when the function succeeded.
func invocationOutcome(a answered) error {
	if a.err != nil {
		return a.err
	}
	r := a.m.GetInvocationResponse().GetResult()
	switch r.GetStatus() {
	case rpc.StatusResult_Success:
		return nil
	case rpc.StatusResult_Cancelled:
		return invoke.Errorf(invoke.KindTimeout, "invocation cancelled by the worker")
	}
	ex := r.GetException()
	typ := ex.GetType()
	if typ == "" {
		typ = "FunctionError"
	}
	msg := ex.GetMessage()
	if msg == "" {
		msg = r.GetResult()
	}
	return &invoke.Error{Kind: invoke.KindFunction, Type: typ, Message: msg}
}

// forwardError is the invocation's error when the forwarded request failed
// before the worker's response header: the request body was too large or
// broke off, the invocation timed out or the client went away (got, the
// outcome of the invocation, says), or the worker's HTTP server could not be
// reached.
func (i *Instance) forwardError(ctx context.Context, fn *azure.Function, body *stickyReader, err error, got answered) error {
	var ie *invoke.Error
	_, bodyErr := body.state()
	switch {
	case errors.Is(bodyErr, invoke.ErrStreamTooLarge):
		return invoke.Errorf(invoke.KindTooLarge, "%v", bodyErr)
	case errors.As(got.err, &ie) && ie.Kind == invoke.KindWorkerCrashed:
		return got.err // the worker died: its HTTP server with it
	case got.err != nil && !errors.Is(context.Cause(ctx), err):
		return got.err // timeout, client gone, instance lost
	case bodyErr != nil:
		return invoke.Errorf(invoke.KindBadRequest, "read request body: %v", bodyErr)
	}
	return invoke.Errorf(invoke.KindWorkerCrashed, "function %s: the HTTP server of instance %s (%s) did not answer the forwarded request: %v", fn.Name, i.ID(), i.proxy.base.Redacted(), err)
}

// HTTPStreaming reports whether the worker serves HTTP itself (HttpUri):
// its app's HTTP functions stream their request and response bodies.
func (i *Instance) HTTPStreaming() bool { return i.proxy != nil }

// giveUp ends an invocation whose forwarded request failed with err before
// the worker's response, and returns its outcome: the worker's stream may
// say within forwardLostWait that the worker died; otherwise the invocation
// is cancelled.
func (i *Instance) giveUp(ctx context.Context, cancel context.CancelCauseFunc, err error, inv <-chan answered) answered {
	if ctx.Err() == nil {
		t := time.NewTimer(forwardLostWait)
		defer t.Stop()
		select {
		case got := <-inv:
			return got
		case <-t.C:
		}
	}
	cancel(err)
	return <-inv
}
