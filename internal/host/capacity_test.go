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

	"github.com/polyfn/polyfn/internal/hosttest"
)

// The host-wide caps hold whatever the functions ask for: at most
// max_starting workers start at once, and at most max_instances live; a
// function that needs room gets it by stopping another's idle instance.
func TestHostWideCaps(t *testing.T) {
	times := hosttest.Writable(t, t.TempDir())
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

// Fair queueing: a hot function that keeps every instance of a full host
// busy (and a queue waiting behind them) does not starve a cold function —
// the cold one gets the next instance that finishes its invocation, well
// within its timeout, while the hot function's queue is still full.
func TestHotFunctionDoesNotStarveColdOne(t *testing.T) {
	th := startHost(t, `
scaling: {max_instances: 2, max_starting: 2}
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: hot, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 1, instances: {max: 4}, timeout: 60s}
  - {name: cold, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 1, timeout: 3s}
`)
	// Eight clients keep the hot function busy with 300 ms invocations for
	// six seconds: both instances busy and invocations queued all along.
	var hotDone, hotFailed atomic.Int32
	stop := time.Now().Add(6 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if r := th.Call(t, "hot", "sleep:300ms"); r.Status != 200 {
					hotFailed.Add(1)
					t.Errorf("hot: got %d %s", r.Status, r.Body)
					return
				}
				hotDone.Add(1)
			}
		}()
	}
	hosttest.WaitFor(t, 5*time.Second, "two busy hot instances", func() bool {
		for _, f := range th.Status() {
			if f.Name == "hot" && len(f.Instances) == 2 && f.Queued > 0 {
				return true
			}
		}
		return false
	})
	// The cold function's timeout (3 s) is shorter than the hot load (6 s):
	// without fair queueing it waits for a slot that never goes idle.
	r := th.Call(t, "cold", "x")
	coldAt := time.Now()
	if r.Status != 200 || string(r.Body) != "fake:x" {
		t.Fatalf("cold function during the hot load: got %d %s", r.Status, r.Body)
	}
	if !coldAt.Before(stop) {
		t.Fatal("the cold function was only served after the hot load ended")
	}
	wg.Wait()
	if hotFailed.Load() > 0 || hotDone.Load() == 0 {
		t.Fatalf("hot: %d done, %d failed", hotDone.Load(), hotFailed.Load())
	}
	if !strings.Contains(th.Logs.String(), "give its place to another function") {
		t.Error("no hot instance gave its place to the cold function")
	}
}

// Making room for a starved function pushes out one instance per start that
// waits, not one per look at a full host: while the instance asked to go is
// still finishing its invocation or stopping (its workers are slow to stop
// here), the waiting start does not retire further instances of the hot
// function.
func TestMakingRoomRetiresOneInstance(t *testing.T) {
	th := startHost(t, `
scaling: {max_instances: 3, max_starting: 3}
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok, POLYFN_FAKE_STOP_DELAY: 1s}
    stop_grace: 5s
functions:
  - {name: hot, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 1, instances: {max: 3}, timeout: 60s}
  - {name: cold, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 1, timeout: 20s}
`)
	stop := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if r := th.Call(t, "hot", "sleep:200ms"); r.Status != 200 {
					t.Errorf("hot: got %d %s", r.Status, r.Body)
					return
				}
			}
		}()
	}
	hosttest.WaitFor(t, 5*time.Second, "three busy hot instances", func() bool {
		for _, f := range th.Status() {
			if f.Name == "hot" && len(f.Instances) == 3 && f.Queued > 0 {
				return true
			}
		}
		return false
	})
	if r := th.Call(t, "cold", "x"); r.Status != 200 || string(r.Body) != "fake:x" {
		t.Fatalf("cold function during the hot load: got %d %s", r.Status, r.Body)
	}
	wg.Wait()
	if n := strings.Count(th.Logs.String(), "give its place to another function"); n != 1 {
		t.Errorf("%d hot instances were pushed out for one start of the cold function, want 1", n)
	}
}
