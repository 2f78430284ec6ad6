package host

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/runtimes"
)

// probed remembers the runtimes that passed a probe in this process, by
// interpreter and directory, so that reloads and hosts after the first do
// not start the interpreters again.
var probed sync.Map

// CheckRuntimes probes each of polyfn's own runtimes (Python, Node.js) that
// a function of cfg uses and returns one error per runtime that cannot be
// found or started, naming its functions and the command that would fix it.
// A runtime the config declares itself is started as written and not
// probed.
func CheckRuntimes(cfg *config.Config) []error {
	home := runtimes.Locate()
	users := map[string][]string{}
	for _, fc := range cfg.Functions {
		rt := cfg.Runtimes[fc.Runtime]
		if rt.BuiltIn && (rt.Name == runtimes.Python || rt.Name == runtimes.Node) {
			users[rt.Name] = append(users[rt.Name], fc.Name)
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for name, fns := range users {
		r := home.Python()
		if name == runtimes.Node {
			r = home.Node()
		}
		key := r.Interpreter + "\x00" + r.Dir
		if _, ok := probed.Load(key); ok && r.Err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := runtimes.Probe(context.Background(), r); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("functions %s cannot start: %w", strings.Join(fns, ", "), err))
				mu.Unlock()
				return
			}
			probed.Store(key, true)
		}()
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}

// reportRuntimes logs what CheckRuntimes finds, once per runtime.
func (h *Host) reportRuntimes() {
	for _, err := range CheckRuntimes(h.cfg) {
		h.log.Error("runtime unavailable", "error", err)
	}
}
