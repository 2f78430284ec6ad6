package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/polyfn/polyfn/internal/build"
)

// SectionBuild holds each function's dependency build: from an empty
// cache, and the cached look-up an unchanged function costs at host start.
const SectionBuild = "build"

// builds measures, for each function of the config that has something to
// build (internal/build.Plan), its first build into an empty cache
// directory of its own (buildFirst samples, a new directory each) and then
// the cached build a host start does for it unchanged (buildCached samples,
// a new Builder each, as each start makes one). The installers' own
// download caches (uv's, npm's, the Go module and build caches) are used as
// they are: the first build measures polyfn's install, not the network.
func (r *runner) builds(ctx context.Context) {
	specs := build.Plan(r.cfg)
	if len(specs) == 0 {
		return
	}
	for _, sp := range specs {
		if ctx.Err() != nil {
			return
		}
		base := Row{Section: SectionBuild, Function: sp.Function, Runtime: sp.Runtime.Name, Protocol: string(sp.Runtime.Protocol)}
		r.progress("%s: %d first builds (%s), %d cached", sp.Function, r.p.buildFirst, sp.Kind, r.p.buildCached)
		first, cached := base, base
		first.Label, cached.Label = "first build, empty cache", "cached, host start"
		var firsts, hits durations
		var dir string
		var err error
		for i := range r.p.buildFirst {
			dir = filepath.Join(r.tmp, "build", fmt.Sprintf("%s-%d", sp.Function, i))
			var res build.Result
			if res, err = buildOne(ctx, dir, sp); err != nil {
				break
			}
			if res.Cached {
				err = fmt.Errorf("a build into an empty cache was cached")
				break
			}
			firsts = append(firsts, res.Duration)
		}
		for range r.p.buildCached {
			if err != nil {
				break
			}
			t0 := time.Now()
			var res build.Result
			if res, err = buildOne(ctx, dir, sp); err == nil && !res.Cached {
				err = fmt.Errorf("an unchanged function was built again")
			}
			hits = append(hits, time.Since(t0))
		}
		first.Values, cached.Values = latencyValues(firsts), latencyValues(hits)
		delete(first.Values, "p99_us")
		if len(firsts) == 0 {
			first.Values = map[string]float64{}
		}
		if err != nil {
			if len(firsts) < r.p.buildFirst {
				first.Error, cached.Error = err.Error(), "not measured: the first build failed"
				cached.Values = map[string]float64{}
			} else {
				cached.Error = err.Error()
			}
			r.fail("%s: build: %v", sp.Function, err)
		}
		r.add(first)
		r.add(cached)
	}
	// The temporary caches' Node.js entries are gone with r.tmp; the
	// codedirs' node_modules links are made again by the next host start.
	_ = os.RemoveAll(filepath.Join(r.tmp, "build"))
}

// buildOne builds sp alone into the cache directory dir with a new Builder.
func buildOne(ctx context.Context, dir string, sp build.Spec) (build.Result, error) {
	res := build.New(build.Options{Dir: dir, Parallel: 1}).Run(ctx, []build.Spec{sp})
	if len(res) != 1 {
		return build.Result{}, fmt.Errorf("%d build results for one function", len(res))
	}
	return res[0], res[0].Err
}
