// Package host turns a configuration into running functions: one pool per
// function, each starting instances of the function's runtime on demand.
// Triggers call Host.Invoke; the host knows none of them (internal/server
// runs them).
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/polyfn/polyfn/internal/build"
	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/call"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/gobuild"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/limits"
	"github.com/polyfn/polyfn/internal/metrics"
	"github.com/polyfn/polyfn/internal/peer"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/secret"
	"github.com/polyfn/polyfn/internal/stream"
	"github.com/polyfn/polyfn/internal/tracing"
	"github.com/polyfn/polyfn/internal/worker"
)

// Host runs the functions of one configuration.
type Host struct {
	cfg     *config.Config
	metrics *metrics.Metrics
	builder *gobuild.Builder
	// buildCtx is cancelled by Close, stopping builds in progress.
	buildCtx    context.Context
	cancelBuild context.CancelFunc
	stream      *stream.Server
	log         *slog.Logger
	runDir      string
	dir         *runDir // runDir and its lock
	fns         map[string]*function
	pools       []*pool.Pool
	specs       []*poolSpec // of the functions' pools (not apps')
	apps        []*app
	timers      appTimers // of the apps' timer functions (apptimer.go)
	// standbys holds a standby worker manager per runtime that keeps one.
	standbys map[string]*standby
	capacity *capacity
	// iso holds how each function's workers are confined (isolation.go);
	// limiter enforces resource limits, when some function has them.
	iso     map[string]worker.Isolation
	limiter *limits.Limiter
	// standbyIso is how standby workers run: the host-wide default, so
	// they serve the functions that keep it.
	standbyIso worker.Isolation

	guardOnce sync.Once
	guard     peer.Guard
	once      sync.Once
}

type function struct {
	cfg     config.Function
	runtime config.Runtime
	pool    *pool.Pool
	// timeout names the function's timeout when it ends an invocation.
	timeout *invoke.TimeoutCause
	// spec is the pool spec serving the function.
	spec *poolSpec
	// broken is set (before Start returns, never after) when the
	// function's build failed: every invocation fails with it.
	// brokenCause is the build's error with the tool's output.
	broken      *invoke.Error
	brokenCause string
}

// timeoutCause names the timeout of the i-th function of the config.
func timeoutCause(i int, fc config.Function) *invoke.TimeoutCause {
	return &invoke.TimeoutCause{Function: fc.Name, Timeout: fc.Timeout.D(), Key: fmt.Sprintf("functions[%d].timeout", i)}
}

// poolSpec is what one pool serves: a function, or a shared-worker app.
type poolSpec struct {
	name      string
	runtime   config.Runtime
	functions []config.Function
	env       map[string]string
	conc      int
	queue     int
	instances config.Instances
	pool      *pool.Pool
	// bin is a Go function's binary, built before Start returns.
	bin string
}

// New prepares a host for cfg, with metrics of its own; Start brings it
// up.
func New(cfg *config.Config, log *slog.Logger) (*Host, error) {
	m := metrics.New()
	h, err := NewWith(cfg, log, m)
	if err == nil {
		m.SetPools(h.PoolStats)
	}
	return h, err
}

