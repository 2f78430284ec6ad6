// Package bench is polyfn's benchmark harness (`polyfn bench`, `make
// bench`). It measures the functions of any config against the design
// budgets and prints every figure next to its budget; every figure of a
// report is measured in the same run on the same machine, so ratios hold on
// a noisy machine.
//
// Each function of the config is probed once with a 1 KiB binary payload.
// A function that answers with the payload unchanged is an echo function and
// gets the payload rows; every other function gets the no-op rows: floor,
// warm latency, host-added latency, throughput, cold start and the RSS of an
// idle instance. Functions of Azure Functions apps (runtimes with app
// discovery) are skipped: they are reached by route, not by name.
//
// The no-op rows run a host in this process, behind a real HTTP listener on
// 127.0.0.1, one function at a time, so no other worker competes for the
// CPU. The memory and payload rows run `polyfn serve` in its own process, so
// its resident memory is the host's alone. Everything the harness starts is
// stopped before Run returns, and Run checks that no worker is left.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/buildinfo"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/invoke"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// Options configure a run.
type Options struct {
	// Config is the config file whose functions are measured.
	Config string
	// Quick makes a smoke run: few samples, short load points.
	Quick bool
	// Log receives the logs of the hosts the harness runs in process. Nil
	// discards them.
	Log *slog.Logger
	// Progress receives a line per step. Nil discards them.
	Progress io.Writer
	// Serve is the argv prefix that runs polyfn's CLI, for the rows that
	// need the host in its own process: "serve -c FILE --listen ADDR" is
	// appended. Empty means this executable.
	Serve []string
	// ServeEnv is added to that process's environment.
	ServeEnv []string
	// Command is recorded in the report.
	Command string
	// Reference names no-op functions of the config (comma-separated)
	// whose host+worker CPU per invocation and best throughput every other
	// no-op function's are divided by (the ratio rows). Empty: none.
	Reference string
}

// params are the sample counts and durations of a run.
type params struct {
	warmup      int           // untimed invocations per path before the latency rounds
	rounds      int           // latency rounds; each measures floor, HTTP and Host.Invoke in turn
	perRound    int           // samples per path per round
	roundCap    time.Duration // time cap per path per round
	loadWarm    time.Duration // untimed load before each throughput point
	loadDur     time.Duration // measured load per point
	conc        []int         // throughput points
	cold        int           // cold start samples
	coldSettle  time.Duration // pause between starting a fresh host and its first request
	idleSettle  time.Duration // pause before reading an idle host's RSS
	idleFns     int           // functions in the idle-memory config
	sizes       []int         // payload sizes
	sizeN       []int         // samples per payload size
	sizeCap     time.Duration // time cap per payload size
	buildFirst  int           // first builds per function, each into an empty cache
	buildCached int           // cached builds per function (an unchanged function at host start)
}

func paramsFor(quick bool) params {
	p := params{
		warmup: 300, rounds: 5, perRound: 600, roundCap: 2 * time.Second,
		loadWarm: time.Second, loadDur: 3 * time.Second, conc: []int{1, 16, 64},
		cold: 20, coldSettle: 100 * time.Millisecond, idleSettle: 2 * time.Second, idleFns: 100,
		sizes: []int{1 << 10, 64 << 10, 1 << 20, 16 << 20}, sizeN: []int{300, 100, 30, 8}, sizeCap: 5 * time.Second,
		buildFirst: 3, buildCached: 20,
	}
	if quick {
		p.warmup, p.rounds, p.perRound, p.roundCap = 30, 1, 200, 500*time.Millisecond
		p.loadWarm, p.loadDur = 100*time.Millisecond, 300*time.Millisecond
		p.cold, p.coldSettle, p.idleSettle = 3, 20*time.Millisecond, 300*time.Millisecond
		p.sizeN, p.sizeCap = []int{20, 10, 3, 2}, time.Second
		p.buildFirst, p.buildCached = 1, 5
	}
	return p
}

// probeSize is the payload that tells echo functions from the others.
const probeSize = 1 << 10

// firstResponseTimeout bounds a function's first invocation: its first
// instance start, and for Go its build.
const firstResponseTimeout = 5 * time.Minute

