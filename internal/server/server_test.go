package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/testlog"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
	"github.com/polyfn/polyfn/internal/trigger/timer"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// The worker is this test binary re-executed with workerEnv set: a Go
// function that answers and records which configuration (GEN) ran it and
// for which trigger.
const workerEnv = "POLYFN_SERVER_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		polyfn.Start(work)
	}
	os.Exit(m.Run())
}

// record is what the worker saw of one invocation.
type record struct {
	Gen     string    `json:"gen"`
	Trigger string    `json:"trigger"`
	Start   time.Time `json:"start"`
}

var recordMu sync.Mutex

func work(ctx context.Context, _ polyfn.Event) (any, error) {
	r := record{Gen: os.Getenv("GEN"), Trigger: polyfn.FromContext(ctx).Trigger, Start: time.Now()}
	line, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(os.Getenv("RECORDS"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return nil, err
	}
	return r, nil
}

// configText is a configuration of one function that every trigger
// invokes: HTTP, an MQTT rule and a timer; GEN names the configuration.
const configText = `mqtt: {persist: false}
functions:
  - name: echo
    runtime: go
    handler: "{self}"
    codedir: "{codedir}"
    env: {POLYFN_SERVER_TEST_WORKER: "1", RECORDS: "{records}", GEN: "{gen}"}
    triggers:
      mqtt: [{subscribe: {topic: srv/in, qos: 1}, publish: {topic: srv/out, qos: 1}}]
      timer: [{schedule: "@every 200ms"}]
`

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for _, line := range strings.Split(string(b), "\n") {
		var r record
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

func count(rs []record, gen, trigger string) int {
	n := 0
	for _, r := range rs {
		if r.Gen == gen && r.Trigger == trigger {
			n++
		}
	}
	return n
}

// TestReloadMovesEveryTrigger runs a server whose function every trigger
// invokes, then reloads a configuration that changes it: through the one
// trigger lifecycle, HTTP requests, MQTT messages and timer ticks all go
// to the new configuration once Reload returns, the old one's timer stops
// ticking, and the invocation counter goes on from where it was.
func TestReloadMovesEveryTrigger(t *testing.T) {
	dir := hosttest.Writable(t, t.TempDir())
	records := filepath.Join(dir, "records")
	if err := os.WriteFile(records, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(records, 0o666); err != nil {
		t.Fatal(err)
	}
	codedir := t.TempDir()
	hosttest.Reachable(t, codedir)
	file := filepath.Join(dir, "polyfn.yaml")
	write := func(gen string) {
		text := strings.NewReplacer("{self}", hosttest.Self(t), "{codedir}", codedir, "{records}", records, "{gen}", gen).Replace(configText)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	logs := &testlog.Buffer{}
	o := Options{File: file, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", StateDir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	cfg, err := LoadConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	var runDirs []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		hosttest.WaitFor(t, 5*time.Second, "every worker process to be gone", func() bool {
			for _, d := range runDirs {
				if len(hosttest.Leftovers(d)) > 0 {
					return false
				}
			}
			return true
		})
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	runDirs = append(runDirs, s.current.Load().h.RunDir())

	// Every trigger is one of the three kinds, behind the one interface.
	kinds := map[string]bool{}
	for _, tr := range s.triggers {
		switch tr.(type) {
		case *httptrigger.Trigger:
			kinds["http"] = true
		case *mqtttrigger.Trigger:
			kinds["mqtt"] = true
		case *timer.Trigger:
			kinds["timer"] = true
		}
	}
	if len(kinds) != 3 || len(s.triggers) != 3 {
		t.Fatalf("the server runs triggers %v (%d), want http, mqtt and timer", kinds, len(s.triggers))
	}

	base := "http://" + s.Addr().String()
	call := func() record {
		t.Helper()
		resp, err := http.Post(base+"/function/echo", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r record
		if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil {
			t.Fatalf("POST /function/echo: %d %s", resp.StatusCode, b)
		}
		return r
	}
	c := mqtttest.NewClient(t, s.broker.URL(), "srv/out")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.mqttTrig.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	lastGen := func() string {
		out := c.On("srv/out")
		if len(out) == 0 {
			return ""
		}
		var r record
		_ = json.Unmarshal(out[len(out)-1].Payload, &r)
		return r.Gen
	}

	if r := call(); r.Gen != "one" || r.Trigger != "http" {
		t.Fatalf("before the reload: HTTP ran %+v, want configuration one, trigger http", r)
	}
	c.Publish(t, "srv/in", 1, []byte("{}"))
	c.WaitFor(t, 20*time.Second, "the MQTT result of configuration one", func([]mqtttest.Message) bool { return lastGen() == "one" })
	hosttest.WaitFor(t, 20*time.Second, "a timer tick of configuration one", func() bool { return count(readRecords(t, records), "one", "timer") > 0 })
	httpRuns := map[string]string{"function": "echo", "trigger": "http"}
	before := counter(t, s, "polyfn_invocations_total", httpRuns)
	if before != 1 {
		t.Fatalf("polyfn_invocations_total{trigger=http} is %v, want 1", before)
	}

	write("two")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	runDirs = append(runDirs, s.current.Load().h.RunDir())

	if r := call(); r.Gen != "two" {
		t.Errorf("after the reload: HTTP ran configuration %q, want two", r.Gen)
	}
	if err := s.mqttTrig.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	c.Publish(t, "srv/in", 1, []byte("{}"))
	c.WaitFor(t, 20*time.Second, "the MQTT result of configuration two", func([]mqtttest.Message) bool { return lastGen() == "two" })
	hosttest.WaitFor(t, 20*time.Second, "a timer tick of configuration two", func() bool { return count(readRecords(t, records), "two", "timer") > 0 })
	// The old configuration's ticks have stopped: while three more ticks
	// run on the new one, it runs none.
	oldTicks := count(readRecords(t, records), "one", "timer")
	newTicks := count(readRecords(t, records), "two", "timer")
	hosttest.WaitFor(t, 20*time.Second, "three more ticks of configuration two", func() bool { return count(readRecords(t, records), "two", "timer") >= newTicks+3 })
	if n := count(readRecords(t, records), "one", "timer"); n != oldTicks {
		t.Errorf("configuration one ran %d timer ticks after the reload", n-oldTicks)
	}
	if strings.Contains(logs.String(), "timer invocation failed") {
		t.Error("a timer tick went to the drained configuration")
	}
	if n := counter(t, s, "polyfn_invocations_total", httpRuns); n != before+1 {
		t.Errorf("after the reload polyfn_invocations_total{trigger=http} is %v, want %v: the counter did not survive", n, before+1)
	}

	// A configuration that does not load leaves the running one serving.
	if err := os.WriteFile(file, []byte("functions: [{name: echo, handler: x, codedir: nowhere}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil {
		t.Error("a reload of a broken config succeeded")
	}
	if r := call(); r.Gen != "two" {
		t.Errorf("after a failed reload: HTTP ran configuration %q, want two", r.Gen)
	}
	if !strings.Contains(logs.String(), "reload: the config is invalid; the running one stays") {
		t.Error("the failed reload is not logged")
	}
}

// TestReloadForgetsRemovedFunctions checks that the series of a function a
// reload removed are deleted once the old configuration has drained, while
// those of the functions that stay go on.
func TestReloadForgetsRemovedFunctions(t *testing.T) {
	dir := t.TempDir()
	hosttest.Reachable(t, dir)
	file := filepath.Join(dir, "polyfn.yaml")
	fns := func(names ...string) string {
		var b strings.Builder
		b.WriteString("mqtt: {embedded: false}\nisolation: {user: host}\nruntimes:\n  fake: {protocol: call, command: [/bin/false]}\nfunctions:\n")
		for _, n := range names {
			fmt.Fprintf(&b, "  - {name: %s, runtime: fake, handler: h, codedir: .}\n", n)
		}
		return b.String()
	}
	if err := os.WriteFile(file, []byte(fns("stays", "goes")), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{File: file, Listen: "127.0.0.1:0", Log: slog.New(slog.DiscardHandler)}
	cfg, err := LoadConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	// No worker starts (/bin/false): the invocations fail, and are counted.
	for _, fn := range []string{"stays", "goes"} {
		resp, err := http.Post("http://"+s.Addr().String()+"/function/"+fn, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if counter(t, s, "polyfn_invocations_total", map[string]string{"function": "goes"}) != 1 {
		t.Fatal("the invocation of goes is not counted")
	}
	if err := os.WriteFile(file, []byte(fns("stays")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	hosttest.WaitFor(t, 20*time.Second, "the series of goes to be deleted", func() bool {
		return !hasSeries(t, s, "polyfn_invocations_total", map[string]string{"function": "goes"})
	})
	if n := counter(t, s, "polyfn_invocations_total", map[string]string{"function": "stays"}); n != 1 {
		t.Errorf("polyfn_invocations_total of stays is %v after the reload, want 1", n)
	}
}

// counter sums the samples of a counter family whose labels include want.
func counter(t *testing.T, s *Server, family string, want map[string]string) float64 {
	t.Helper()
	sum := 0.0
	samples(t, s, family, want, func(v float64) { sum += v })
	return sum
}

func hasSeries(t *testing.T, s *Server, family string, want map[string]string) bool {
	t.Helper()
	found := false
	samples(t, s, family, want, func(float64) { found = true })
	return found
}

func samples(t *testing.T, s *Server, family string, want map[string]string, f func(float64)) {
	t.Helper()
	mfs, err := s.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			f(m.GetCounter().GetValue())
		}
	}
}

// TestBusyListenNamesTheKey starts a server on an address that is taken:
// the error names the key that set it, so the user knows what to change.
func TestBusyListenNamesTheKey(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "polyfn.yaml")
	text := "mqtt: {embedded: false}\nadmin: {listen: \"off\"}\nisolation: {user: host}\nruntimes:\n  fake: {protocol: call, command: [/bin/false]}\nfunctions:\n  - {name: f, runtime: fake, handler: h, codedir: .}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{File: file, Listen: busy.Addr().String(), Log: slog.New(slog.DiscardHandler)}
	cfg, err := LoadConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(cfg, o)
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("a server started on a busy address")
	}
	if !strings.Contains(err.Error(), "http.listen") || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("the error does not name http.listen and the address: %v", err)
	}
}
