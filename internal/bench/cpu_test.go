package bench_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/bench"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// Environment of the load generator role (see runLoader).
const (
	loadAddrEnv = "POLYFN_BENCH_LOAD_ADDR"
	loadPathEnv = "POLYFN_BENCH_LOAD_PATH"
	loadConcEnv = "POLYFN_BENCH_LOAD_CONC"
	// workerProfileEnv, set for the benchmark, has each no-op worker write
	// a CPU profile to its value followed by "." and its pid.
	workerProfileEnv = "POLYFN_BENCH_WORKER_CPUPROFILE"
	// functionEnv, when set, replaces the Go no-op function of the stream
	// rows with another, given as a YAML flow mapping naming it noop, to
	// measure the host's share with another runtime's worker, e.g.
	// {name: noop, runtime: python3, handler: fn.noop, codedir: /abs/path/bench/functions/python}
	// (worker-µs/op counts the worker's whole process group).
	functionEnv = "POLYFN_BENCH_FUNCTION"
)

// BenchmarkHTTPInvokeGo measures the CPU one no-op invocation of a Go
// function costs through the HTTP trigger, split by process: the host (this
// process, getrusage), the workers (their process groups in /proc) and the load generator
// (a process of its own, so its CPU and allocations are not the host's). One
// op is one request. allocs/op and B/op are the host's. Latency figures on
// a shared machine are noisy; CPU per request much less so: compare the
// medians of host-µs/op and worker-µs/op between changes (docs/performance.md):
//
//	go test ./internal/bench -run '^$' -bench HTTPInvokeGo -benchtime 30000x -count 5
//
// POLYFN_BENCH_WORKER_CPUPROFILE=FILE has each worker write a CPU profile
// to FILE.PID, and POLYFN_BENCH_FUNCTION benchmarks another function (see
// functionEnv).
func BenchmarkHTTPInvokeGo(b *testing.B) {
	benchRuntime(b, func(b *testing.B, protocol string) string {
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		env := roleEnv + ": noop"
		if p := os.Getenv(workerProfileEnv); p != "" {
			env += ", " + workerProfileEnv + ": " + p
		}
		fn := fmt.Sprintf("{name: noop, runtime: go, protocol: %s, handler: %s, codedir: ., env: {%s}", protocol, exe, env)
		if other := os.Getenv(functionEnv); other != "" {
			if protocol != "stream" {
				b.Skip(functionEnv + " replaces the stream function only")
			}
			fn = strings.TrimSuffix(strings.TrimSpace(other), "}")
		}
		return fn
	})
}

// BenchmarkHTTPInvokePython is BenchmarkHTTPInvokeGo with the Python no-op
// of bench/functions/python on polyfn's Python runtime (python3 on PATH
// with polyfn_runtime, as make test and make bench set it):
//
//	PATH="$PWD/bin:$PWD/.venv/bin:$PATH" go test ./internal/bench -run '^$' -bench HTTPInvokePython -benchtime 20000x -count 5
func BenchmarkHTTPInvokePython(b *testing.B) {
	if err := exec.Command("python3", "-c", "import polyfn_runtime").Run(); err != nil {
		b.Skip("python3 with polyfn_runtime is not on PATH")
	}
	benchRuntime(b, benchFunction("python3", "fn.noop", "python"))
}

// BenchmarkHTTPInvokeNode is the same with the Node.js no-op of
// bench/functions/node on polyfn-node.
func BenchmarkHTTPInvokeNode(b *testing.B) {
	if _, err := exec.LookPath("polyfn-node"); err != nil {
		b.Skip("polyfn-node is not on PATH")
	}
	benchRuntime(b, benchFunction("node", "index.noop", "node"))
}

// benchFunction is the config entry of a no-op of bench/functions/DIR,
// without its closing brace.
func benchFunction(runtime, handler, dir string) func(*testing.B, string) string {
	return func(b *testing.B, protocol string) string {
		codedir, err := filepath.Abs(filepath.Join("..", "..", "bench", "functions", dir))
		if err != nil {
			b.Fatal(err)
		}
		return fmt.Sprintf("{name: noop, runtime: %s, protocol: %s, handler: %s, codedir: %s", runtime, protocol, handler, codedir)
	}
}

