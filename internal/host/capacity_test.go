package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The host-wide caps hold whatever the functions ask for: at most
// max_starting workers start at once, and at most max_instances live; a
// function that needs room gets it by stopping another's idle instance.
func TestHostWideCaps(t *testing.T) {
	times := t.TempDir()
	var fns strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&fns, "  - {name: f%d, runtime: slow, handler: h.h, codedir: \"{codedir}\"}\n", i)
	}
	th := startHost(t, `
scaling: {max_instances: 3, max_starting: 2}
runtimes:
  slow:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: slow-start, POLYFN_FAKE_TIMES: "`+times+`"}
functions:
`+fns.String())

	// Watch the live instances while five cold functions are invoked at once.
	var maxLive atomic.Int32
	stop := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for {
			n := 0
			for _, f := range th.Status() {
				n += len(f.Instances)
			}
			if int32(n) > maxLive.Load() {
				maxLive.Store(int32(n))
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := th.Call(t, fmt.Sprintf("f%d", i), "x"); r.Status != 200 || string(r.Body) != "fake:x" {
				t.Errorf("f%d: got %d %s", i, r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if m := maxLive.Load(); m > 3 {
		t.Errorf("%d instances were live at once, want at most scaling.max_instances 3", m)
	}

	// At most two were starting at any moment (from the workers' own clocks).
	type span struct{ from, to int64 }
	var spans []span
	entries, _ := os.ReadDir(times)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(times, e.Name()))
		var sp span
		if _, err := fmt.Sscanf(string(b), "%d %d", &sp.from, &sp.to); err == nil {
			spans = append(spans, sp)
		}
	}
	if len(spans) < 5 {
		t.Fatalf("%d workers recorded their start, want at least 5", len(spans))
	}
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.from, +1}, edge{s.to, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		return edges[i].at < edges[j].at || edges[i].at == edges[j].at && edges[i].delta < edges[j].delta
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	if peak > 2 {
		t.Errorf("%d workers were starting at once, want at most scaling.max_starting 2", peak)
	}
	if !strings.Contains(th.Logs.String(), "stopping idle instance to make room") {
		t.Error("no idle instance was stopped to make room, yet five functions ran under a cap of three")
	}
}
