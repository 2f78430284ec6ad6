package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/call"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/invoke"
)

// The no-op function, served by polyfn's Python runtime on one instance.
const warmConfig = `
functions:
  - name: noop
    handler: noop.handler
    codedir: ../e2e/testdata/functions/noop
    instances: {min: 1, max: 1}
`

// latencies records per-operation durations and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	pct := func(p float64) float64 { return float64(l[int(float64(len(l)-1)*p)].Nanoseconds()) / 1e3 }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.90), "p90-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func startWarm(b *testing.B) *hosttest.Host {
	dir, err := filepath.Abs(".")
	if err != nil {
		b.Fatal(err)
	}
	th := hosttest.Start(b, dir, warmConfig)
	hosttest.WaitFor(b, 30*time.Second, "the warm instance", func() bool {
		st := th.Status()
		return len(st) == 1 && len(st[0].Instances) == 1
	})
	return th
}

// BenchmarkDirectCall is the floor: the host's call-protocol client calling
// a warm Python worker directly, no pool, no HTTP.
func BenchmarkDirectCall(b *testing.B) {
	dir, _ := filepath.Abs("../e2e/testdata/functions/noop")
	cfg, err := config.Parse(filepath.Join(b.TempDir(), "polyfn.yaml"), []byte("functions: [{name: noop, handler: noop.handler, codedir: "+dir+"}]"))
	if err != nil {
		b.Fatal(err)
	}
	f := cfg.Functions[0]
	f.Protocol = config.ProtocolCall
	inst, err := call.Start(context.Background(), call.Options{
		Functions: []config.Function{f}, Name: f.Name, Runtime: cfg.Effective(f), ID: "noop-direct",
		Dir: filepath.Join(b.TempDir(), "i"),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Stop(context.Background())
	req := &invoke.Request{ID: "bench", Function: "noop", Trigger: invoke.TriggerInvoke, Timestamp: time.Now()}
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := inst.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
		cancel()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkHostInvoke goes through the host's in-process invoke API (pool,
// timeout, call protocol).
func BenchmarkHostInvoke(b *testing.B) {
	th := startWarm(b)
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := th.Invoke(context.Background(), &invoke.Request{Function: "noop", Trigger: invoke.TriggerInvoke}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkHTTPTrigger goes end to end: a keep-alive HTTP client, the HTTP
// trigger, the host, the worker.
func BenchmarkHTTPTrigger(b *testing.B) {
	th := startWarm(b)
	client := &http.Client{}
	url := th.URL + "/function/noop"
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		resp, err := client.Post(url, "application/json", bytes.NewReader(nil))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b)
}