type runner struct {
	o       Options
	p       params
	cfg     *config.Config
	log     *slog.Logger
	rep     *Report
	tmp     string
	began   time.Time
	payload []byte // random bytes: never JSON, so every runtime echoes them as bytes
}

// Run measures the functions of o.Config and returns the report. It fails
// only when the config cannot be loaded or ctx is cancelled; a function that
// cannot be measured is reported in its rows and in Report.Errors.
func Run(ctx context.Context, o Options) (*Report, error) {
	cfg, err := config.Load(o.Config)
	if err != nil {
		return nil, err
	}
	r := &runner{o: o, p: paramsFor(o.Quick), cfg: cfg, log: o.Log, began: time.Now()}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if len(r.o.Serve) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find polyfn's executable: %w", err)
		}
		r.o.Serve = []string{exe}
	}
	r.tmp, err = os.MkdirTemp("", "polyfn-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(r.tmp)
	// Generated functions live here; their workers may run as users of
	// their own.
	if err := os.Chmod(r.tmp, 0o755); err != nil {
		return nil, err
	}
	r.payload = make([]byte, slicesMax(r.p.sizes))
	rng := rand.NewChaCha8([32]byte{'p', 'o', 'l', 'y', 'f', 'n'})
	_, _ = rng.Read(r.payload)
	r.payload[0] = 0xff // not UTF-8, not JSON

	r.rep = &Report{Version: 1, Command: o.Command, Config: cfg.File, Quick: o.Quick, Started: r.began, Machine: machine(), Settings: r.settings()}

	r.builds(ctx)
	var echoes []config.Function
	for _, fc := range cfg.Functions {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if cfg.Effective(fc).Discovery == config.DiscoveryApp {
			r.note("%s: skipped: an Azure Functions app (its functions are reached by route, not by name)", fc.Name)
			continue
		}
		echo, err := r.function(ctx, fc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.fail("%s: %v", fc.Name, err)
			continue
		}
		if echo {
			echoes = append(echoes, fc)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.ratios()
	r.idleMemory(ctx)
	r.payloads(ctx, echoes)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(echoes) == 0 {
		r.note("no echo function in the config: no payload rows")
	}
	for i := range r.rep.Rows {
		row := &r.rep.Rows[i]
		if row.Budget != nil {
			row.check()
			r.rep.BudgetsTotal++
			if row.Budget.Met {
				r.rep.BudgetsMet++
			}
		}
	}
	r.rep.DurationS = math.Round(time.Since(r.began).Seconds()*10) / 10
	return r.rep, nil
}

func (r *runner) settings() Settings {
	return Settings{
		LatencyRounds: r.p.rounds, LatencyPerRound: r.p.perRound,
		LoadWarmupS: r.p.loadWarm.Seconds(), LoadDurationS: r.p.loadDur.Seconds(), Concurrency: r.p.conc,
		ColdSamples: r.p.cold, BuildFirst: r.p.buildFirst, BuildCached: r.p.buildCached, IdleFunctions: r.p.idleFns, PayloadSizes: r.p.sizes, PayloadSamples: r.p.sizeN,
		LoadGenerator: "in process: one goroutine per connection, HTTP/1.1 keep-alive, requests written by hand, responses parsed by net/http; " +
			"the measured window starts after the warm-up once the pool has no instance starting",
		FloorClient: "the host's protocol client on a worker of its own (internal/call unary call, or one internal/stream stream), same request as Host.Invoke",
		ColdStartMeaning: "a fresh in-process host with the function alone and instances.min 0 (its runtime's standby worker ready, for runtimes that keep one); the HTTP connection is open before the clock starts; " +
			"the time is from sending the request to the full response",
	}
}

func (r *runner) progress(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "[%5.1fs] %s\n", time.Since(r.began).Seconds(), fmt.Sprintf(format, args...))
	}
}

func (r *runner) note(format string, args ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, args...))
}

func (r *runner) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Errors = append(r.rep.Errors, msg)
	r.progress("error: %s", msg)
}

func (r *runner) add(row Row) { r.rep.Rows = append(r.rep.Rows, row) }

