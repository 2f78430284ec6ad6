package host

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyfn/polyfn/internal/build"
	"github.com/polyfn/polyfn/internal/builduser"
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
	b := build.New(build.Options{Dir: build.Dir(h.cfg), Log: h.log, Runner: builduser.For(h.cfg)})
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
		if err := h.reachable(f, r); err != nil {
			failed++
			f.broken = &invoke.Error{Kind: invoke.KindWorkerStart, Type: TypeBuildFailed, Message: err.Error(), Err: err}
			f.brokenCause = err.Error()
			h.log.Error("function build unreachable; the function is broken", "function", r.Function, "error", err)
			continue
		}
		f.attach(r)
	}
	h.log.Info("function builds done", "functions", len(specs), "failed", failed, "installers_run", b.Installs(), "duration", time.Since(began).Round(time.Millisecond))
}

// reachable makes a Python or Node.js build result reachable by the user
// f's workers run as, when that is another user: directories in the state
// directory or the build directory get search permission for others
// (0o001; listing stays theirs, the MQTT store's files stay 0600); a
// directory above them that others cannot search is an error naming it.
// (A Go binary is linked into each instance's directory instead.)
func (h *Host) reachable(f *function, r build.Result) error {
	iso := h.iso[f.cfg.Name]
	if r.Kind == build.KindGo || r.Path == "" || iso.Users == nil && !iso.OtherUser() {
		return nil
	}
	// polyfn's own directories: the state directory and the build cache.
	within := func(d string) bool {
		for _, root := range []string{h.cfg.StateDir, build.Dir(h.cfg)} {
			if root == "" {
				continue
			}
			root = filepath.Clean(root)
			if d == root || strings.HasPrefix(d, root+string(filepath.Separator)) {
				return true
			}
		}
		return false
	}
	for d := r.Path; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if !within(d) {
				return fmt.Errorf("function %s: its dependencies in %s cannot be reached by the user its workers run as: %s is mode %04o; set state_dir (or build.dir) to a directory other users may enter", f.cfg.Name, r.Path, d, st.Mode().Perm())
			}
			if err := os.Chmod(d, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("function %s: its dependencies: %w", f.cfg.Name, err)
			}
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
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
