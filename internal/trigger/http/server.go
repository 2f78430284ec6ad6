package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/metrics"
)

// Named bounds of refusing a connection past http.max_connections.
const (
	// refuseLinger bounds how long a refused connection is kept after its
	// 503 was sent, reading what the client still sends: closing a socket
	// with unread bytes resets it, and the reset can destroy the 503 before
	// the client reads it.
	refuseLinger = 500 * time.Millisecond
	// maxRefusing bounds the refused connections lingering at once; past it
	// a refused connection is closed at once, without a response.
	maxRefusing = 64
	// refuseLogEvery spaces the warnings about refused connections; the
	// metrics count every one.
	refuseLogEvery = time.Minute
)

// Server is the HTTP trigger's listener: an http.Server with the timeouts
// of the http section, a bound on open connections and a budget of buffered
// request-body bytes (config.HTTP). It outlives configurations: a reload
// swaps the handler behind it, while the budget, the counts and the
// settings stay, so its settings other than max_body take effect on
// restart.
//
// Deadlines, per request: the header must arrive within read_header_timeout
// of its first byte (http.Server); the body within body_timeout of the end
// of the header (408 and the connection closed past it); once the function
// answered, the response must be sent within write_timeout; a keep-alive
// connection waits at most idle_timeout for its next request. The
// function's own run is bounded by its timeout only.
type Server struct {
	cfg      config.HTTP
	srv      *http.Server
	log      *slog.Logger
	handler  http.Handler
	metrics  *metrics.HTTPListener
	refusal  []byte
	refusing chan struct{}
	// open counts the open connections, buffered the request-body bytes
	// held by requests in flight.
	open, buffered atomic.Int64
	lastRefusalLog atomic.Int64
	// tls holds the certificate files of a listener with http.tls; nil
	// serves plain HTTP.
	tls *tlsFiles
}

// Forget deletes the listener's series of the function or app named name
// (a reload removed it).
func (s *Server) Forget(name string) { s.metrics.Forget(name) }

// NewServer returns a server with the listener settings of cfg.
func NewServer(cfg config.HTTP, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, refusing: make(chan struct{}, maxRefusing)}
	s.metrics = metrics.NewHTTPListener(s.open.Load, s.buffered.Load)
	body := fmt.Sprintf(`{"error":{"type":"HostBusy","message":"the host has its maximum of %d open connections (http.max_connections); try again later"}}`+"\n", cfg.MaxConnections)
	s.refusal = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLS.Enabled() {
		s.tls = newTLSFiles(cfg.TLS, log)
		s.srv.TLSConfig = s.tls.serverConfig()
	}
	return s
}

// Serve serves h on the connections ln accepts, within the connection
// bound, until Shutdown or Close; it then returns http.ErrServerClosed.
// With TLS it serves HTTPS, HTTP/2 included.
func (s *Server) Serve(ln net.Listener, h http.Handler) error {
	s.handler = h
	if s.tls != nil {
		return s.srv.ServeTLS(&limitListener{Listener: ln, s: s}, "", "")
	}
	return s.srv.Serve(&limitListener{Listener: ln, s: s})
}

// ReloadTLS reads the certificate files again (a reload does).
func (s *Server) ReloadTLS() {
	if s != nil && s.tls != nil {
		s.tls.refresh(false)
	}
}

// Shutdown stops accepting connections and waits, within ctx, for the
// requests in flight to finish (http.Server.Shutdown).
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes the listener and every connection at once.
func (s *Server) Close() error { return s.srv.Close() }

// Metrics returns what gathers the listener's metrics.
func (s *Server) Metrics() prometheus.Gatherer { return s.metrics.Registry }

// ServeHTTP arms the request's deadlines and hands it to the handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.armDeadlines(w, r)
	s.handler.ServeHTTP(w, r)
}

