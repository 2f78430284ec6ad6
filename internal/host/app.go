package host

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyfn/polyfn/internal/azure"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/secret"
	"github.com/polyfn/polyfn/internal/stream"
)

// app is an Azure Functions app run by a language worker: the worker (or
// the app's function.json files) lists its functions when an instance
// starts, and the app's HTTP functions are served under /api/.
type app struct {
	cfg     config.Function
	runtime config.Runtime
	pool    *pool.Pool
	host    *Host
	// timeout names the app's timeout when it ends an invocation.
	timeout *invoke.TimeoutCause

	indexed   chan struct{} // closed after the first indexing attempt
	indexOnce sync.Once

	prefix string // route prefix from the app's host.json
	// streaming: the app's worker serves HTTP itself (HttpUri), as its last
	// started instance said (appstream.go).
	streaming atomic.Bool
	// hostJSON is what polyfn honours of the app's host.json; gate bounds
	// its HTTP invocations by it.
	hostJSON *azure.HostConfig
	gate     *appGate

	mu          sync.RWMutex
	functions   []*azure.Function
	router      *azure.Router
	broken      []string
	unsupported []string
	err         error // why the app has no working function, if it has none
	timers      []appTimer
}

func (h *Host) newApp(fc config.Function, rt config.Runtime) *app {
	a := &app{cfg: fc, runtime: rt, indexed: make(chan struct{}), host: h}
	hc, err := azure.ReadHostConfig(fc.Codedir)
	if err != nil {
		h.log.Error("app host.json: the settings named keep their defaults", "app", fc.Name, "error", err)
	}
	a.hostJSON, a.prefix, a.gate = hc, hc.RoutePrefix, newAppGate(fc.Name, hc)
	if len(hc.Ignored) > 0 {
		h.log.Warn("app host.json: keys polyfn does not honour", "app", fc.Name, "keys", strings.Join(hc.Ignored, ", "))
	}
	a.pool = pool.New(pool.Options{
		Function:    fc.Name,
		Concurrency: fc.Concurrency,
		Queue:       fc.Queue,
		Min:         fc.Instances.Min,
		Max:         fc.Instances.Max,
		Idle:        fc.Instances.Idle.D(),
		Log:         h.log,
		Observer:    h.metrics,
		Start: func(ctx context.Context, id string) (pool.Instance, error) {
			var loaded *stream.Instance
			inst, err := h.startAdmitted(ctx, a.pool, func() (pool.Instance, error) {
				si, err := stream.Start(ctx, stream.Options{
					Server: h.stream, Runtime: rt, Name: fc.Name, ID: id,
					Dir: filepath.Join(h.runDir, id), AppDir: fc.Codedir, Env: fc.Env, Log: h.log, App: true, Isolation: h.iso[fc.Name],
					LogLevels: hc.LogLevels,
				})
				if err != nil {
					return nil, err
				}
				loaded = si
				return si, nil
			})
			if err != nil {
				a.failed(err)
				return nil, err
			}
			a.streaming.Store(loaded.HTTPStreaming())
			fns, broken := loaded.AppFunctions()
			a.update(h, fns, broken, loaded.Unsupported())
			return inst, nil
		},
	})
	return a
}

func (a *app) failed(err error) {
	a.mu.Lock()
	if len(a.functions) == 0 {
		a.err = err
	}
	a.mu.Unlock()
	a.indexOnce.Do(func() { close(a.indexed) })
}

func (a *app) update(h *Host, fns []*azure.Function, broken, unsupported []error) {
	router, err := azure.NewRouter(fns, a.prefix)
	timers, timerErrs := a.indexTimers(fns)
	broken = append(broken, timerErrs...)
	msgs := make([]string, 0, len(broken)+1)
	for _, b := range broken {
		msgs = append(msgs, b.Error())
	}
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	unsup := make([]string, len(unsupported))
	for i, u := range unsupported {
		unsup[i] = u.Error()
	}
	a.mu.Lock()
	first := a.router == nil
	a.functions, a.router, a.broken, a.unsupported, a.err = fns, router, msgs, unsup, nil
	a.mu.Unlock()
	if first {
		names := make([]string, len(fns))
		for i, f := range fns {
			names[i] = f.Name
		}
		h.log.Info("app indexed", "app", a.cfg.Name, "functions", strings.Join(names, ","), "broken", len(msgs), "unsupported", len(unsup))
		for _, m := range msgs {
			h.log.Error("app function broken", "app", a.cfg.Name, "error", m)
		}
		for _, u := range unsupported {
			var ue *azure.UnsupportedError
			if errors.As(u, &ue) {
				h.log.Warn("app function unsupported: not served", "app", a.cfg.Name, "function", ue.Function, "bindings", strings.Join(ue.Bindings, ", "), "error", u)
			}
		}
	}
	h.setTimers(a, timers)
	a.indexOnce.Do(func() { close(a.indexed) })
}