// machine describes this machine.
func machine() Machine {
	m := Machine{
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), MemTotalMiB: memTotalMiB(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Polyfn: buildinfo.Version,
		Runtimes: map[string]string{},
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	for name, argv := range map[string][]string{"python3": {"python3", "--version"}, "node": {"node", "--version"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).Output(); err == nil {
			m.Runtimes[name] = strings.TrimSpace(string(out))
		}
	}
	return m
}

// inproc is a host running in this process behind a real HTTP listener.
type inproc struct {
	h    *host.Host
	srv  *httptrigger.Server
	addr string
}

// startHost starts a host for cfg in this process, serving the HTTP
// trigger on 127.0.0.1 as `polyfn serve` does.
func (r *runner) startHost(cfg *config.Config) (*inproc, error) {
	h, err := host.New(cfg, r.log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.Close(context.Background())
		return nil, err
	}
	h.Start()
	srv := httptrigger.NewServer(cfg.HTTP, r.log)
	go func() { _ = srv.Serve(ln, httptrigger.NewHandler(h, srv, h.MaxBody(), r.log)) }()
	return &inproc{h: h, srv: srv, addr: ln.Addr().String()}, nil
}

// stop stops the host and checks that none of its workers is left.
func (r *runner) stopHost(ih *inproc) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = ih.srv.Shutdown(ctx)
	ih.h.Close(ctx)
	r.reap(ih.h.RunDir())
}

