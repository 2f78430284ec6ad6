package timer_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	rpc "github.com/polyfn/polyfn/api/azure"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/invoke"
	"github.com/polyfn/polyfn/internal/trigger"
	"github.com/polyfn/polyfn/internal/trigger/timer"
)

// azureWorkerEnv makes the test binary an official-like Azure Functions
// worker: "node" lists its functions itself (worker indexing, as the
// Node.js worker with a v4 app: generated binding names), "python" has the
// host read their function.json files (as the Python worker with a v1
// app). Each invocation is appended to the file $TICK_RECORDS as an
// appRecord, read as the official libraries read a timer's input.
const azureWorkerEnv = "POLYFN_TIMER_TEST_AZURE"

// appRecord is what the fake worker saw of one invocation.
type appRecord struct {
	Function string `json:"function"`
	Binding  string `json:"binding"`
	// DataType is the input's TypedData kind: the Python library refuses
	// a timer input that is not json.
	DataType string `json:"data_type"`
	// Info is the input's JSON; Node is it as the Node.js library hands it
	// to the handler (JSON.parse, then keys camel-cased).
	Info string         `json:"info"`
	Node map[string]any `json:"node"`
	// Metadata are the trigger metadata's keys and kinds.
	Metadata map[string]string `json:"metadata"`
	At       time.Time         `json:"at"`
}

// nodeTimerBindings are the raw bindings the Node.js v4 library writes for
// app.timer('tick', {schedule: '%TICK_SCHEDULE%', handler}) and for
// app.timer('daily', {schedule: '0 0 0 * * *', runOnStartup: true, handler}).
var nodeTimerBindings = map[string]string{
	"tick":  `{"type":"timerTrigger","schedule":"%TICK_SCHEDULE%","name":"timerTrigger1f2e3d4c5b","direction":"in"}`,
	"daily": `{"type":"timerTrigger","schedule":"0 0 0 * * *","runOnStartup":true,"name":"timerTrigger9a8b7c6d5e","direction":"in"}`,
}

func runFakeAzureTimerWorker(mode string) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	uri := fs.String("functions-uri", "", "")
	workerID := fs.String("functions-worker-id", "", "")
	for _, f := range []string{"functions-request-id", "functions-grpc-max-message-length", "host", "port", "workerId", "requestId", "grpcMaxMessageLength"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(os.Args[1:]); err != nil || *uri == "" {
		fmt.Fprintln(os.Stderr, "bad arguments:", err)
		os.Exit(2)
	}
	conn, err := grpc.NewClient(strings.TrimSuffix(strings.TrimPrefix(*uri, "http://"), "/"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		os.Exit(3)
	}
	st, err := rpc.NewFunctionRpcClient(conn).EventStream(context.Background())
	if err != nil {
		os.Exit(4)
	}
	var mu sync.Mutex
	send := func(m *rpc.StreamingMessage) {
		mu.Lock()
		defer mu.Unlock()
		_ = st.Send(m)
	}
	send(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_StartStream{StartStream: &rpc.StartStream{WorkerId: *workerID}}})
	ok := &rpc.StatusResult{Status: rpc.StatusResult_Success}
	loaded := map[string]*rpc.RpcFunctionMetadata{}
	for {
		m, err := st.Recv()
		if err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "stream ended:", err)
			}
			os.Exit(0)
		}
		switch x := m.Content.(type) {
		case *rpc.StreamingMessage_WorkerInitRequest:
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_WorkerInitResponse{WorkerInitResponse: &rpc.WorkerInitResponse{
				Result: ok, Capabilities: map[string]string{"RpcHttpBodyOnly": "true", "TypedDataCollection": "true"}}}})
		case *rpc.StreamingMessage_FunctionsMetadataRequest:
			r := &rpc.FunctionMetadataResponse{Result: ok}
			if mode == "node" {
				for _, name := range []string{"tick", "daily"} {
					r.FunctionMetadataResults = append(r.FunctionMetadataResults, &rpc.RpcFunctionMetadata{
						Name: name, FunctionId: "node-" + name, Directory: x.FunctionsMetadataRequest.FunctionAppDirectory,
						ScriptFile: "src/index.js", Language: "node", RawBindings: []string{nodeTimerBindings[name]}})
				}
			} else {
				r.UseDefaultMetadataIndexing = true
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionMetadataResponse{FunctionMetadataResponse: r}})
		case *rpc.StreamingMessage_FunctionLoadRequest:
			loaded[x.FunctionLoadRequest.FunctionId] = x.FunctionLoadRequest.Metadata
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: &rpc.FunctionLoadResponse{
				FunctionId: x.FunctionLoadRequest.FunctionId, Result: ok}}})
		case *rpc.StreamingMessage_InvocationRequest:
			resp := &rpc.InvocationResponse{InvocationId: x.InvocationRequest.InvocationId, Result: ok}
			if err := recordTimer(loaded[x.InvocationRequest.FunctionId], x.InvocationRequest); err != nil {
				resp.Result = &rpc.StatusResult{Status: rpc.StatusResult_Failure, Exception: &rpc.RpcException{Message: err.Error()}}
			}
			send(&rpc.StreamingMessage{RequestId: m.RequestId, Content: &rpc.StreamingMessage_InvocationResponse{InvocationResponse: resp}})
		}
	}
}

