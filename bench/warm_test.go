package bench

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/call"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/pool"
	"github.com/polyfn/polyfn/internal/stream"
)

// The no-op function, served by polyfn's Python runtime on one instance,
// in each protocol.
const warmConfig = `
functions:
  - name: noop-stream
    handler: noop.handler
    codedir: ../e2e/testdata/functions/noop
    instances: {min: 1, max: 1}
  - name: noop-call
    protocol: call
    handler: noop.handler
    codedir: ../e2e/testdata/functions/noop
    instances: {min: 1, max: 1}
`

var protocols = []string{"stream", "call"}

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

func measure(b *testing.B, op func() error) {
	lat := make(latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b)
}

func startWarm(b *testing.B) *hosttest.Host {
	dir, err := filepath.Abs(".")
	if err != nil {
		b.Fatal(err)
	}
	th := hosttest.Start(b, dir, warmConfig)
	hosttest.WaitFor(b, 30*time.Second, "the warm instances", func() bool {
		for _, f := range th.Status() {
			if len(f.Instances) != 1 {
				return false
			}
		}
		return true
	})
	return th
}

// BenchmarkDirect is the floor: the host's protocol client calling a warm
// Python worker directly, with no pool and no HTTP.
func BenchmarkDirect(b *testing.B) {
	dir, _ := filepath.Abs("../e2e/testdata/functions/noop")
	cfg, err := config.Parse(filepath.Join(b.TempDir(), "polyfn.yaml"), []byte("functions: [{name: noop, handler: noop.handler, codedir: "+dir+"}]"))
	if err != nil {
		b.Fatal(err)
	}
	f := cfg.Functions[0]
	for _, protocol := range protocols {
		b.Run(protocol, func(b *testing.B) {
			var inst pool.Instance
			var err error
			switch protocol {
			case "call":
				f.Protocol = config.ProtocolCall
				inst, err = call.Start(context.Background(), call.Options{
					Functions: []config.Function{f}, Name: f.Name, Runtime: cfg.Effective(f), ID: "noop-call",
					Dir: filepath.Join(b.TempDir(), "i"),
				})
			case "stream":
				srv, serr := stream.NewServer(slog.Default())
				if serr != nil {
					b.Fatal(serr)
				}
				defer srv.Close()
				f.Protocol = ""
				inst, err = stream.Start(context.Background(), stream.Options{
					Server: srv, Runtime: cfg.Effective(f), Functions: []config.Function{f}, Name: f.Name, ID: "noop-stream",
					Dir: filepath.Join(b.TempDir(), "i"),
				})
			}
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Stop(context.Background())
			measure(b, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_, err := inst.Invoke(ctx, &invoke.Request{ID: invoke.NewID(), Function: "noop", Trigger: invoke.TriggerInvoke, Timestamp: time.Now()})
				return err
			})
		})
	}
}

// BenchmarkHostInvoke goes through the host's in-process invoke API (pool,
// timeout, protocol).
func BenchmarkHostInvoke(b *testing.B) {
	th := startWarm(b)
	for _, protocol := range protocols {
		b.Run(protocol, func(b *testing.B) {
			measure(b, func() error {
				_, err := th.Invoke(context.Background(), &invoke.Request{Function: "noop-" + protocol, Trigger: invoke.TriggerInvoke})
				return err
			})
		})
	}
}

// BenchmarkHTTPTrigger goes end to end: a keep-alive HTTP client, the HTTP
// trigger, the host, the worker.
func BenchmarkHTTPTrigger(b *testing.B) {
	th := startWarm(b)
	client := &http.Client{}
	for _, protocol := range protocols {
		b.Run(protocol, func(b *testing.B) {
			url := th.URL + "/function/noop-" + protocol
			measure(b, func() error {
				resp, err := client.Post(url, "application/json", bytes.NewReader(nil))
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				return nil
			})
		})
	}
}
