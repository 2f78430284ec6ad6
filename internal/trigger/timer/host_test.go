package timer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/metrics"
	"github.com/polyfn/polyfn/internal/trigger"
	"github.com/polyfn/polyfn/internal/trigger/timer"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// The worker is this test binary re-executed with workerEnv set: a Go
// function (the Go SDK speaks both protocols) that appends a record of each
// invocation to the file named by recordsEnv.
const (
	workerEnv  = "POLYFN_TIMER_TEST_WORKER"
	recordsEnv = "POLYFN_TIMER_TEST_RECORDS"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(azureWorkerEnv); mode != "" {
		runFakeAzureTimerWorker(mode)
		return
	}
	if os.Getenv(workerEnv) != "" {
		polyfn.Start(work)
	}
	os.Exit(m.Run())
}

// record is what the worker saw of one invocation.
type record struct {
	Function  string    `json:"function"`
	Trigger   string    `json:"trigger"`
	Scheduled time.Time `json:"scheduled"`
	Timestamp int64     `json:"timestamp"`
	Payload   string    `json:"payload"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
}

var recordMu sync.Mutex

// work runs one invocation: a payload "sleep:D" sleeps D.
func work(ctx context.Context, ev polyfn.Event) (any, error) {
	c := polyfn.FromContext(ctx)
	r := record{Function: c.FunctionName, Trigger: c.Trigger, Scheduled: c.ScheduledTime, Timestamp: c.MessageTimestamp,
		Payload: string(ev.Raw()), Start: time.Now()}
	if d, ok := strings.CutPrefix(r.Payload, "sleep:"); ok {
		p, err := time.ParseDuration(d)
		if err != nil {
			return nil, err
		}
		time.Sleep(p)
	}
	r.End = time.Now()
	line, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(os.Getenv(recordsEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	_, err = f.Write(append(line, '\n'))
	return nil, err
}

// workerFunction is a function entry run by the worker; {records} is the
// records file and PROTOCOL the protocol (stream, the go runtime's default,
// or call).
const workerFunction = `
  - name: NAME
    runtime: go
    protocol: PROTOCOL
    handler: "{self}"
    codedir: "{codedir}"
    env: {POLYFN_TIMER_TEST_WORKER: "1", POLYFN_TIMER_TEST_RECORDS: "{records}"}
    triggers:
      timer:`

// fn returns a function entry named name, in protocol, with the timers
// given as YAML flow mappings.
func fn(name, protocol string, timers ...string) string {
	s := strings.NewReplacer("NAME", name, "PROTOCOL", protocol).Replace(workerFunction)
	for _, t := range timers {
		s += "\n        - " + t
	}
	return s
}

// startHost starts a host of the functions, whose workers append to
// records, and a timer trigger on it.
func startHost(t *testing.T, records string, functions ...string) *hosttest.Host {
	t.Helper()
	th := newHost(t, records, functions...)
	startTimers(t, th)
	return th
}

// startTimers starts a timer trigger on th's configuration, stopped when
// the test ends.
func startTimers(t *testing.T, th *hosttest.Host) *timer.Trigger {
	t.Helper()
	tr := timer.New(th.Metrics(), nil, slog.New(slog.NewTextHandler(th.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := tr.Start(trigger.Generation{Config: th.Config, Host: th.Host}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Stop(context.Background()) })
	return tr
}

// newHost starts a host of the functions, whose workers append to records.
func newHost(t *testing.T, records string, functions ...string) *hosttest.Host {
	// Workers of users of their own append to it.
	if err := os.WriteFile(records, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(records, 0o666); err != nil {
		t.Fatal(err)
	}
	t.Helper()
	self := hosttest.Self(t)
	return hosttest.Start(t, t.TempDir(), "functions:"+strings.Join(functions, ""),
		"{self}", self, "{codedir}", t.TempDir(), "{records}", records)
}

// readRecords returns the complete records of function name, by start time.
func readRecords(t *testing.T, path, name string) []record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1] // a line being written is not complete yet
	} else {
		b = nil
	}
	var out []record
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		if r.Function == name {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// waitRecords waits until function name has at least n records.
func waitRecords(t *testing.T, path, name string, n int) []record {
	t.Helper()
	hosttest.WaitFor(t, 30*time.Second, "invocations of "+name, func() bool { return len(readRecords(t, path, name)) >= n })
	return readRecords(t, path, name)
}

// counter sums the samples of a counter whose labels include want.
func counter(t *testing.T, m *metrics.Metrics, family string, want map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	samples:
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue samples
				}
			}
			sum += s.GetCounter().GetValue()
		}
	}
	return sum
}

// TestEveryFiresOnItsTicks checks, in both protocols, that @every 200ms
// fires repeatedly and that each invocation's context says trigger timer,
// carries the payload, and has a scheduled time that is a tick of the
// schedule (a multiple of 200ms, not the moment it fired), equal to the
// timestamp in seconds.
func TestEveryFiresOnItsTicks(t *testing.T) {
	for _, protocol := range []string{"stream", "call"} {
		t.Run(protocol, func(t *testing.T) {
			records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
			startHost(t, records, fn("ticker", protocol, `{schedule: "@every 200ms", payload: hello}`))
			rs := waitRecords(t, records, "ticker", 5)
			seen := map[time.Time]bool{}
			for _, r := range rs {
				if r.Trigger != "timer" || r.Payload != "hello" {
					t.Errorf("trigger %q, payload %q; want timer, hello", r.Trigger, r.Payload)
				}
				if r.Scheduled.IsZero() || r.Scheduled.UnixNano()%int64(200*time.Millisecond) != 0 {
					t.Errorf("scheduled time %v is not a tick of @every 200ms", r.Scheduled)
				}
				if r.Timestamp != r.Scheduled.Unix() {
					t.Errorf("timestamp %d, want the scheduled time in seconds, %d", r.Timestamp, r.Scheduled.Unix())
				}
				if r.Start.Before(r.Scheduled) {
					t.Errorf("tick %v ran before its time, at %v", r.Scheduled, r.Start)
				}
				if seen[r.Scheduled] {
					t.Errorf("tick %v ran twice", r.Scheduled)
				}
				seen[r.Scheduled] = true
			}
		})
	}
}

// TestTimerFiresOnScheduleWithoutOverlap runs a function that takes longer
// than its period: without overlap its runs never overlap and the ticks
// that come meanwhile are skipped and counted; with overlap: true they run
// at the same time.
func TestTimerFiresOnScheduleWithoutOverlap(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	th := startHost(t, records,
		fn("serial", "call", `{schedule: "@every 200ms", payload: "sleep:700ms"}`),
		fn("parallel", "call", `{schedule: "@every 200ms", payload: "sleep:700ms", overlap: true}`))

	hosttest.WaitFor(t, 30*time.Second, "two runs of parallel to overlap", func() bool {
		rs := readRecords(t, records, "parallel")
		for i := 1; i < len(rs); i++ {
			if rs[i].Start.Before(rs[i-1].End) {
				return true
			}
		}
		return false
	})
	rs := waitRecords(t, records, "serial", 3)
	for i := 1; i < len(rs); i++ {
		if rs[i].Start.Before(rs[i-1].End) {
			t.Errorf("run %d (tick %v) started at %v, before run %d ended at %v", i, rs[i].Scheduled, rs[i].Start, i-1, rs[i-1].End)
		}
	}
	if n := counter(t, th.Metrics(), "polyfn_timer_ticks_skipped_total", map[string]string{"function": "serial"}); n < 2 {
		t.Errorf("serial: %v ticks counted as skipped, want at least 2", n)
	}
	if n := counter(t, th.Metrics(), "polyfn_timer_ticks_skipped_total", map[string]string{"function": "parallel"}); n != 0 {
		t.Errorf("parallel: %v ticks skipped, want none", n)
	}
	if !strings.Contains(th.Logs.String(), `msg="timer tick skipped: the previous run of this schedule is still going" function=serial schedule="@every 200ms"`) {
		t.Errorf("the skipped tick is not logged with function and schedule")
	}
}

// TestCronWithSeconds checks six-field cron expressions, in local time and
// in a named time zone: they fire on whole seconds.
func TestCronWithSeconds(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	startHost(t, records, fn("cron", "stream", `{schedule: "*/1 * * * * *", payload: local}`, `{schedule: "CRON_TZ=UTC */1 * * * * *", payload: utc}`))
	hosttest.WaitFor(t, 30*time.Second, "two runs of each schedule", func() bool {
		n := map[string]int{}
		for _, r := range readRecords(t, records, "cron") {
			n[r.Payload]++
		}
		return n["local"] >= 2 && n["utc"] >= 2
	})
	for _, r := range readRecords(t, records, "cron") {
		if r.Trigger != "timer" || r.Scheduled.Nanosecond() != 0 || r.Timestamp != r.Scheduled.Unix() {
			t.Errorf("%s: trigger %q, scheduled %v, timestamp %d; want timer on a whole second", r.Payload, r.Trigger, r.Scheduled, r.Timestamp)
		}
	}
}

// TestApplyMovesTheTimers runs the timers of one configuration, then gives
// the trigger a second one, as a reload does while the old host still
// runs: from then on the ticks run on the new host only, each once, and
// the old host, drained afterwards, logs no failed tick.
func TestApplyMovesTheTimers(t *testing.T) {
	records := filepath.Join(hosttest.Writable(t, t.TempDir()), "records")
	entry := fn("reloaded", "call", `{schedule: "@every 200ms"}`)
	old := newHost(t, records, entry)
	tr := startTimers(t, old)
	waitRecords(t, records, "reloaded", 2)
	cur := newHost(t, records, entry)
	tr.Apply(trigger.Generation{Config: cur.Config, Host: cur.Host})
	timerRuns := map[string]string{"function": "reloaded", "trigger": "timer"}
	hosttest.WaitFor(t, 30*time.Second, "the new host to run a tick", func() bool {
		return counter(t, cur.Metrics(), "polyfn_invocations_total", timerRuns) >= 1
	})

	moved := counter(t, old.Metrics(), "polyfn_invocations_total", timerRuns)
	before := counter(t, cur.Metrics(), "polyfn_invocations_total", timerRuns)
	// The running host is the clock: five of its ticks, none of the old one's.
	hosttest.WaitFor(t, 30*time.Second, "five more ticks of the running host", func() bool {
		return counter(t, cur.Metrics(), "polyfn_invocations_total", timerRuns) >= before+5
	})
	if n := counter(t, old.Metrics(), "polyfn_invocations_total", timerRuns); n != moved {
		t.Errorf("the old host ran %v more timer invocations after Apply", n-moved)
	}
	old.Close(context.Background())
	seen := map[time.Time]bool{}
	for _, r := range readRecords(t, records, "reloaded") {
		if seen[r.Scheduled] {
			t.Errorf("tick %v ran twice", r.Scheduled)
		}
		seen[r.Scheduled] = true
	}
	if strings.Contains(old.Logs.String(), "timer invocation failed") {
		t.Errorf("a tick of the old host failed:\n%s", old.Logs.String())
	}
}

// TestInvalidScheduleIsAConfigError checks that a schedule the timer cannot
// run is a config error naming file, line, column and key.
func TestInvalidScheduleIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	text := `functions:
  - name: a
    handler: a.h
    codedir: .
    triggers:
      timer:
        - schedule: "every 5 minutes"
        - {schedule: "@every 5", payload: x}
        - schedule: "CRON_TZ=Mars/Olympus_Mons 0 * * * *"
        - schedule: "*/15 * * * *"
        - schedule: "0 0 30 2 *"
`
	path := filepath.Join(dir, "polyfn.yaml")
	_, err := config.Parse(path, []byte(text))
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v, want config errors", err)
	}
	want := []string{
		path + `:7:21: functions[0].triggers.timer[0].schedule: invalid schedule "every 5 minutes": expected 5 to 6 fields, found 3`,
		path + `:8:22: functions[0].triggers.timer[1].schedule: invalid schedule "@every 5": @every: invalid duration "5"`,
		path + `:9:21: functions[0].triggers.timer[2].schedule: invalid schedule "CRON_TZ=Mars/Olympus_Mons 0 * * * *": unknown time zone "Mars/Olympus_Mons"`,
		path + `:11:21: functions[0].triggers.timer[4].schedule: invalid schedule "0 0 30 2 *": no date matches it`,
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("errors:\n%v\nwant one starting %q", err, w)
		}
	}
}
