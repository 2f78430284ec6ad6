package host

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
)

// This file applies what polyfn honours of an app's host.json to the app's
// invocations: functionTimeout, extensions.http's maxConcurrentRequests,
// maxOutstandingRequests and customHeaders (docs/azure.md, "host.json").

// boundTimeout returns the timeout of the app's invocations: the function
// entry's (cause), or host.json's functionTimeout when that is smaller.
func (a *app) boundTimeout(cause *invoke.TimeoutCause) *invoke.TimeoutCause {
	if d := a.hostJSON.FunctionTimeout; d > 0 && d < cause.Timeout {
		return &invoke.TimeoutCause{Function: cause.Function, Timeout: d,
			Key: filepath.Join(a.cfg.Codedir, azure.HostJSON) + " functionTimeout"}
	}
	return cause
}

// appGate bounds an app's HTTP invocations as host.json's
// extensions.http.maxConcurrentRequests (running at once; the others
// wait within their timeout) and maxOutstandingRequests (running or
// waiting; past it 429) do. Nil when neither is set.
type appGate struct {
	app         string
	maxOut      int
	outstanding atomic.Int64
	slots       chan struct{} // nil: no bound on running invocations
}

func newAppGate(app string, hc *azure.HostConfig) *appGate {
	if hc.MaxConcurrentRequests == 0 && hc.MaxOutstandingRequests == 0 {
		return nil
	}
	g := &appGate{app: app, maxOut: hc.MaxOutstandingRequests}
	if hc.MaxConcurrentRequests > 0 {
		g.slots = make(chan struct{}, hc.MaxConcurrentRequests)
	}
	return g
}

// enter admits one invocation of function; release gives its place back.
func (g *appGate) enter(ctx context.Context, function string) (release func(), err error) {
	if n := g.outstanding.Add(1); g.maxOut > 0 && n > int64(g.maxOut) {
		g.outstanding.Add(-1)
		return nil, invoke.Errorf(invoke.KindOverloaded, "app %s has %d requests running or waiting, its maximum (host.json extensions.http.maxOutstandingRequests)", g.app, g.maxOut)
	}
	if g.slots == nil {
		return func() { g.outstanding.Add(-1) }, nil
	}
	select {
	case g.slots <- struct{}{}:
		return func() { <-g.slots; g.outstanding.Add(-1) }, nil
	case <-ctx.Done():
		g.outstanding.Add(-1)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, invoke.TimeoutError(ctx, fmt.Sprintf("function %s waited for one of app %s's %d slots (host.json extensions.http.maxConcurrentRequests)", function, g.app, cap(g.slots)))
		}
		return nil, invoke.Errorf(invoke.KindUnavailable, "invocation cancelled: %v", context.Cause(ctx))
	}
}

// run runs req on p; an app's HTTP invocations pass its gate and get its
// custom headers.
func (h *Host) run(ctx context.Context, p *pool.Pool, req *invoke.Request) (*invoke.Result, error) {
	a := h.appNamed(req.App)
	if a == nil || req.HTTPRequest == nil {
		return p.Invoke(ctx, req)
	}
	if a.gate != nil {
		release, err := a.gate.enter(ctx, req.Function)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	if req.HTTPStream != nil && len(a.hostJSON.CustomHeaders) > 0 {
		// A streamed response is written before Invoke returns: the
		// adapter sets them where the worker's response does not.
		req.HTTPStream.Defaults = make(http.Header, len(a.hostJSON.CustomHeaders))
		for k, v := range a.hostJSON.CustomHeaders {
			req.HTTPStream.Defaults.Set(k, v)
		}
	}
	res, err := p.Invoke(ctx, req)
	if err == nil && res.HTTP != nil && len(a.hostJSON.CustomHeaders) > 0 {
		if res.HTTP.Header == nil {
			res.HTTP.Header = map[string][]string{}
		}
		for k, v := range a.hostJSON.CustomHeaders {
			if res.HTTP.Header.Get(k) == "" && res.HTTP.Headers[k] == "" {
				res.HTTP.Header.Set(k, v)
			}
		}
	}
	return res, err
}

// appNamed returns the app of that name, or nil.
func (h *Host) appNamed(name string) *app {
	if name == "" {
		return nil
	}
	for _, a := range h.apps {
		if a.cfg.Name == name {
			return a
		}
	}
	return nil
}

// appRoute returns the path template that serves function of app (such as
// "/api/products/{id}"), or "".
func (h *Host) appRoute(app, function string) string {
	a := h.appNamed(app)
	if a == nil {
		return ""
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, fn := range a.functions {
		if fn.Name == function && fn.HTTP != nil {
			return azure.PathPrefix(a.prefix) + fn.HTTP.Route
		}
	}
	return ""
}

// AppAllowed returns the methods the app functions whose route matches
// path accept, for the Allow header of a 405; nil when any method is.
func (h *Host) AppAllowed(path string) []string {
	var out []string
	for _, a := range h.apps {
		a.mu.RLock()
		router := a.router
		a.mu.RUnlock()
		if router == nil {
			continue
		}
		if _, _, status := router.Match("\x00", path); status != 405 {
			continue // no route of this app matches the path
		}
		for _, m := range router.Allowed(path) {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// failureAttrs are the log attributes of a failed invocation beyond its
// function, instance and invocation: the error's type, for an HTTP
// request its route and the status it is answered with, and the
// function's stack trace when its worker sent one.
func failureAttrs(h *Host, req *invoke.Request, ie *invoke.Error) []any {
	typ := ie.Type
	if typ == "" {
		typ = invoke.Outcome(ie)
	}
	out := []any{"error_type", typ}
	switch {
	case req.HTTPRequest != nil:
		route := h.appRoute(req.App, req.Function)
		if route == "" {
			route = req.HTTPRequest.Path
		}
		out = append(out, "method", req.HTTPRequest.Method, "route", route, "path", req.HTTPRequest.Path, "status", invoke.HTTPStatus(ie.Kind))
	case req.HTTP != nil:
		out = append(out, "method", req.HTTP.Method, "route", req.HTTP.Path, "status", invoke.HTTPStatus(ie.Kind))
	}
	if ie.Stack != "" {
		out = append(out, "stack", ie.Stack)
	}
	return out
}
