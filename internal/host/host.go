// Package host turns a configuration into running functions: one pool per
// function, each starting instances of the function's runtime on demand.
// Triggers call Host.Invoke.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/call"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/stream"
)

// Host runs the functions of one configuration.
type Host struct {
	cfg    *config.Config
	stream *stream.Server
	log    *slog.Logger
	runDir string
	fns    map[string]*function
	once   sync.Once
}

type function struct {
	cfg     config.Function
	runtime config.Runtime
	pool    *pool.Pool
}

// New prepares a host for cfg; Start brings it up.
func New(cfg *config.Config, log *slog.Logger) (*Host, error) {
	runDir, err := os.MkdirTemp("", "polyfn-")
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	h := &Host{cfg: cfg, log: log, runDir: runDir, fns: map[string]*function{}}
	for _, fc := range cfg.Functions {
		rt := cfg.Effective(fc)
		if rt.Protocol == config.ProtocolStream && h.stream == nil {
			if h.stream, err = stream.NewServer(log); err != nil {
				os.RemoveAll(runDir)
				return nil, err
			}
		}
		f := &function{cfg: fc, runtime: rt}
		f.pool = pool.New(pool.Options{
			Function:    fc.Name,
			Concurrency: fc.Concurrency,
			Queue:       fc.Queue,
			Min:         fc.Instances.Min,
			Max:         fc.Instances.Max,
			Idle:        fc.Instances.Idle.D(),
			Log:         log,
			Start:       h.starter(fc, rt),
		})
		h.fns[fc.Name] = f
	}
	return h, nil
}

// starter returns how the pool of function fc starts an instance.
func (h *Host) starter(fc config.Function, rt config.Runtime) pool.StartFunc {
	if rt.Protocol == config.ProtocolStream {
		return func(ctx context.Context, id string) (pool.Instance, error) {
			return stream.Start(ctx, stream.Options{
				Server: h.stream, Runtime: rt, Functions: []config.Function{fc},
				Name: fc.Name, ID: id, Dir: filepath.Join(h.runDir, id), Env: fc.Env, Log: h.log,
			})
		}
	}
	return func(ctx context.Context, id string) (pool.Instance, error) {
		return call.Start(ctx, call.Options{
			Function: fc, Runtime: rt, ID: id,
			Dir: filepath.Join(h.runDir, id), Log: h.log,
		})
	}
}

// Start starts every function's minimum instances in the background.
func (h *Host) Start() {
	for _, f := range h.fns {
		f.pool.Start()
	}
}

// RunDir is the directory under which every instance gets its private
// working directory. It is removed by Close.
func (h *Host) RunDir() string { return h.runDir }

// MaxBody is the largest payload the host accepts.
func (h *Host) MaxBody() int64 { return int64(h.cfg.HTTP.MaxBody) }

// Invoke runs one invocation of the function req.Function, bounded by the
// function's timeout. Errors are *invoke.Error.
func (h *Host) Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error) {
	f, ok := h.fns[req.Function]
	if !ok {
		return nil, invoke.Errorf(invoke.KindNotFound, "function %q is not configured", req.Function)
	}
	if req.ID == "" {
		req.ID = invoke.NewID()
	}
	if req.Timestamp.IsZero() {
		req.Timestamp = time.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout.D())
	defer cancel()
	res, err := f.pool.Invoke(ctx, req)
	if err != nil {
		switch invoke.KindOf(err) {
		case invoke.KindFunction:
			h.log.Debug("function error", "function", req.Function, "invocation", req.ID, "error", err)
		default:
			h.log.Warn("invocation failed", "function", req.Function, "invocation", req.ID, "error", err)
		}
	}
	return res, err
}

// FunctionStatus describes one function for status views.
type FunctionStatus struct {
	Name     string `json:"name"`
	Runtime  string `json:"runtime"`
	Protocol string `json:"protocol"`
	pool.Stats
}

// Status returns every function's state, sorted by name.
func (h *Host) Status() []FunctionStatus {
	out := make([]FunctionStatus, 0, len(h.fns))
	for _, f := range h.fns {
		out = append(out, FunctionStatus{Name: f.cfg.Name, Runtime: f.runtime.Name, Protocol: string(f.runtime.Protocol), Stats: f.pool.Stats()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close drains in-flight invocations until ctx is done, then stops every
// instance. It blocks until all workers are gone and is safe to call more
// than once.
func (h *Host) Close(ctx context.Context) {
	h.once.Do(func() {
		var wg sync.WaitGroup
		for _, f := range h.fns {
			wg.Add(1)
			go func() { defer wg.Done(); f.pool.Close(ctx) }()
		}
		wg.Wait()
		if h.stream != nil {
			h.stream.Close()
		}
		os.RemoveAll(h.runDir)
	})
}