// reap waits for the processes working under dir to be gone, and kills and
// reports those that are not.
func (r *runner) reap(dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := leftovers(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			r.fail("processes left behind under %s (killed now): %v", dir, left)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alone returns cfg with only fc (and the functions sharing its workers),
// with instances.min 0 when coldStart is set.
func alone(cfg *config.Config, fc config.Function, coldStart bool) *config.Config {
	sub := *cfg
	sub.Functions = nil
	for _, f := range cfg.Functions {
		if f.Name == fc.Name || (fc.App != "" && f.App == fc.App) {
			if coldStart {
				f.Instances.Min = 0
			}
			sub.Functions = append(sub.Functions, f)
		}
	}
	if coldStart && fc.App != "" {
		sub.Apps = map[string]config.App{}
		for k, a := range cfg.Apps {
			a.Instances.Min = 0
			sub.Apps[k] = a
		}
	}
	return &sub
}

func functionPath(name string) string { return "/function/" + name }

// function measures one function: it probes it, and runs the no-op rows
// unless it is an echo function.
func (r *runner) function(ctx context.Context, fc config.Function) (echo bool, err error) {
	rt := r.cfg.Effective(fc)
	base := Row{Function: fc.Name, Runtime: fc.Runtime, Protocol: string(rt.Protocol)}
	r.progress("%s (%s/%s): starting", fc.Name, fc.Runtime, rt.Protocol)
	ih, err := r.startHost(alone(r.cfg, fc, false))
	if err != nil {
		return false, err
	}
	stopped := false
	defer func() {
		if !stopped {
			r.stopHost(ih)
		}
	}()

	probe := r.payload[:probeSize]
	began := time.Now()
	res, err := r.firstInvoke(ctx, ih.h, fc.Name, probe)
	if err != nil {
		// Not an echo function: it may not take bytes. It must take nothing.
		if res, err = r.firstInvoke(ctx, ih.h, fc.Name, nil); err != nil {
			return false, fmt.Errorf("first invocation: %w", err)
		}
	}
	if bytes.Equal(res.Payload, probe) {
		r.progress("%s: echo function (first response after %s): payload rows later", fc.Name, time.Since(began).Round(time.Millisecond))
		return true, nil
	}
	r.progress("%s: first response after %s; latency rounds", fc.Name, time.Since(began).Round(time.Millisecond))

	if err := r.latency(ctx, ih, fc, base); err != nil {
		return false, err
	}
	r.instanceMemory(ctx, ih, fc, base)
	if best := r.throughput(ctx, ih, fc, base); best > 0 {
		r.cpu(ctx, ih, fc, base, best)
	}
	// Let instances still starting come up, so the host stops cleanly.
	for deadline := time.Now().Add(30 * time.Second); r.starting(ih, fc.Name) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	r.stopHost(ih)
	stopped = true
	r.coldStart(ctx, fc, base)
	return false, nil
}

// firstInvoke runs a function's first invocation, retrying timeouts (a Go
// function may still be building) within firstResponseTimeout.
func (r *runner) firstInvoke(ctx context.Context, h *host.Host, name string, payload []byte) (*invoke.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, firstResponseTimeout)
	defer cancel()
	for {
		res, err := h.Invoke(ctx, &invoke.Request{Function: name, Trigger: invoke.TriggerInvoke, Payload: payload})
		if err == nil || invoke.KindOf(err) != invoke.KindTimeout || ctx.Err() != nil {
			return res, err
		}
	}
}

// op is one way to invoke a function, timed by the latency rounds.
type op struct {
	name string
	call func() error
	lat  durations
	err  error
}

// latency measures the floor, the HTTP trigger, Host.Invoke (bare, and
// with the HTTP trigger's context) and the HTTP stack alone (/healthz) in
// alternating rounds, so that a noisy moment of the machine hits them all,
// and derives the host-added latency.
func (r *runner) latency(ctx context.Context, ih *inproc, fc config.Function, base Row) error {
	inst, err := ih.h.StartInstance(ctx, fc.Name, "bench-floor")
	if err != nil {
		return fmt.Errorf("start the floor's worker: %w", err)
	}
	defer inst.Stop(context.Background())
	timeout := fc.Timeout.D()
	cl := newClient(ih.addr)
	defer cl.close()
	path := functionPath(fc.Name)
	ops := []*op{
		{name: "floor", call: func() error {
			ictx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			_, err := inst.Invoke(ictx, &invoke.Request{ID: invoke.NewID(), Function: fc.Name, Trigger: invoke.TriggerInvoke, Timestamp: time.Now()})
			return err
		}},
		{name: "http", call: func() error { return cl.post(path) }},
		{name: "invoke", call: func() error {
			_, err := ih.h.Invoke(ctx, &invoke.Request{Function: fc.Name, Trigger: invoke.TriggerInvoke})
			return err
		}},
		// Host.Invoke with the context the HTTP trigger adds to an invocation
		// (this client's request as the trigger describes it): the cost of
		// carrying it, host and worker side, without HTTP.
		{name: "invoke-http", call: func() error {
			_, err := ih.h.Invoke(ctx, &invoke.Request{Function: fc.Name, Trigger: invoke.TriggerHTTP, HTTP: &invoke.HTTPInfo{
				Method: http.MethodPost, Path: path, Query: map[string]string{},
				Headers: map[string]string{"host": ih.addr, "content-length": "0"},
			}})
			return err
		}},
		// The HTTP stack alone on this machine: a round trip with no invocation.
		{name: "healthz", call: func() error {
			res, err := cl.do(http.MethodGet, "/healthz", nil, nil)
			if err != nil {
				return err
			}
			return res.err()
		}},
	}
	for _, o := range ops {
		for range r.p.warmup {
			if o.err = o.call(); o.err != nil {
				break
			}
		}
	}
	for round := range r.p.rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.progress("%s: latency round %d/%d", fc.Name, round+1, r.p.rounds)
		for _, o := range ops {
			stop := time.Now().Add(r.p.roundCap)
			for i := 0; i < r.p.perRound && o.err == nil && time.Now().Before(stop); i++ {
				t0 := time.Now()
				if err := o.call(); err != nil {
					o.err = err
					break
				}
				o.lat = append(o.lat, time.Since(t0))
			}
		}
	}
	floor, httpOp, inv, invHTTP, healthz := ops[0], ops[1], ops[2], ops[3], ops[4]
	row := func(o *op, section, label string, b *Budget) Row {
		x := base
		x.Section, x.Label, x.Budget = section, label, b
		x.Values = latencyValues(o.lat)
		if o.err != nil {
			x.Error = o.err.Error()
		}
		return x
	}
	r.add(row(floor, SectionFloor, "direct "+base.Protocol+" (internal/"+base.Protocol+")", nil))
	r.add(row(healthz, SectionFloor, "HTTP GET /healthz, no invocation", nil))
	r.add(row(httpOp, SectionWarm, "HTTP trigger", warmBudget(fc.Runtime)))
	r.add(row(inv, SectionWarm, "Host.Invoke", nil))
	r.add(row(invHTTP, SectionWarm, "Host.Invoke with HTTP context", nil))
	added := base
	added.Section, added.Label, added.Budget = SectionHostAdded, "HTTP minus floor", hostAddedBudget()
	hv, fv := latencyValues(httpOp.lat), latencyValues(floor.lat)
	added.Values = map[string]float64{
		"p50_us": round2(hv["p50_us"] - fv["p50_us"]),
		"p99_us": round2(hv["p99_us"] - fv["p99_us"]),
	}
	if err := errors.Join(floor.err, httpOp.err); err != nil {
		added.Error = err.Error()
	}
	r.add(added)
	if added.Values["p99_us"] < 0 {
		r.note("%s: host-added p99 is negative: it is the difference of two tails, and the floor's was the noisier", fc.Name)
	}
	return nil
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

// instanceMemory reports the RSS of the function's instances: the worker's
// whole process group, right after the latency rounds (a few thousand
// invocations) and again once they have had no invocation for idleWait, as
// an instance waits in its pool between bursts (each the mean over the
// instances live at that moment). The idle figure is the row's rss_mib.
func (r *runner) instanceMemory(ctx context.Context, ih *inproc, fc config.Function, base Row) {
	row := base
	row.Section, row.Label = SectionMemory, "RSS per idle instance"
	busy, n := r.meanInstanceRSS(ih, fc.Name)
	if n > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(idleWait):
		}
	}
	idle, m := r.meanInstanceRSS(ih, fc.Name)
	if n == 0 || m == 0 {
		row.Error = "no live instance to measure"
		row.Values = map[string]float64{}
	} else {
		row.Values = map[string]float64{"rss_mib": mib(idle), "after_load_rss_mib": mib(busy), "instances": float64(m)}
	}
	r.add(row)
}