// armDeadlines gives the request body body_timeout from now to arrive, and
// the response write_timeout (plus body_timeout when there is a body).
func (s *Server) armDeadlines(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	rc := http.NewResponseController(w)
	write := s.cfg.WriteTimeout.D()
	if r.Body != http.NoBody {
		// The http.Server lifts this deadline itself once the body ends
		// (it then reads the connection only to notice a client that goes
		// away, which must not end an invocation running past it).
		_ = rc.SetReadDeadline(now.Add(s.cfg.BodyTimeout.D()))
		// An answer to a body that did not come (408, 413, 503) must still
		// be sendable once body_timeout is over.
		write += s.cfg.BodyTimeout.D()
	}
	_ = rc.SetWriteDeadline(now.Add(write))
}

// The methods below are what the handler asks of its server; on a nil
// *Server (a handler served by another server) they do nothing and every
// body fits.

// take holds n more request-body bytes; false when that would go past
// http.max_body_total.
func (s *Server) take(n int64) bool {
	if s == nil {
		return true
	}
	if s.buffered.Add(n) > int64(s.cfg.MaxBodyTotal) {
		s.buffered.Add(-n)
		return false
	}
	return true
}

// give returns n request-body bytes to the budget.
func (s *Server) give(n int64) {
	if s != nil && n != 0 {
		s.buffered.Add(-n)
	}
}

// responding gives the response write_timeout from now to be sent.
func (s *Server) responding(w http.ResponseWriter) {
	if s != nil {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout.D()))
	}
}

func (s *Server) rejected(reason string) {
	if s != nil {
		s.metrics.Rejected(reason)
	}
}

// limitListener accepts at most http.max_connections connections at once;
// past it, it answers each new one 503 and closes it.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.open.Add(1) > int64(l.s.cfg.MaxConnections) {
			l.s.open.Add(-1)
			l.s.refuse(c)
			continue
		}
		cc := &countedConn{Conn: c, s: l.s}
		if l.s.tls != nil {
			cc.plainCheck = true
		}
		return cc, nil
	}
}

// plainHTTPRefusal answers a plain HTTP request sent to a TLS listener,
// instead of the http.Server's own text.
const plainHTTPRefusal = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"

const plainHTTPBody = `{"error":{"type":"PlainHTTP","message":"this listener serves HTTPS only (http.tls): send the request over https://"}}` + "\n"

// errPlainHTTP ends the TLS handshake of a client that sent plain HTTP.
var errPlainHTTP = errors.New("the client sent plain HTTP to an HTTPS listener")

// countedConn gives its place back when it is closed.
type countedConn struct {
	net.Conn
	s      *Server
	closed atomic.Bool
	// plainCheck, on a TLS listener until the first read, answers a
	// client that speaks plain HTTP with a JSON 400.
	plainCheck bool
}

// Read is the connection's; on a TLS listener, the first read checks that
// the client opens with a TLS handshake record (0x16), and answers one
// that starts with a letter (an HTTP method) 400 with a JSON body.
func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.plainCheck && n > 0 {
		c.plainCheck = false // the handshake reads the connection from one goroutine
		if b := p[0]; b >= 'A' && b <= 'Z' {
			_ = c.SetWriteDeadline(time.Now().Add(refuseLinger))
			_, _ = fmt.Fprintf(c.Conn, plainHTTPRefusal, len(plainHTTPBody), plainHTTPBody)
			return 0, errPlainHTTP
		}
	}
	return n, err
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.s.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite lets the http.Server half-close the connection before closing
// it, as it does with a bare TCP connection.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// refuse answers a connection past http.max_connections with a 503 and
// closes it, within refuseLinger.
func (s *Server) refuse(c net.Conn) {
	s.metrics.Rejected(metrics.RejectMaxConnections)
	now := time.Now().UnixNano()
	if last := s.lastRefusalLog.Load(); (last == 0 || now-last >= int64(refuseLogEvery)) && s.lastRefusalLog.CompareAndSwap(last, now) {
		s.log.Warn("http: refusing connections: the host has its maximum open (http.max_connections); polyfn_http_rejected_total counts them",
			"max_connections", s.cfg.MaxConnections)
	}
	if s.tls != nil {
		c.Close() // a 503 in plain text means nothing to a TLS client
		return
	}
	select {
	case s.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-s.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := c.Write(s.refusal); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	}()
}
