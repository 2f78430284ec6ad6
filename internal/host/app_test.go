package host_test

import (
	"testing"

	"github.com/polyfn/polyfn/internal/host"
)

const sharedAppConfig = `
runtimes:
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
  fake-call:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
apps:
  streamapp: {concurrency: 4, instances: {max: 1}}
functions:
  - {name: s1, runtime: fake-stream, handler: h.one, codedir: "{codedir}", app: streamapp}
  - {name: s2, runtime: fake-stream, handler: h.two, codedir: "{codedir}", app: streamapp}
  - {name: c1, runtime: fake-call, handler: h.one, codedir: "{codedir}", app: callapp}
  - {name: c2, runtime: fake-call, handler: h.two, codedir: "{codedir}", app: callapp}
  - {name: alone, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
`

// Functions naming the same app share one pool: one worker loads them all
// and serves each under its own name.
func TestSharedWorkerApps(t *testing.T) {
	th := startHost(t, sharedAppConfig)
	for _, group := range [][]string{{"s1", "s2"}, {"c1", "c2"}} {
		for _, fn := range group {
			if r := th.Call(t, fn, "whoami"); r.Status != 200 || string(r.Body) != fn {
				t.Fatalf("%s: got %d %q, want the worker to run %s", fn, r.Status, r.Body, fn)
			}
		}
		a, b := pidOf(th, group[0]), pidOf(th, group[1])
		if a == 0 || a != b {
			t.Fatalf("%s and %s run in processes %d and %d, want one shared worker", group[0], group[1], a, b)
		}
	}
	if r := th.Call(t, "alone", "whoami"); r.Status != 200 || pidOf(th, "alone") == pidOf(th, "s1") {
		t.Fatalf("a function without app must have its own worker")
	}
	for _, f := range th.Status() {
		if (f.Name == "s1" || f.Name == "s2") && f.App != "streamapp" {
			t.Errorf("status of %s: app %q, want streamapp", f.Name, f.App)
		}
	}
}

func pidOf(th interface {
	Status() []host.FunctionStatus
}, fn string) int {
	for _, f := range th.Status() {
		if f.Name == fn && len(f.Instances) > 0 {
			return f.Instances[0].Pid
		}
	}
	return 0
}