// idleWait is how long instanceMemory lets instances rest before it reads
// their idle RSS.
const idleWait = 2 * time.Second

// meanInstanceRSS is the mean RSS in KiB of the function's live instances,
// and how many there are.
func (r *runner) meanInstanceRSS(ih *inproc, name string) (kb int64, n int) {
	var total int64
	for _, st := range ih.h.Status() {
		if st.Name != name {
			continue
		}
		for _, in := range st.Instances {
			if rss, procs := groupRSS(in.Pid); procs > 0 {
				total += rss
				n++
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	return total / int64(n), n
}

// starting returns how many instances of the function's pool are starting.
func (r *runner) starting(ih *inproc, name string) int {
	for _, st := range ih.h.Status() {
		if st.Name == name {
			return st.Starting
		}
	}
	return 0
}

// throughput runs the load generator at each concurrency point and returns
// the concurrency of the best one (0 if none was measured).
func (r *runner) throughput(ctx context.Context, ih *inproc, fc config.Function, base Row) int {
	path := functionPath(fc.Name)
	best := -1
	for _, c := range r.p.conc {
		if ctx.Err() != nil {
			return 0
		}
		r.progress("%s: throughput at concurrency %d", fc.Name, c)
		res := load(ctx, ih.addr, path, c, r.p.loadWarm, r.p.loadDur, func() bool { return r.starting(ih, fc.Name) == 0 })
		row := base
		row.Section, row.Label, row.Concurrency = SectionThroughput, fmt.Sprintf("c=%d", c), c
		row.Values = map[string]float64{
			"req_per_s": math.Round(float64(res.ok) / res.elapsed.Seconds()),
			"errors":    float64(res.errors),
		}
		if len(res.latencies) > 0 {
			s := res.latencies.sorted()
			row.Values["p50_us"], row.Values["p99_us"] = us(s.pct(0.5)), us(s.pct(0.99))
		}
		for _, st := range ih.h.Status() {
			if st.Name == fc.Name {
				row.Values["instances"] = float64(len(st.Instances))
			}
		}
		if res.errors > 0 {
			row.Error = fmt.Sprintf("%d of %d requests failed; first: %s", res.errors, res.ok+res.errors, res.firstError)
		}
		r.add(row)
		if best < 0 || row.Values["req_per_s"] > r.rep.Rows[best].Values["req_per_s"] {
			best = len(r.rep.Rows) - 1
		}
	}
	if best >= 0 {
		row := r.rep.Rows[best]
		row.Label = fmt.Sprintf("best (c=%d)", row.Concurrency)
		row.Budget = throughputBudget(fc.Runtime)
		row.Values = map[string]float64{"req_per_s": row.Values["req_per_s"], "errors": row.Values["errors"], "instances": row.Values["instances"]}
		r.add(row)
		return row.Concurrency
	}
	return 0
}

// coldStart measures no instance -> first response: each sample starts a
// fresh host with the function alone (instances.min 0), opens the HTTP
// connection, and times the first request.
func (r *runner) coldStart(ctx context.Context, fc config.Function, base Row) {
	row := base
	row.Section, row.Label, row.Budget = SectionColdStart, "first HTTP response", coldBudget(fc.Runtime)
	cfg := alone(r.cfg, fc, true)
	var lat durations
	var failure error
	r.progress("%s: %d cold starts", fc.Name, r.p.cold)
	for range r.p.cold {
		if ctx.Err() != nil {
			return
		}
		d, err := r.coldSample(cfg, fc)
		if err != nil {
			failure = err
			break
		}
		lat = append(lat, d)
	}
	row.Values = latencyValues(lat)
	delete(row.Values, "p99_us")
	if failure != nil {
		row.Error = failure.Error()
	}
	r.add(row)
}

func (r *runner) coldSample(cfg *config.Config, fc config.Function) (time.Duration, error) {
	ih, err := r.startHost(cfg)
	if err != nil {
		return 0, err
	}
	defer r.stopHost(ih)
	cl := newClient(ih.addr)
	defer cl.close()
	if _, err := cl.do(http.MethodGet, "/healthz", nil, nil); err != nil {
		return 0, err
	}
	time.Sleep(r.p.coldSettle) // let Start's background work (a Go build check) finish
	if rt := cfg.Effective(fc); rt.StandbyEnabled() {
		// The runtime keeps a standby worker: measure the cold start it serves.
		deadline := time.Now().Add(60 * time.Second)
		for !standbyReady(ih.h, rt) {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%s's standby worker was not ready within 60s", rt.Name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t0 := time.Now()
	err = cl.post(functionPath(fc.Name))
	return time.Since(t0), err
}

func standbyReady(h *host.Host, rt config.Runtime) bool {
	for _, s := range h.Standbys() {
		if s.Runtime == rt.Name && s.Protocol == rt.Protocol && s.Ready {
			return true
		}
	}
	return false
}

// idleMemory runs `polyfn serve` on a config of idleFns functions (Python,
// both protocols; no instance is started) and reads its RSS once idle.
func (r *runner) idleMemory(ctx context.Context) {
	row := Row{Section: SectionMemory, Label: fmt.Sprintf("host RSS idle, %d functions configured", r.p.idleFns), Budget: idleHostBudget(), Values: map[string]float64{}}
	defer func() { r.add(row) }()
	r.progress("host RSS idle with %d functions", r.p.idleFns)
	dir := filepath.Join(r.tmp, "idle")
	file, err := writeIdleConfig(dir, r.p.idleFns)
	if err != nil {
		row.Error = err.Error()
		return
	}
	srv, err := startServer(ctx, r.o.Serve, r.o.ServeEnv, file, filepath.Join(dir, "tmp"))
	if err != nil {
		row.Error = err.Error()
		return
	}
	defer func() { srv.stop(); r.reap(srv.tmp) }()
	time.Sleep(r.p.idleSettle)
	kb, err := statusKB(srv.pid(), "VmRSS")
	if err != nil {
		row.Error = err.Error()
		return
	}
	row.Values["rss_mib"] = mib(kb)
}

// writeIdleConfig writes a config of n no-op Python functions, half of them
// in each protocol.
func writeIdleConfig(dir string, n int) (string, error) {
	fn := filepath.Join(dir, "fn")
	if err := os.MkdirAll(fn, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(fn, "noop.py"), []byte("def handler(event, context):\n    return None\n"), 0o644); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("functions:\n")
	for i := range n {
		proto := ""
		if i%2 == 1 {
			proto = ", protocol: call"
		}
		fmt.Fprintf(&b, "  - {name: fn%03d, runtime: python3%s, handler: noop.handler, codedir: ./fn}\n", i, proto)
	}
	file := filepath.Join(dir, "polyfn.yaml")
	return file, os.WriteFile(file, []byte(b.String()), 0o644)
}

// payloads echoes each size through each echo function, each in a `polyfn
// serve` of the config of its own (so that a function's peak is not another
// function's leftover heap), and reads the host's peak RSS per size.
func (r *runner) payloads(ctx context.Context, echoes []config.Function) {
	for i, fc := range echoes {
		if ctx.Err() != nil {
			return
		}
		r.progress("%s: polyfn serve -c %s", fc.Name, r.cfg.File)
		srv, err := startServer(ctx, r.o.Serve, r.o.ServeEnv, r.cfg.File, filepath.Join(r.tmp, fmt.Sprintf("payload%d", i)))
		if err != nil {
			r.fail("%s: payload rows: %v", fc.Name, err)
			continue
		}
		if i == 0 {
			time.Sleep(r.p.idleSettle)
			idle := Row{Section: SectionMemory, Label: fmt.Sprintf("host RSS idle, this config (%d functions)", len(r.cfg.Functions)), Values: map[string]float64{}}
			if kb, err := statusKB(srv.pid(), "VmRSS"); err == nil {
				idle.Values["rss_mib"] = mib(kb)
			} else {
				idle.Error = err.Error()
			}
			r.add(idle)
		}
		r.payload1(ctx, srv, fc)
		srv.stop()
		r.reap(srv.tmp)
	}
}

func (r *runner) payload1(ctx context.Context, srv *server, fc config.Function) {
	rt := r.cfg.Effective(fc)
	base := Row{Section: SectionPayload, Function: fc.Name, Runtime: fc.Runtime, Protocol: string(rt.Protocol)}
	cl := newClient(srv.addr)
	defer cl.close()
	path := functionPath(fc.Name)
	// The first request starts the instance.
	if _, err := cl.do(http.MethodPost, path, r.payload[:probeSize], nil); err != nil {
		r.fail("%s: first request: %v", fc.Name, err)
	}
	peakOK := resetPeak(srv.pid()) == nil
	for i, size := range r.p.sizes {
		if ctx.Err() != nil {
			return
		}
		r.progress("%s: payload %s", fc.Name, sizeName(size))
		row := base
		row.Label, row.SizeBytes = sizeName(size), size
		lat, err := r.echo(cl, path, r.payload[:size], r.p.sizeN[i], srv.pid(), peakOK)
		s := lat.sorted()
		row.Values = map[string]float64{"samples": float64(len(s))}
		if len(s) > 0 {
			row.Values["p50_us"], row.Values["max_us"] = us(s.pct(0.5)), us(s[len(s)-1])
			row.Values["mib_per_s"] = 2 * float64(size) / (1 << 20) / s.pct(0.5).Seconds() // not rounded: 1 KiB under load is well below 1 MiB/s
		}
		if kb, err := statusKB(srv.pid(), "VmHWM"); err == nil {
			row.Values["host_peak_rss_mib"] = mib(kb)
		}
		if err != nil {
			row.Error = err.Error()
		}
		r.add(row)
	}
}

// echo sends payload n times (within sizeCap) and checks every answer is
// the payload; the host's peak RSS is reset first.
func (r *runner) echo(cl *client, path string, payload []byte, n, pid int, resetOK bool) (durations, error) {
	want := crc32.ChecksumIEEE(payload)
	// One untimed request, then the peak is reset and the samples run.
	if _, err := cl.do(http.MethodPost, path, payload, nil); err != nil {
		return nil, err
	}
	if resetOK {
		_ = resetPeak(pid)
	}
	var lat durations
	stop := time.Now().Add(r.p.sizeCap)
	for i := 0; i < n && (i == 0 || time.Now().Before(stop)); i++ {
		h := crc32.NewIEEE()
		t0 := time.Now()
		res, err := cl.do(http.MethodPost, path, payload, h)
		d := time.Since(t0)
		if err != nil {
			return lat, err
		}
		if err := res.err(); err != nil {
			return lat, err
		}
		if res.n != int64(len(payload)) || h.Sum32() != want {
			return lat, fmt.Errorf("the echo is not the payload: %d bytes back for %d", res.n, len(payload))
		}
		lat = append(lat, d)
	}
	return lat, nil
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func slicesMax(s []int) int {
	m := probeSize
	for _, v := range s {
		m = max(m, v)
	}
	return m
}