// benchRuntime runs benchHTTPInvoke for both protocols at concurrency 1
// (one instance) and 64 (four), with the function fn returns.
func benchRuntime(b *testing.B, fn func(b *testing.B, protocol string) string) {
	for _, protocol := range []string{"stream", "call"} {
		for _, bc := range []struct{ conc, instances int }{{1, 1}, {64, 4}} {
			b.Run(fmt.Sprintf("%s/c=%d", protocol, bc.conc), func(b *testing.B) {
				benchHTTPInvoke(b, fn(b, protocol), bc.conc, bc.instances)
			})
		}
	}
}

func benchHTTPInvoke(b *testing.B, fn string, conc, instances int) {
	dir := b.TempDir()
	hosttest.Reachable(b, dir)
	text := fmt.Sprintf("functions:\n  - %s, instances: {min: %d, max: %d}}\n", fn, instances, instances)
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(text))
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := host.New(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	h.Start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := httptrigger.NewServer(cfg.HTTP, log)
	go func() { _ = srv.Serve(ln, httptrigger.NewHandler(h, srv, h.MaxBody(), log)) }()
	defer srv.Close()

	ld, err := startLoader(ln.Addr().String(), "/function/noop", conc)
	if err != nil {
		b.Fatal(err)
	}
	defer ld.stop()
	if _, err := ld.run(max(2000, 50*conc)); err != nil { // warm-up
		b.Fatal(err)
	}
	var pids []int
	for _, st := range h.Status() {
		for _, i := range st.Instances {
			pids = append(pids, i.Pid)
		}
	}
	if len(pids) != instances {
		b.Fatalf("%d instances, want %d", len(pids), instances)
	}

	hostBefore, workersBefore := selfCPU(), bench.GroupsCPU(pids)
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	loadCPU, err := ld.run(b.N)
	elapsed := time.Since(began)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	hostCPU, workersCPU := selfCPU()-hostBefore, bench.GroupsCPU(pids)-workersBefore
	n := float64(b.N)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / n }
	b.ReportMetric(us(hostCPU), "host-µs/op")
	b.ReportMetric(us(workersCPU), "worker-µs/op")
	b.ReportMetric(us(loadCPU), "load-µs/op")
	b.ReportMetric(us(hostCPU+workersCPU+loadCPU), "total-µs/op")
	b.ReportMetric(n/elapsed.Seconds(), "req/s")
}

// loader is the load generator process (the test binary in the load role).
type loader struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startLoader(addr, path string, conc int) (*loader, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"=load", loadAddrEnv+"="+addr, loadPathEnv+"="+path, loadConcEnv+"="+strconv.Itoa(conc))
	cmd.Stderr = os.Stderr // it ends at the end of its stdin, when this process does
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &loader{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// run has the loader send n requests and returns the CPU it spent doing so.
func (l *loader) run(n int) (time.Duration, error) {
	if _, err := fmt.Fprintln(l.in, n); err != nil {
		return 0, err
	}
	line, err := l.out.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("load generator: %w", err)
	}
	var cpu int64
	var failed int
	if _, err := fmt.Sscan(line, &cpu, &failed); err != nil {
		return 0, fmt.Errorf("load generator said %q", line)
	}
	if failed > 0 {
		return 0, fmt.Errorf("%d of %d requests failed: %s", failed, n, line)
	}
	return time.Duration(cpu), nil
}

func (l *loader) stop() {
	l.in.Close()
	_ = l.cmd.Wait()
}

// runLoader is the load generator role: for each number n read from stdin
// it sends n requests and prints the CPU it spent (ns) and how many failed.
func runLoader() int {
	conc, _ := strconv.Atoi(os.Getenv(loadConcEnv))
	l := bench.NewLoader(os.Getenv(loadAddrEnv), os.Getenv(loadPathEnv), max(conc, 1))
	defer l.Close()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			return 2
		}
		before := selfCPU()
		failed, first := l.Run(n)
		msg := ""
		if first != nil {
			msg = first.Error()
		}
		fmt.Printf("%d %d %s\n", selfCPU()-before, failed, strings.ReplaceAll(msg, "\n", " "))
	}
	return 0
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runProfiledNoop serves the no-op function under a CPU profile, written
// when the worker stops (WorkerTerminate, SIGTERM or SIGINT).
func runProfiledNoop() int {
	f, err := os.Create(fmt.Sprintf("%s.%d", os.Getenv(workerProfileEnv), os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pprof.StopCPUProfile()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := polyfn.Serve(ctx, func(context.Context, polyfn.Event) (any, error) { return nil, nil }, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
