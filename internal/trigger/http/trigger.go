package http

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/polyfn/polyfn/internal/trigger"
)

var _ trigger.Trigger = (*Trigger)(nil)

// Trigger is the HTTP trigger for the life of the process: one listener
// (Server) and, behind it, the handler of the configuration that serves,
// swapped by Apply.
type Trigger struct {
	srv     *Server
	ln      net.Listener
	log     *slog.Logger
	handler atomic.Pointer[Handler]
	errc    chan error
	// admin makes it the admin listener; health is shared by both.
	admin  bool
	health *Health
	// public is the listener whose metrics the admin listener serves.
	public prometheus.Gatherer
}

// NewTrigger returns the trigger that serves on ln, behind srv. health,
// which may be nil, says when the server drains.
func NewTrigger(srv *Server, ln net.Listener, log *slog.Logger, health *Health) *Trigger {
	return &Trigger{srv: srv, ln: ln, log: log, errc: make(chan error, 1), health: health}
}

// NewAdminTrigger returns the admin listener on ln: /admin/*, /metrics and
// the health endpoints of the configuration that serves, without a key.
// Its /metrics has the listener metrics of public, the HTTP trigger's
// server.
func NewAdminTrigger(srv *Server, ln net.Listener, log *slog.Logger, health *Health, public *Server) *Trigger {
	t := NewTrigger(srv, ln, log, health)
	t.admin, t.public = true, public.Metrics()
	return t
}

// Start serves g's functions on the listener.
func (t *Trigger) Start(g trigger.Generation) error {
	t.Apply(g)
	go func() {
		err := t.srv.Serve(t.ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.handler.Load().ServeHTTP(w, r) }))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		t.errc <- err
	}()
	return nil
}

// Apply makes g's handler serve the requests that come from now on;
// requests in flight finish on the one before.
func (t *Trigger) Apply(g trigger.Generation) {
	t.srv.ReloadTLS()
	t.handler.Store(NewHandlerWith(g.Host, t.srv, g.Host.MaxBody(), t.log, HandlerOptions{Config: g.Config, Admin: t.admin, Health: t.health, Listener: t.public}))
}

// Stop stops accepting connections and waits, until ctx is done, for the
// requests in flight.
func (t *Trigger) Stop(ctx context.Context) { _ = t.srv.Shutdown(ctx) }

// Failed delivers the error that ended serving before Stop, if any; after
// Stop it delivers nil.
func (t *Trigger) Failed() <-chan error { return t.errc }

// Addr is the address the trigger listens on.
func (t *Trigger) Addr() net.Addr { return t.ln.Addr() }

// Server is the listener's server.
func (t *Trigger) Server() *Server { return t.srv }
