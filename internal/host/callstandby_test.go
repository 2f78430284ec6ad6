package host_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/invoke"
)

// startCallStandbyHost runs a host whose built-in python3 runtime's call
// command is the fake worker in mode: a call standby of one of polyfn's own
// runtimes that misbehaves.
func startCallStandbyHost(t *testing.T, mode string) (*host.Host, *hosttest.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	hosttest.Reachable(t, dir)
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`
functions:
  - {name: f, runtime: python3, protocol: call, handler: h.h, codedir: .}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt := cfg.Runtimes["python3"]
	rt.CallCommand = []string{hosttest.Self(t)}
	rt.Env = map[string]string{fakeEnv: mode}
	rt.StartTimeout = config.Duration(5 * time.Second)
	rt.StopGrace = config.Duration(2 * time.Second)
	cfg.Runtimes["python3"] = rt
	logs := &hosttest.SyncBuffer{}
	h, err := host.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	t.Cleanup(func() {
		h.Close(context.Background())
		hosttest.WaitFor(t, 5*time.Second, "every worker process to be gone", func() bool { return len(hosttest.Leftovers(h.RunDir())) == 0 })
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return h, logs
}

func invokeF(t *testing.T, h *host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.Invoke(ctx, &invoke.Request{Function: "f", Trigger: invoke.TriggerInvoke, Payload: []byte("hi")})
	if err != nil || string(res.Payload) != "fake:hi" {
		t.Fatalf("invoke: %v %v, want fake:hi from a worker started as usual", res, err)
	}
}

// A call standby that exits before it is ready is logged with its exit, and
// the function's instance starts as usual.
func TestCallStandbyThatFailsToStart(t *testing.T) {
	h, logs := startCallStandbyHost(t, "standby-exit")
	hosttest.WaitFor(t, 20*time.Second, "the standby's failure in the log", func() bool {
		return strings.Contains(logs.String(), "standby worker failed to start")
	})
	for _, want := range []string{"exit status 3", "standby: cannot import grpc"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	invokeF(t, h)
}

// A call standby that is ready but exits when it is claimed is stopped, and
// the instance is started as usual.
func TestCallStandbyThatFailsWhenBound(t *testing.T) {
	h, logs := startCallStandbyHost(t, "standby-exit-on-claim")
	hosttest.WaitFor(t, 20*time.Second, "the call standby", func() bool {
		for _, s := range h.Standbys() {
			if s.Protocol == config.ProtocolCall && s.Ready {
				return true
			}
		}
		return false
	})
	invokeF(t, h)
	out := logs.String()
	for _, want := range []string{"standby worker could not be bound", "standby worker exited before it was serving: exit status 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
}