// recordTimer reads a timer invocation as the official libraries do and
// appends what it saw to $TICK_RECORDS.
func recordTimer(md *rpc.RpcFunctionMetadata, req *rpc.InvocationRequest) error {
	if md == nil || len(req.InputData) != 1 {
		return errors.New("unknown function or not one input")
	}
	in := req.InputData[0]
	if b := md.Bindings[in.Name]; b == nil || b.Type != "timerTrigger" {
		return fmt.Errorf("input %q is not the timer trigger binding", in.Name)
	}
	r := appRecord{Function: md.Name, Binding: in.Name, Metadata: map[string]string{}, At: time.Now()}
	switch d := in.GetData().GetData().(type) {
	case *rpc.TypedData_Json:
		r.DataType, r.Info = "json", d.Json
		var v any
		if err := json.Unmarshal([]byte(d.Json), &v); err != nil {
			return err
		}
		r.Node, _ = camel(v).(map[string]any)
	default:
		r.DataType = fmt.Sprintf("%T", d)
	}
	for k, v := range req.TriggerMetadata {
		r.Metadata[k] = fmt.Sprintf("%T", v.GetData())
	}
	line, _ := json.Marshal(r)
	f, err := os.OpenFile(os.Getenv("TICK_RECORDS"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(line, '\n'))
	return err
}

// camel lower-cases the first letter of every key, as the Node.js
// library's toCamelCaseValue does to a timer's input.
func camel(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[strings.ToLower(k[:1])+k[1:]] = camel(e)
		}
		return out
	case []any:
		for i := range x {
			x[i] = camel(x[i])
		}
	}
	return v
}

const azureTimerConfig = `
runtimes:
  fake-azure:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_TIMER_TEST_AZURE: MODE}
functions:
  - name: clock
    runtime: fake-azure
    codedir: "{app}"
    env: {TICK_SCHEDULE: "*/1 * * * * *", TICK_RECORDS: "{records}"}
`