// NewWith prepares a host for cfg that records into m, metrics that outlive
// it (the server's, kept across reloads); the owner of m points its gauges
// at the host that serves (Metrics.SetPools). Start brings it up.
func NewWith(cfg *config.Config, log *slog.Logger, m *metrics.Metrics) (*Host, error) {
	dir, err := newRunDir(log)
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	h := &Host{cfg: cfg, log: log, runDir: dir.path, dir: dir, fns: map[string]*function{}, builder: gobuild.New(filepath.Join(build.Dir(cfg), "go")), standbys: map[string]*standby{},
		capacity: newCapacity(cfg.Scaling.MaxInstances, cfg.Scaling.MaxStarting)}
	h.builder.Runner = builduser.For(cfg) // Go functions built at worker start
	h.buildCtx, h.cancelBuild = context.WithCancel(context.Background())
	h.metrics = m
	if err := h.setupIsolation(); err != nil {
		dir.remove()
		return nil, err
	}
	var specs []*poolSpec
	apps := map[string]*poolSpec{}
	for i, fc := range cfg.Functions {
		rt := cfg.Effective(fc)
		if rt.Protocol == config.ProtocolStream && h.stream == nil {
			if err = h.openStream(log); err != nil {
				dir.remove()
				h.releaseLimits()
				return nil, err
			}
		}
		if rt.Discovery == config.DiscoveryApp {
			a := h.newApp(fc, rt)
			a.timeout = a.boundTimeout(timeoutCause(i, fc))
			h.apps = append(h.apps, a)
			h.pools = append(h.pools, a.pool)
			continue
		}
		spec := &poolSpec{name: fc.Name, runtime: rt, functions: []config.Function{fc}, env: fc.Env,
			conc: fc.Concurrency, queue: fc.Queue, instances: fc.Instances}
		if fc.App != "" {
			if apps[fc.App] == nil {
				a := cfg.Apps[fc.App]
				apps[fc.App] = &poolSpec{name: fc.App, runtime: rt, env: a.Env, conc: a.Concurrency, queue: a.Queue, instances: a.Instances}
				specs = append(specs, apps[fc.App])
			}
			spec = apps[fc.App]
			spec.functions = append(spec.functions, appMember(fc, spec.conc))
		} else {
			specs = append(specs, spec)
		}
		h.fns[fc.Name] = &function{cfg: fc, runtime: rt, timeout: timeoutCause(i, fc)}
		if key := standbyKey(rt); rt.StandbyEnabled() && h.standbyServes(h.iso[fc.Name]) && h.standbys[key] == nil {
			h.standbys[key] = &standby{h: h, rt: rt, key: key}
		}
	}
	for _, spec := range specs {
		p := pool.New(pool.Options{
			Function:    spec.name,
			Concurrency: spec.conc,
			Queue:       spec.queue,
			Min:         spec.instances.Min,
			Max:         spec.instances.Max,
			Idle:        spec.instances.Idle.D(),
			Log:         log,
			Start:       h.starter(spec),
			Observer:    h.metrics,
		})
		spec.pool = p
		h.pools = append(h.pools, p)
		for _, fc := range spec.functions {
			h.fns[fc.Name].pool = p
			h.fns[fc.Name].spec = spec
		}
		h.specs = append(h.specs, spec)
	}
	h.describeIsolation()
	h.reportRuntimes()
	return h, nil
}

// appMember is fc as an app's instance loads it: the app's concurrency is
// the instance's, which the worker is told (stream.PropConcurrency).
func appMember(fc config.Function, conc int) config.Function {
	fc.Concurrency = conc
	return fc
}

// standbyServes reports whether a standby worker may be bound to a
// function whose workers run with iso: no limits, and the default user.
func (h *Host) standbyServes(iso worker.Isolation) bool {
	return iso.Limits.IsZero() && iso.Credential == h.standbyIso.Credential && iso.Users == h.standbyIso.Users
}

// reachBinary puts a Go function's binary, built into the host's private
// cache, where a worker of another user can run it and no other worker can
// reach it: a hard link (or copy) in the instance's directory, which the
// instance creates and gives to its user.
func reachBinary(rt config.Runtime, dir string) (config.Runtime, error) {
	if len(rt.Command) == 0 || !filepath.IsAbs(rt.Command[0]) {
		return rt, nil
	}
	bin := rt.Command[0]
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return rt, fmt.Errorf("instance directory: %w", err)
	}
	dst := filepath.Join(dir, "function")
	if err := os.Link(bin, dst); err != nil {
		if err := copyFile(bin, dst); err != nil {
			return rt, fmt.Errorf("function binary: %w", err)
		}
	}
	rt.Command = append([]string{dst}, rt.Command[1:]...)
	return rt, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// starter returns how a pool starts an instance.
func (h *Host) starter(spec *poolSpec) pool.StartFunc {
	return func(ctx context.Context, id string) (pool.Instance, error) {
		rt, err := h.prepare(ctx, spec)
		if err != nil {
			return nil, err
		}
		// A standby worker was started without limits, as the host-wide
		// default user: it serves only functions that keep that user.
		iso := h.iso[spec.functions[0].Name]
		if rt.StandbyEnabled() && h.standbyServes(iso) {
			if inst := h.bindStandby(ctx, spec, rt, id); inst != nil {
				return inst, nil // the standby already holds its place among the host's instances
			}
		}
		dir := filepath.Join(h.runDir, id)
		if rt.Build == "go" && (iso.Users != nil || iso.OtherUser()) {
			if rt, err = reachBinary(rt, dir); err != nil {
				return nil, err
			}
		}
		return h.startAdmitted(ctx, spec.pool, func() (pool.Instance, error) {
			if rt.Protocol == config.ProtocolStream {
				return stream.Start(ctx, stream.Options{
					Server: h.stream, Runtime: rt, Functions: spec.functions,
					Name: spec.name, ID: id, Dir: filepath.Join(h.runDir, id), Env: spec.env, Log: h.log, Isolation: iso,
				})
			}
			return call.Start(ctx, call.Options{
				Functions: spec.functions, Name: spec.name, Env: spec.env, Runtime: rt, ID: id,
				Dir: filepath.Join(h.runDir, id), Log: h.log, Isolation: iso, Refusals: h.metrics,
			})
		})
	}
}

