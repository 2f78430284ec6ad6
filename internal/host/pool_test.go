package host_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const poolConfig = `
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: narrow, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 1, queue: 1, instances: {max: 1}}
  - {name: wide, runtime: fake, handler: h.h, codedir: "{codedir}", concurrency: 2, instances: {max: 3}}
  - {name: idle, runtime: fake, handler: h.h, codedir: "{codedir}", instances: {idle: 200ms}}
  - {name: warm, runtime: fake, handler: h.h, codedir: "{codedir}", instances: {min: 2, idle: 50ms}}
`

func instances(th *hosttest.Host, fn string) (live, inflight, queued int) {
	for _, f := range th.Status() {
		if f.Name == fn {
			for _, i := range f.Instances {
				inflight += i.InFlight
			}
			return len(f.Instances), inflight, f.Queued
		}
	}
	return -1, -1, -1
}

func TestQueueBoundAnswers429(t *testing.T) {
	th := startHost(t, poolConfig)
	var wg sync.WaitGroup
	results := make([]hosttest.Response, 2)
	wg.Add(1)
	go func() { defer wg.Done(); results[0] = th.Call(t, "narrow", "sleep:1500ms") }()
	hosttest.WaitFor(t, 20*time.Second, "the only slot to be busy", func() bool { _, inflight, _ := instances(th, "narrow"); return inflight == 1 })
	wg.Add(1)
	go func() { defer wg.Done(); results[1] = th.Call(t, "narrow", "queued") }()
	hosttest.WaitFor(t, 5*time.Second, "one invocation to be queued", func() bool { _, _, q := instances(th, "narrow"); return q == 1 })

	r := th.Call(t, "narrow", "one too many")
	if r.Status != http.StatusTooManyRequests || r.Err.Error.Type != "Overloaded" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d %+v (Retry-After %q), want 429 Overloaded with Retry-After", r.Status, r.Err, r.Header.Get("Retry-After"))
	}
	wg.Wait()
	if string(results[0].Body) != "fake:sleep:1500ms" || string(results[1].Body) != "fake:queued" {
		t.Fatalf("the busy and the queued invocation must both succeed: %q, %q", results[0].Body, results[1].Body)
	}
}

func TestScaleUpToMax(t *testing.T) {
	th := startHost(t, poolConfig)
	var wg sync.WaitGroup
	const n = 6 // 3 instances x 2 slots
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := th.Call(t, "wide", "sleep:1s"); r.Status != 200 {
				t.Errorf("got %d %s", r.Status, r.Body)
			}
		}()
	}
	hosttest.WaitFor(t, 10*time.Second, "6 invocations in flight on 3 instances", func() bool {
		live, inflight, _ := instances(th, "wide")
		return live == 3 && inflight == n
	})
	wg.Wait()
}

func TestIdleInstancesStopAndMinStays(t *testing.T) {
	th := startHost(t, poolConfig)
	hosttest.WaitFor(t, 10*time.Second, "min instances of warm to start with the host", func() bool {
		live, _, _ := instances(th, "warm")
		return live == 2
	})
	if r := th.Call(t, "idle", "x"); r.Status != 200 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	if live, _, _ := instances(th, "idle"); live != 1 {
		t.Fatalf("idle has %d instances after an invocation, want 1", live)
	}
	hosttest.WaitFor(t, 5*time.Second, "the idle instance to stop", func() bool {
		live, _, _ := instances(th, "idle")
		return live == 0
	})
	// warm's idle time (50ms) has long passed, but min keeps both.
	if live, _, _ := instances(th, "warm"); live != 2 {
		t.Fatalf("warm has %d instances, want min 2", live)
	}
	// Scale from zero again.
	if r := th.Call(t, "idle", "again"); r.Status != 200 || string(r.Body) != "fake:again" {
		t.Fatalf("after scale to zero: got %d %q", r.Status, r.Body)
	}
}