// RouteApp finds the app function serving req.HTTPRequest (its method and
// escaped path, under its app's route prefix: /api/ by default) and sets
// req's App, Function and the route's parameters; Invoke then runs it. It
// waits (within ctx) for apps still being indexed. Errors: not found,
// method not allowed, or an app that could not be indexed (502 AppBroken,
// its message the apps' reasons with secrets masked, its Err an
// *invoke.AppsBroken).
func (h *Host) RouteApp(ctx context.Context, req *invoke.Request) error {
	hr := req.HTTPRequest
	if hr == nil {
		return invoke.Errorf(invoke.KindBadRequest, "only HTTP requests are routed to app functions")
	}
	var brokenApps, brokenNames []string
	notAllowed := false
	for _, a := range h.apps {
		select {
		case <-a.indexed:
		case <-ctx.Done():
			return invoke.Errorf(invoke.KindUnavailable, "app %s is still starting", a.cfg.Name)
		}
		a.mu.RLock()
		router, err := a.router, a.err
		a.mu.RUnlock()
		if router == nil {
			if err != nil {
				brokenApps = append(brokenApps, fmt.Sprintf("app %s: %v", a.cfg.Name, err))
				brokenNames = append(brokenNames, a.cfg.Name)
				a.pool.Prestart(1) // try again in the background
			}
			continue
		}
		fn, params, status := router.Match(hr.Method, hr.Path)
		switch status {
		case 200:
			req.App, req.Function, hr.Params = a.cfg.Name, fn.Name, params
			return nil
		case 405:
			notAllowed = true
		}
	}
	switch {
	case notAllowed:
		return invoke.Errorf(invoke.KindMethodNotAllowed, "method %s is not allowed for %s", hr.Method, hr.Path)
	case len(brokenApps) > 0:
		// The reasons quote the worker's stderr and log, which may print
		// its environment: every secret of the configuration is masked,
		// as Invoke masks an invocation's error. The trigger tells a
		// client without a key only Err's public message.
		return &invoke.Error{Kind: invoke.KindWorkerStart, Type: "AppBroken",
			Message: secret.Process.Redact(strings.Join(brokenApps, "; ")),
			Err:     &invoke.AppsBroken{Apps: brokenNames}}
	}
	return invoke.Errorf(invoke.KindNotFound, "no function serves %s", hr.Path)
}

// HasApps reports whether the config has Azure Functions apps.
func (h *Host) HasApps() bool { return len(h.apps) > 0 }

// WaitApps waits until every app has been indexed once (or failed to be),
// or ctx is done.
func (h *Host) WaitApps(ctx context.Context) error {
	for _, a := range h.apps {
		select {
		case <-a.indexed:
		case <-ctx.Done():
			return errors.New("apps still indexing: " + a.cfg.Name)
		}
	}
	return nil
}

// AppStatus describes one app.
type AppStatus struct {
	Name      string   `json:"name"`
	Runtime   string   `json:"runtime"`
	Functions []string `json:"functions"`
	Broken    []string `json:"broken,omitempty"`
	// Unsupported names each function polyfn cannot serve and the bindings
	// why ("function f: unsupported binding queueTrigger ...").
	Unsupported []string `json:"unsupported,omitempty"`
	// HostJSONIgnored lists the keys of the app's host.json polyfn does not
	// honour.
	HostJSONIgnored []string `json:"host_json_ignored,omitempty"`
	Error           string   `json:"error,omitempty"`
	// Timers are the app's timer functions.
	Timers []AppTimerStatus `json:"timers,omitempty"`
	pool.Stats
}

// AppStatus returns every app's state.
func (h *Host) AppStatus() []AppStatus {
	out := make([]AppStatus, 0, len(h.apps))
	for _, a := range h.apps {
		a.mu.RLock()
		st := AppStatus{Name: a.cfg.Name, Runtime: a.runtime.Name, Broken: a.broken, Unsupported: a.unsupported,
			HostJSONIgnored: a.hostJSON.Ignored, Stats: a.pool.Stats()}
		for _, f := range a.functions {
			st.Functions = append(st.Functions, f.Name)
		}
		if a.err != nil {
			st.Error = a.err.Error()
		}
		st.Timers = a.timerStatus(time.Now())
		a.mu.RUnlock()
		out = append(out, st)
	}
	return out
}