// prepare returns the runtime to start spec's worker with: for runtimes
// that build (Go), the function's binary, built or found in the cache, put
// where {binary} stands in the command.
func (h *Host) prepare(ctx context.Context, spec *poolSpec) (config.Runtime, error) {
	rt := spec.runtime
	if rt.Build != "go" {
		return rt, nil
	}
	fc := spec.functions[0]
	bin := fc.Handler
	if spec.bin != "" {
		bin = spec.bin
	} else if bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(fc.Codedir, bin)
		}
	} else {
		var err error
		began := time.Now()
		if bin, err = h.builder.Build(ctx, fc.Codedir); err != nil {
			return rt, err
		}
		h.log.Debug("go function binary ready", "function", fc.Name, "binary", bin, "duration", time.Since(began).Round(time.Millisecond))
	}
	cmd := make([]string, len(rt.Command))
	for i, a := range rt.Command {
		cmd[i] = strings.ReplaceAll(a, "{binary}", bin)
	}
	rt.Command = cmd
	return rt, nil
}

// Start builds the functions' dependencies (blocking: internal/build,
// cached across restarts), then starts every function's minimum instances
// in the background. A function whose build failed is broken and starts
// nothing.
func (h *Host) Start() {
	h.buildAll()
	for _, spec := range h.specs {
		if h.servable(spec) {
			spec.pool.Start()
		}
	}
	for _, a := range h.apps {
		a.pool.Start()
	}
	for _, a := range h.apps {
		a.pool.Prestart(1) // index the app now: its routes must be known
	}
	for _, sb := range h.standbys {
		sb.mu.Lock()
		sb.fillLocked()
		sb.mu.Unlock()
	}
}

// Codedir returns the code directory of function name, or "".
func (h *Host) Codedir(name string) string {
	if f, ok := h.fns[name]; ok {
		return f.cfg.Codedir
	}
	for _, a := range h.apps {
		if a.cfg.Name == name {
			return a.cfg.Codedir
		}
	}
	return ""
}

// WaitReady waits until the host is fully up: every app indexed and every
// pool with a minimum at its minimum (or broken), or ctx is done. It wakes
// on the pools' events (pool.Changed), not on a clock.
func (h *Host) WaitReady(ctx context.Context) error {
	if err := h.WaitApps(ctx); err != nil {
		return err
	}
	for _, p := range h.pools {
		for {
			changed := p.Changed() // before the check, so no event is missed
			if p.AtMin() {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("function %s has not started its minimum instances: %w", p.Name(), ctx.Err())
			case <-changed:
			}
		}
	}
	return nil
}

// RunDir is the directory under which every instance gets its private
// working directory. It is removed by Close; if the host is killed, by the
// next host that starts.
func (h *Host) RunDir() string { return h.runDir }

// MaxBody is the largest payload the host accepts.
func (h *Host) MaxBody() int64 { return int64(h.cfg.HTTP.MaxBody) }

// Invoke runs one invocation of the function req.Function (of the app
// req.App, for an app function routed by RouteApp), bounded by the
// function's timeout. Errors are *invoke.Error: one of unknown origin is
// the host's, of kind KindInternal, logged with its cause as a host bug.
func (h *Host) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	p, timeout, err := h.target(req)
	if err != nil {
		return nil, err
	}
	if req.ID == "" {
		req.ID = invoke.NewID()
	}
	if req.Timestamp.IsZero() {
		req.Timestamp = time.Now()
	}
	ctx, cancel := invoke.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, span := startSpan(ctx, req)
	began := time.Now()
	res, err := h.run(ctx, p, req)
	if err != nil {
		err = h.invocationFailed(req, err)
		// The message reaches the caller: every secret of the
		// configuration is masked (a worker's last stderr lines, in a
		// crash's message, may print its environment).
		var ie *invoke.Error
		if errors.As(err, &ie) {
			ie.Message = secret.Process.Redact(ie.Message)
		}
	}
	h.observe(req, res, err, began)
	endSpan(span, err)
	return res, err
}

// target returns the pool that runs req and the timeout that bounds it.
func (h *Host) target(req *invoke.Request) (*pool.Pool, *invoke.TimeoutCause, error) {
	if req.App != "" {
		for _, a := range h.apps {
			if a.cfg.Name == req.App {
				return a.pool, a.timeout, nil
			}
		}
		return nil, nil, invoke.Errorf(invoke.KindNotFound, "app %q is not configured", req.App)
	}
	f, ok := h.fns[req.Function]
	if !ok {
		return nil, nil, invoke.Errorf(invoke.KindNotFound, "function %q is not configured", req.Function)
	}
	if f.broken != nil {
		// Its build failed: it has no pool that could serve.
		return nil, nil, f.broken
	}
	return f.pool, f.timeout, nil
}

