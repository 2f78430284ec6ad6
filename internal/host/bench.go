package host

import (
	"context"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
)

// StartInstance starts one instance of the worker that serves function,
// exactly as its pool would (same runtime, command, environment, protocol
// and, for stream workers, the host's own stream server), but outside the
// pool: no slots, no queue, no timeout. id names the instance and its
// private directory under RunDir; it must not clash with the pools' ids
// (which are "<function>-<n>"). The caller invokes the instance directly and
// must Stop it.
//
// The benchmark harness (internal/bench) uses it for the floor: the same
// worker called with the host's own protocol client and nothing else.
func (h *Host) StartInstance(ctx context.Context, function, id string) (pool.Instance, error) {
	f, ok := h.fns[function]
	if !ok {
		return nil, invoke.Errorf(invoke.KindNotFound, "function %q is not configured", function)
	}
	spec := &poolSpec{name: f.cfg.Name, runtime: f.runtime, functions: []config.Function{f.cfg}, env: f.cfg.Env}
	if f.cfg.App != "" {
		// A shared-worker app: the worker loads every function of the app.
		spec = &poolSpec{name: f.cfg.App, runtime: f.runtime, env: h.cfg.Apps[f.cfg.App].Env}
		for _, fc := range h.cfg.Functions {
			if fc.App == f.cfg.App {
				spec.functions = append(spec.functions, appMember(fc, h.cfg.Apps[f.cfg.App].Concurrency))
			}
		}
	}
	return h.starter(spec)(ctx, id)
}
