package host

import (
	"time"

	"github.com/polyfn/polyfn/internal/build"
	"github.com/polyfn/polyfn/internal/invoke"
)

// TypeBuildFailed is the error type of an invocation of a function whose
// build failed (502, naming the function and the command that failed).
const TypeBuildFailed = "BuildFailed"

// buildAll builds every function's dependencies (internal/build) before
// any function takes traffic. A function whose build fails is marked
// broken — the one place that does so — and the others serve.
func (h *Host) buildAll() {
	specs := build.Plan(h.cfg)
	if len(specs) == 0 {
		return
	}
	began := time.Now()
	b := build.New(build.Options{Dir: build.Dir(h.cfg), Log: h.log})
	results := b.Run(h.buildCtx, specs)
	failed := 0
	for _, r := range results {
		f := h.fns[r.Function]
		if f == nil {
			continue
		}
		if r.Err != nil {
			failed++
			f.broken = &invoke.Error{Kind: invoke.KindWorkerStart, Type: TypeBuildFailed, Message: r.Err.Error(), Err: r.Err}
			f.brokenCause = r.Err.Error()
			continue
		}
		f.attach(r)
	}
	h.log.Info("function builds done", "functions", len(specs), "failed", failed, "installers_run", b.Installs(), "duration", time.Since(began).Round(time.Millisecond))
}

// attach gives f (and the pool that serves it) its build's result.
func (f *function) attach(r build.Result) {
	switch r.Kind {
	case build.KindGo:
		f.spec.bin = r.Path
	default:
		f.cfg.Dependencies = r.Path
		for i := range f.spec.functions {
			if f.spec.functions[i].Name == f.cfg.Name {
				f.spec.functions[i].Dependencies = r.Path
			}
		}
	}
}

// servable returns spec without its broken functions, and whether any is
// left.
func (h *Host) servable(spec *poolSpec) bool {
	kept := spec.functions[:0]
	for _, fc := range spec.functions {
		if h.fns[fc.Name].broken == nil {
			kept = append(kept, fc)
		}
	}
	spec.functions = kept
	return len(kept) > 0
}