// invocationFailed logs a failed invocation at the level its kind calls for
// and returns its error as an *invoke.Error: an error of unknown origin
// becomes an internal error whose message points at this log record.
func (h *Host) invocationFailed(req *invoke.Request, err error) error {
	args := []any{"function", req.Function, "instance", req.Instance, "invocation", req.ID, "error", err}
	if req.App != "" {
		args = append(args, "app", req.App)
	}
	var ie *invoke.Error
	if errors.As(err, &ie) {
		args = append(args, failureAttrs(h, req, ie)...)
	}
	if !errors.As(err, &ie) {
		h.log.Error("internal error: a host bug", args...)
		return &invoke.Error{Kind: invoke.KindInternal, Type: "InternalError", Err: err,
			Message: fmt.Sprintf("the host failed to run the invocation; its log has the cause under invocation %s", req.ID)}
	}
	switch ie.Kind {
	case invoke.KindFunction:
		h.log.Debug("function error", args...)
	case invoke.KindInternal:
		h.log.Error("internal error: a host bug", args...)
	default:
		h.log.Warn("invocation failed", args...)
	}
	return err
}

// startSpan starts the span of one invocation (none while trace export is
// off).
func startSpan(ctx context.Context, req *invoke.Request) (context.Context, trace.Span) {
	if !tracing.Exporting() {
		return ctx, noop.Span{} // before building the name and attributes
	}
	return tracing.Start(ctx, "invoke "+req.Function, trace.SpanKindInternal,
		attribute.String("polyfn.function", req.Function),
		attribute.String("polyfn.invocation", req.ID),
		attribute.String("polyfn.trigger", string(req.Trigger)))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(attribute.String("polyfn.outcome", invoke.Outcome(err)))
	}
	span.End()
}

// observe records a finished invocation in the metrics.
func (h *Host) observe(req *invoke.Request, res *invoke.Result, err error, began time.Time) {
	out := 0
	if res != nil {
		out = len(res.Payload)
	}
	h.metrics.Invocation(req.Function, string(req.Trigger), invoke.Outcome(err), time.Since(began), len(req.Payload), out)
}

// Metrics returns the metrics the host records into.
func (h *Host) Metrics() *metrics.Metrics { return h.metrics }

// PoolStats feeds the instance and queue gauges.
func (h *Host) PoolStats() []metrics.PoolStats {
	out := make([]metrics.PoolStats, 0, len(h.pools))
	for _, p := range h.pools {
		st := p.Stats()
		ps := metrics.PoolStats{Function: p.Name(), Starting: st.Starting, Queued: st.Queued}
		for _, i := range st.Instances {
			if i.InFlight > 0 {
				ps.Busy++
			} else {
				ps.Idle++
			}
		}
		out = append(out, ps)
	}
	return out
}

// FunctionStatus describes one function for status views.
type FunctionStatus struct {
	Name     string `json:"name"`
	Runtime  string `json:"runtime"`
	Protocol string `json:"protocol"`
	App      string `json:"app,omitempty"`
	pool.Stats
}

// AdminStatus is the document GET /admin/functions serves.
type AdminStatus struct {
	Functions []FunctionStatus `json:"functions"`
	Apps      []AppStatus      `json:"apps"`
	Standby   []StandbyStatus  `json:"standby"`
}

// Admin returns every function's and app's state.
// Secret values of the config (a worker's error may quote its environment)
// are masked.
func (h *Host) Admin() AdminStatus {
	st := AdminStatus{Functions: h.Status(), Apps: h.AppStatus(), Standby: h.Standbys()}
	secret.Process.RedactAll(&st)
	return st
}

// Status returns every function's state, sorted by name.
func (h *Host) Status() []FunctionStatus {
	out := make([]FunctionStatus, 0, len(h.fns))
	for _, f := range h.fns {
		st := FunctionStatus{Name: f.cfg.Name, Runtime: f.runtime.Name, Protocol: string(f.runtime.Protocol), App: f.cfg.App, Stats: f.pool.Stats()}
		if f.broken != nil {
			st.State, st.LastError = "broken", f.brokenCause
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close drains in-flight invocations until ctx is done, then stops every
// instance. It blocks until all workers are gone and is safe to call more
// than once.
func (h *Host) Close(ctx context.Context) {
	h.once.Do(func() {
		h.cancelBuild()
		var wg sync.WaitGroup
		for _, sb := range h.standbys {
			wg.Add(1)
			go func() { defer wg.Done(); sb.close() }()
		}
		for _, p := range h.pools {
			wg.Add(1)
			go func() { defer wg.Done(); p.Close(ctx) }()
		}
		wg.Wait()
		h.closeStream()
		h.dir.remove()
		h.releaseLimits()
	})
}

// AdminDocument returns Admin's document, for the HTTP trigger's
// /admin/functions.
func (h *Host) AdminDocument() any { return h.Admin() }
