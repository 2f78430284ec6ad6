package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyfn/polyfn/internal/config"
)

// LoadGeneratorArgs are the arguments, after the argv prefix of polyfn's
// CLI (Options.Serve), that run the CPU rows' load generator.
func loadGeneratorArgs(addr, path string, conc int) []string {
	return []string{"bench", "load-generator", "--addr", addr, "--path", path, "--conc", strconv.Itoa(conc)}
}

// RunLoadGenerator is the CPU rows' load generator, a process of its own
// (`polyfn bench load-generator`), so that its CPU is not counted as the
// host's. It keeps conc keep-alive connections to addr busy with POSTs to
// path, each sending its next request as soon as the last one answered,
// until in ends. For each line read from in it writes one line to out: the
// requests answered with a 2xx so far, those that failed, and the first
// failure.
func RunLoadGenerator(addr, path string, conc int, in io.Reader, out io.Writer) error {
	if conc < 1 {
		return fmt.Errorf("concurrency %d: must be at least 1", conc)
	}
	var (
		ok, failed atomic.Int64
		stop       atomic.Bool
		first      atomic.Pointer[string]
		wg         sync.WaitGroup
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(addr)
			defer c.close()
			for !stop.Load() {
				r, err := c.do(http.MethodPost, path, nil, nil)
				if err == nil {
					err = r.err()
				} else {
					time.Sleep(time.Millisecond) // do not spin on a dead listener
				}
				if err != nil {
					failed.Add(1)
					msg := strings.ReplaceAll(err.Error(), "\n", " ")
					first.CompareAndSwap(nil, &msg)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		msg := ""
		if p := first.Load(); p != nil {
			msg = *p
		}
		if _, err := fmt.Fprintf(out, "%d %d %s\n", ok.Load(), failed.Load(), msg); err != nil {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	return nil
}

// loadProc is a running load generator process.
type loadProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startLoadProc(argv []string, env []string, addr, path string, conc int) (*loadProc, error) {
	args := append(append([]string(nil), argv[1:]...), loadGeneratorArgs(addr, path, conc)...)
	cmd := exec.Command(argv[0], args...)
	cmd.Env = append(cmd.Environ(), env...)
	cmd.SysProcAttr = childAttr()
	stderr := &tail{}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the load generator: %w", err)
	}
	return &loadProc{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// counts asks the load generator how many requests succeeded and failed so far.
func (l *loadProc) counts() (ok, failed int64, first string, err error) {
	if _, err := io.WriteString(l.in, "\n"); err != nil {
		return 0, 0, "", fmt.Errorf("load generator: %w", err)
	}
	line, err := l.out.ReadString('\n')
	if err != nil {
		return 0, 0, "", fmt.Errorf("load generator: %w", err)
	}
	f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 3)
	if len(f) < 2 {
		return 0, 0, "", fmt.Errorf("load generator said %q", line)
	}
	ok, err1 := strconv.ParseInt(f[0], 10, 64)
	failed, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, "", fmt.Errorf("load generator said %q: %w", line, err)
	}
	if len(f) == 3 {
		first = f[2]
	}
	return ok, failed, first, nil
}

// stop ends the load generator (at the end of its stdin) and waits for it.
func (l *loadProc) stop() {
	l.in.Close()
	done := make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = l.cmd.Process.Kill()
		<-done
	}
}

// cpuSnapshot is the CPU time spent so far by each party of an invocation.
type cpuSnapshot struct {
	host, load time.Duration
	workers    map[int]time.Duration // per process group
	ok, failed int64
}

func (r *runner) instancePids(ih *inproc, name string) []int {
	var out []int
	for _, st := range ih.h.Status() {
		if st.Name == name {
			for _, in := range st.Instances {
				out = append(out, in.Pid)
			}
		}
	}
	return out
}

// cpu measures the CPU one invocation costs, split by party, at the
// concurrency of the function's best throughput point: the load generator
// runs in a process of its own (`polyfn bench load-generator`), so the CPU
// of this process over the window is the host's (the harness is idle
// meanwhile), the workers' is read from their process groups in /proc and
// the load generator's from its process. The window is a throughput window
// of its own: warm-up, then loadDur once the pool has no instance starting.
func (r *runner) cpu(ctx context.Context, ih *inproc, fc config.Function, base Row, conc int) {
	row := base
	row.Section, row.Label, row.Concurrency = SectionCPU, fmt.Sprintf("per invocation, c=%d", conc), conc
	row.Values = map[string]float64{}
	defer func() { r.add(row) }()
	r.progress("%s: CPU per invocation at concurrency %d", fc.Name, conc)
	ld, err := startLoadProc(r.o.Serve, r.o.ServeEnv, ih.addr, functionPath(fc.Name), conc)
	if err != nil {
		row.Error = err.Error()
		return
	}
	defer ld.stop()
	if !sleepCtx(ctx, r.p.loadWarm) {
		row.Error = ctx.Err().Error()
		return
	}
	for deadline := time.Now().Add(30 * time.Second); r.starting(ih, fc.Name) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	snap := func() (cpuSnapshot, error) {
		var s cpuSnapshot
		var err error
		s.ok, s.failed, _, err = ld.counts()
		s.host, s.load = selfCPU(), procCPU(ld.cmd.Process.Pid)
		s.workers = groupsCPU(r.instancePids(ih, fc.Name))
		return s, err
	}
	before, err := snap()
	if err != nil {
		row.Error = err.Error()
		return
	}
	began := time.Now()
	if !sleepCtx(ctx, r.p.loadDur) {
		row.Error = ctx.Err().Error()
		return
	}
	after, err := snap()
	elapsed := time.Since(began)
	if err != nil {
		row.Error = err.Error()
		return
	}
	var workers time.Duration
	for g, cpu := range after.workers {
		workers += cpu - before.workers[g] // an instance started in the window counts from its start
	}
	n := after.ok - before.ok
	if failed := after.failed - before.failed; failed > 0 {
		_, _, first, _ := ld.counts()
		row.Error = fmt.Sprintf("%d of %d requests failed; first: %s", failed, n+failed, first)
	}
	if n <= 0 {
		if row.Error == "" {
			row.Error = "no request answered in the window"
		}
		return
	}
	per := func(d time.Duration) float64 { return math.Round(float64(d.Nanoseconds())/1e3/float64(n)*10) / 10 }
	row.Values = map[string]float64{
		"worker_cpu_us":      per(workers),
		"host_cpu_us":        per(after.host - before.host),
		"load_cpu_us":        per(after.load - before.load),
		"host_worker_cpu_us": per(workers + after.host - before.host),
		"req_per_s":          math.Round(float64(n) / elapsed.Seconds()),
		"instances":          float64(len(after.workers)),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