// startApp starts a host of an app served by the fake worker in mode,
// recording into records, without triggers; extra is appended to the
// config's functions.
func startApp(t *testing.T, mode, records, extra string) *hosttest.Host {
	t.Helper()
	if err := os.WriteFile(records, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(records, 0o666); err != nil {
		t.Fatal(err)
	}
	app := t.TempDir()
	if mode == "python" {
		files := map[string]string{
			"host.json":          `{"version": "2.0"}`,
			"Tick/__init__.py":   "def main(mytimer): ...\n",
			"Tick/function.json": `{"scriptFile": "__init__.py", "bindings": [{"name": "mytimer", "type": "timerTrigger", "direction": "in", "schedule": "%TICK_SCHEDULE%"}]}`,
		}
		if err := os.Mkdir(filepath.Join(app, "Tick"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(app, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	self := hosttest.Self(t)
	return hosttest.Start(t, t.TempDir(), strings.Replace(azureTimerConfig, "MODE", mode, 1)+extra,
		"{self}", self, "{app}", app, "{records}", records, "{codedir}", t.TempDir())
}

// startAppTimers starts a timer trigger gated by leader (nil: none) on th.
func startAppTimers(t *testing.T, th *hosttest.Host, leader timer.Leader) *timer.Trigger {
	t.Helper()
	tr := timer.New(th.Metrics(), leader, slog.New(slog.NewTextHandler(th.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := tr.Start(trigger.Generation{Config: th.Config, Host: th.Host}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Stop(context.Background()) })
	return tr
}

// readAppRecords returns the complete records of function name.
func readAppRecords(t *testing.T, path, name string) []appRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []appRecord
	lines := strings.Split(string(b), "\n")
	for _, line := range lines[:len(lines)-1] { // the last is not complete yet
		var r appRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		if r.Function == name {
			out = append(out, r)
		}
	}
	return out
}

func waitAppRecords(t *testing.T, path, name string, n int) []appRecord {
	t.Helper()
	hosttest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d invocations of %s", n, name), func() bool { return len(readAppRecords(t, path, name)) >= n })
	return readAppRecords(t, path, name)
}

// TestAppTimerFires runs a Node.js v4-like app with two timer functions:
// tick, every second by a %Setting% schedule, fires repeatedly with the
// timer info the official host sends, as the Node.js library reads it;
// daily, at midnight with runOnStartup, fires once as the timer starts,
// with the schedule status of a run on startup. The invocations are counted
// in the metrics under the function's name, and the app's status lists its
// timers with their schedule and next tick.
func TestAppTimerFires(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	th := startApp(t, "node", records, "")
	startAppTimers(t, th, nil)

	rs := waitAppRecords(t, records, "tick", 3)
	for _, r := range rs {
		if r.Binding != "timerTrigger1f2e3d4c5b" || r.DataType != "json" {
			t.Errorf("input %q as %s; want the trigger binding's name as json", r.Binding, r.DataType)
		}
		if pd, ok := r.Node["isPastDue"].(bool); !ok || pd {
			t.Errorf("timer.isPastDue is %v; want false: %s", r.Node["isPastDue"], r.Info)
		}
		if dst, _ := r.Node["schedule"].(map[string]any)["adjustForDST"].(bool); !dst {
			t.Errorf("timer.schedule.adjustForDST is not true: %s", r.Info)
		}
		if st, ok := r.Node["scheduleStatus"]; !ok || st != nil {
			t.Errorf("an every-second schedule has scheduleStatus %v; the official host sends null: %s", st, r.Info)
		}
		if r.Metadata["TimerTrigger"] != "*azure.TypedData_String_" || r.Metadata["sys"] != "*azure.TypedData_Json" {
			t.Errorf("trigger metadata %v; want TimerTrigger (string) and sys (json)", r.Metadata)
		}
	}

	daily := waitAppRecords(t, records, "daily", 1)
	var info struct {
		ScheduleStatus struct{ Last, Next, LastUpdated string }
		IsPastDue      bool
	}
	if err := json.Unmarshal([]byte(daily[0].Info), &info); err != nil {
		t.Fatal(err)
	}
	next, err := time.Parse(time.RFC3339, info.ScheduleStatus.Next)
	if info.ScheduleStatus.Last != "0001-01-01T00:00:00+00:00" || info.ScheduleStatus.LastUpdated != info.ScheduleStatus.Last ||
		err != nil || !next.After(daily[0].At) || next.Sub(daily[0].At) > 24*time.Hour || next.In(time.Local).Hour() != 0 {
		t.Errorf("run on startup: schedule status %+v; want Last and LastUpdated 0001-01-01, Next the coming midnight", info.ScheduleStatus)
	}
	if n := counter(t, th.Metrics(), "polyfn_invocations_total", map[string]string{"function": "tick", "trigger": "timer", "outcome": "success"}); n < 3 {
		t.Errorf("%v successful timer invocations of tick counted, want at least 3", n)
	}

	var timers []string
	for _, a := range th.AppStatus() {
		for _, tm := range a.Timers {
			if !tm.Next.After(time.Now().Add(-time.Second)) {
				t.Errorf("timer %s: next tick %v is in the past", tm.Function, tm.Next)
			}
			timers = append(timers, a.Name+"/"+tm.Function+" "+tm.Schedule)
		}
	}
	if got := strings.Join(timers, "; "); got != "clock/tick */1 * * * * *; clock/daily 0 0 0 * * *" {
		t.Errorf("status lists timers %q", got)
	}
	if len(readAppRecords(t, records, "daily")) != 1 {
		t.Errorf("daily ran more than once")
	}
}

// TestAppTimerFunctionJSON runs a function.json app (host indexing, as the
// Python worker's v1 model): its timer fires with the input under the
// binding's declared name as json, as azure.functions.TimerRequest reads it.
func TestAppTimerFunctionJSON(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	th := startApp(t, "python", records, "")
	startAppTimers(t, th, nil)
	for _, r := range waitAppRecords(t, records, "Tick", 2) {
		var info map[string]any
		if err := json.Unmarshal([]byte(r.Info), &info); err != nil || r.Binding != "mytimer" || r.DataType != "json" {
			t.Fatalf("input %q as %s: %s (%v)", r.Binding, r.DataType, r.Info, err)
		}
		if info["IsPastDue"] != false || info["Schedule"] == nil {
			t.Errorf("timer info %s; want IsPastDue false and Schedule", r.Info)
		}
	}
}

// leader is a replica's leadership, set by the test.
type leader struct{ on atomic.Bool }

func (l *leader) IsLeader() bool { return l.on.Load() }

// TestAppTimerLeaderGating: while this replica does not lead, neither the
// ticks nor the run on startup fire (the trigger says so at debug); once it
// leads, the ticks fire.
func TestAppTimerLeaderGating(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	th := startApp(t, "node", records, "")
	l := &leader{}
	startAppTimers(t, th, l)
	hosttest.WaitFor(t, 30*time.Second, "two ticks of tick held back", func() bool {
		return strings.Count(th.Logs.String(), `msg="timer tick not fired: another replica leads" function=tick app=clock`) >= 2
	})
	if !strings.Contains(th.Logs.String(), `msg="timer run on startup not fired: another replica leads" function=daily app=clock`) {
		t.Errorf("the run on startup of daily is not said to be held back")
	}
	if n := len(readAppRecords(t, records, "tick")) + len(readAppRecords(t, records, "daily")); n != 0 {
		t.Fatalf("%d invocations while another replica leads", n)
	}
	l.on.Store(true)
	waitAppRecords(t, records, "tick", 2)
}

// TestAppTimerStopsWhenTheAppGoes applies a configuration without the app,
// as a reload that removes it does: its timers stop while the new
// configuration's run.
func TestAppTimerStopsWhenTheAppGoes(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	old := startApp(t, "node", records, "")
	tr := startAppTimers(t, old, nil)
	waitAppRecords(t, records, "tick", 2)

	goRecords := filepath.Join(hosttest.Writable(t, t.TempDir()), "go-records")
	cur := newHost(t, goRecords, fn("other", "call", `{schedule: "@every 500ms"}`))
	tr.Apply(trigger.Generation{Config: cur.Config, Host: cur.Host})
	before := len(readAppRecords(t, records, "tick"))
	waitRecords(t, goRecords, "other", 4) // two seconds of the new configuration
	if after := len(readAppRecords(t, records, "tick")); after > before+1 {
		t.Errorf("the removed app's timer ran %d more times after the reload", after-before)
	}
}

// TestAppTimerBrokenSchedule: a schedule whose %Setting% is not set leaves
// that function's timer out and lists it as broken, naming function,
// binding and schedule; the app's other timer runs.
func TestAppTimerBrokenSchedule(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	if err := os.WriteFile(records, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(records, 0o666); err != nil {
		t.Fatal(err)
	}
	config := strings.Replace(strings.Replace(azureTimerConfig, "MODE", "node", 1), `TICK_SCHEDULE: "*/1 * * * * *", `, "", 1)
	th := hosttest.Start(t, t.TempDir(), config, "{self}", hosttest.Self(t), "{app}", t.TempDir(), "{records}", records)
	startAppTimers(t, th, nil)
	waitAppRecords(t, records, "daily", 1)
	want := `function "tick": binding "timerTrigger1f2e3d4c5b": schedule "%TICK_SCHEDULE%": app setting "TICK_SCHEDULE" is not set`
	var broken []string
	for _, a := range th.AppStatus() {
		broken = append(broken, a.Broken...)
		for _, tm := range a.Timers {
			if tm.Function == "tick" {
				t.Errorf("tick has a timer: %+v", tm)
			}
		}
	}
	if len(broken) != 1 || !strings.HasPrefix(broken[0], want) {
		t.Errorf("broken %q; want one starting %q", broken, want)
	}
}

// recorder is an Invoker that keeps the requests.
type recorder struct {
	mu   sync.Mutex
	reqs []*invoke.Request
}

func (r *recorder) Invoke(_ context.Context, req *invoke.Request) (*invoke.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	return &invoke.Result{}, nil
}

func (r *recorder) requests() []*invoke.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

// grid ticks every 200ms.
type grid struct{}

func (grid) Next(t time.Time) time.Time {
	return t.Truncate(200 * time.Millisecond).Add(200 * time.Millisecond)
}

// TestAppTimerTicks checks what an app timer's invocations carry: the app
// and function, trigger timer, and the tick the payload is built from —
// the run on startup first, then the ticks, each with the previous run as
// Last.
func TestAppTimerTicks(t *testing.T) {
	rec := &recorder{}
	s := timer.NewScheduler(timer.Options{
		Invoker: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Apps: []timer.AppTimer{{App: "clock", Function: "tick", Spec: "grid", Schedule: grid{}, RunOnStartup: true,
			Payload: func(tk timer.Tick) []byte { b, _ := json.Marshal(tk); return b }}},
		Startup: func(string) bool { return true },
	})
	s.Start()
	defer s.Stop()
	hosttest.WaitFor(t, 30*time.Second, "three runs", func() bool { return len(rec.requests()) >= 3 })
	var prev timer.Tick
	for i, req := range rec.requests()[:3] {
		var tk timer.Tick
		if err := json.Unmarshal(req.Payload, &tk); err != nil {
			t.Fatal(err)
		}
		if req.App != "clock" || req.Function != "tick" || req.Trigger != invoke.TriggerTimer || !req.Timestamp.Equal(tk.Scheduled) {
			t.Errorf("run %d: app %q function %q trigger %q timestamp %v; want clock, tick, timer, the tick's %v", i, req.App, req.Function, req.Trigger, req.Timestamp, tk.Scheduled)
		}
		if tk.Startup != (i == 0) {
			t.Errorf("run %d: startup %v", i, tk.Startup)
		}
		if !tk.Last.Equal(prev.Scheduled) {
			t.Errorf("run %d: last %v, want the previous run's %v", i, tk.Last, prev.Scheduled)
		}
		prev = tk
	}
}
