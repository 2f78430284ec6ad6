package mqtt_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// roleEnv makes this test binary play the functions: a host starts it as a
// prebuilt Go function, so the tests need no Python and no Go build.
const roleEnv = "POLYFN_MQTT_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "fn" {
		polyfn.Start(handler)
	}
	if os.Getenv(roleEnv) == "killed-store" {
		killedStore(os.Getenv("DIR"))
	}
	os.Exit(m.Run())
}

type input struct {
	ID   string `json:"id"`
	Drop bool   `json:"drop"`
	Fail int    `json:"fail"`
}

type valueError struct{ msg string }

func (e *valueError) Error() string     { return e.msg }
func (e *valueError) ErrorType() string { return "ValueError" }

// handler is every test function; the function's name says what it does.
func handler(ctx context.Context, e polyfn.Event) (any, error) {
	c := polyfn.FromContext(ctx)
	dir := os.Getenv("DIR")
	var in input
	_ = e.Decode(&in)
	switch c.FunctionName {
	case "filter":
		if in.Drop {
			return nil, nil
		}
		return map[string]any{"id": in.ID}, nil
	case "fail":
		return nil, &valueError{"bad input: " + in.ID}
	case "flaky":
		n := appendLine(filepath.Join(dir, "flaky-"+in.ID), "attempt")
		if n <= in.Fail {
			return nil, &valueError{fmt.Sprintf("attempt %d fails", n)}
		}
		return map[string]any{"id": in.ID, "attempts": n}, nil
	case "nap":
		appendLine(filepath.Join(dir, "nap"), in.ID)
		time.Sleep(1500 * time.Millisecond)
		return map[string]any{"id": in.ID}, nil
	case "long":
		appendLine(filepath.Join(dir, "long"), in.ID)
		time.Sleep(5 * time.Second)
		return map[string]any{"id": in.ID}, nil
	case "slow":
		time.Sleep(20 * time.Millisecond)
		appendLine(filepath.Join(dir, "slow"), in.ID)
		return map[string]any{"id": in.ID}, nil
	}
	return map[string]any{"id": in.ID, "function": c.FunctionName, "trigger": c.Trigger, "topic": c.MessageTopic,
		"qos": c.MessageQOS, "messageID": c.MessageID, "timestamp": c.MessageTimestamp}, nil
}

// appendLine appends a line to file and returns how many it holds. Each
// instance runs as a user of its own: the file is everyone's to append to.
func appendLine(file, line string) int {
	syscall.Umask(0)
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		panic(err)
	}
	_, _ = f.WriteString(line + "\n")
	f.Close()
	return len(lines(file))
}

func lines(file string) []string {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// broker is a broker the tests run against.
type broker struct {
	name     string
	url      string
	embedded bool
}

// brokers returns the embedded broker and a mosquitto, both for this test.
func brokers(t *testing.T) []broker {
	t.Helper()
	b, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return []broker{{name: "embedded", url: b.URL(), embedded: true}, {name: "mosquitto", url: mqtttest.Mosquitto(t)}}
}

// env is a host running the test functions and a trigger with their rules.
type env struct {
	dir     string
	host    *hosttest.Host
	trigger *mqtt.Trigger
	opts    mqtt.Options
	prep    func(*mqtt.Trigger)
}

// fn is a function entry of the test config: the test binary as a Go function.
func fn(name, extra string) string {
	return fmt.Sprintf("  - name: %s\n    runtime: go\n    handler: @EXE@\n    codedir: .\n    env: {%s: fn, DIR: '@DIR@'}\n%s", name, roleEnv, extra)
}

// start runs a host for the functions (YAML list items) and a trigger on b.
func start(t *testing.T, b broker, functions string, tweak ...func(*mqtt.Options)) *env {
	t.Helper()
	return startPrepared(t, b, functions, nil, tweak...)
}

// startPrepared is start with prep applied to the trigger before its rules
// are given.
func startPrepared(t *testing.T, b broker, functions string, prep func(*mqtt.Trigger), tweak ...func(*mqtt.Options)) *env {
	t.Helper()
	exe := hosttest.Self(t)
	dir := hosttest.Writable(t, t.TempDir())
	text := strings.NewReplacer("@EXE@", exe, "@DIR@", dir).Replace("functions:\n" + functions)
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	e := &env{dir: dir, host: hosttest.Start(t, dir, text), prep: prep}
	e.opts = mqtt.Options{URL: b.url, ClientID: "polyfn-test", InFlight: config.DefaultMQTTInFlight, FlowControl: !b.embedded,
		Log: slog.New(slog.NewTextHandler(e.host.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, f := range tweak {
		f(&e.opts)
	}
	e.trigger = e.startTrigger(t, cfg)
	return e
}

func (e *env) startTrigger(t *testing.T, cfg *config.Config) *mqtt.Trigger {
	t.Helper()
	tr, err := mqtt.New(e.opts, e.host.Metrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr.Stop(ctx)
	})
	if e.prep != nil {
		e.prep(tr)
	}
	if err := tr.Start(trigger.Generation{Config: cfg, Host: e.host.Host}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	return tr
}

// apply gives the trigger cfg's rules, on the env's host, as a reload does.
func (e *env) apply(cfg *config.Config) {
	e.trigger.Apply(trigger.Generation{Config: cfg, Host: e.host.Host})
}

// config parses a configuration of the functions (YAML list items), as a
// reload would give the trigger.
func (e *env) config(t *testing.T, functions string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(e.dir, "polyfn.yaml"), []byte(strings.NewReplacer("@EXE@", "x", "@DIR@", e.dir).Replace("functions:\n"+functions)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// count reads polyfn_mqtt_messages_total{function, outcome}.
func (e *env) count(function, outcome string) int {
	return int(counter(e.host.Metrics().Registry, "polyfn_mqtt_messages_total", map[string]string{"function": function, "outcome": outcome}))
}

func counter(g prometheus.Gatherer, name string, labels map[string]string) float64 {
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not a JSON object: %q", b)
	}
	return v
}

func byID(t *testing.T, msgs []mqtttest.Message) map[string]mqtttest.Message {
	out := map[string]mqtttest.Message{}
	for _, m := range msgs {
		out[fmt.Sprint(decode(t, m.Payload)["id"])] = m
	}
	return out
}

// QoS 0 and 1 round trips: the function sees the message's topic, QoS, id
// and timestamp, and its result is published with min(input QoS, publish
// QoS); polyfn invoke --topic's request (mqtt.Call) gets its own answer.
func TestRoundTrip(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			start(t, b, fn("echo", `    triggers:
      mqtt:
        - {subscribe: {topic: rt/in/+, qos: 1}, publish: {topic: rt/out, qos: 1}}
        - {subscribe: {topic: rt/low, qos: 1}, publish: {topic: rt/lowout, qos: 0}}
`))
			c := mqtttest.NewClient(t, b.url, "rt/out", "rt/lowout")
			began := time.Now().Unix()
			c.Publish(t, "rt/in/a", 0, []byte(`{"id": "q0"}`))
			c.Publish(t, "rt/in/b", 1, []byte(`{"id": "q1"}`))
			c.Publish(t, "rt/low", 1, []byte(`{"id": "low"}`))
			c.WaitFor(t, 20*time.Second, "three results", func(m []mqtttest.Message) bool { return len(m) >= 3 })
			got := byID(t, c.Messages())
			for _, w := range []struct {
				id, topic, in    string
				qosIn, qosOut    int
				messageIDNonZero bool
			}{
				{"q0", "rt/out", "rt/in/a", 0, 0, false},
				{"q1", "rt/out", "rt/in/b", 1, 1, true},
				{"low", "rt/lowout", "rt/low", 1, 0, true},
			} {
				m, ok := got[w.id]
				if !ok {
					t.Fatalf("no result for %s: %v", w.id, c.Messages())
				}
				v := decode(t, m.Payload)
				if m.Topic != w.topic || int(m.QoS) != w.qosOut {
					t.Errorf("%s: result on %s with QoS %d, want %s with QoS %d", w.id, m.Topic, m.QoS, w.topic, w.qosOut)
				}
				if v["trigger"] != "mqtt" || v["topic"] != w.in || v["qos"] != float64(w.qosIn) || v["function"] != "echo" {
					t.Errorf("%s: the function saw %v; want trigger mqtt, topic %s, QoS %d", w.id, v, w.in, w.qosIn)
				}
				if (v["messageID"] != float64(0)) != w.messageIDNonZero {
					t.Errorf("%s: message id %v", w.id, v["messageID"])
				}
				if ts := int64(v["timestamp"].(float64)); ts < began-1 || ts > time.Now().Unix()+1 {
					t.Errorf("%s: timestamp %d, want about %d", w.id, ts, began)
				}
			}
			if len(c.Messages()) != 3 {
				t.Errorf("got %d results, want 3: %v", len(c.Messages()), c.Messages())
			}

			// Two requests at once each get their own answer.
			var wg sync.WaitGroup
			for _, id := range []string{"call1", "call2"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					r, err := mqtt.Call(ctx, mqtt.Options{URL: b.url}, "rt/in/call", 1, []byte(`{"id": "`+id+`"}`), []string{"rt/out"})
					if err != nil {
						t.Errorf("call %s: %v", id, err)
						return
					}
					if v := decode(t, r.Payload); v["id"] != id || r.Error != nil || r.Topic != "rt/out" {
						t.Errorf("call %s: got %s on %s", id, r.Payload, r.Topic)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// Wildcards, and overlapping filters of two functions: each function runs
// once per message its filter matches, whether the broker sends one copy
// per subscription (mosquitto) or one for all of them (the embedded broker).
func TestWildcards(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := start(t, b, fn("all", `    triggers:
      mqtt: [{subscribe: {topic: "wc/#", qos: 1}, publish: {topic: wc-out/all, qos: 1}}]
`)+fn("temp", `    triggers:
      mqtt: [{subscribe: {topic: wc/+/temp, qos: 1}, publish: {topic: wc-out/temp, qos: 1}}]
`))
			c := mqtttest.NewClient(t, b.url, "wc-out/+")
			c.Publish(t, "wc/kitchen/temp", 1, []byte(`{"id": "t1"}`))
			c.Publish(t, "wc/kitchen/hum", 1, []byte(`{"id": "h1"}`))
			c.Publish(t, "wc", 1, []byte(`{"id": "root"}`))
			c.Publish(t, "other/kitchen/temp", 1, []byte(`{"id": "no"}`))
			c.WaitFor(t, 20*time.Second, "four results", func(m []mqtttest.Message) bool {
				return len(m) >= 4 && e.count("all", "success") >= 3 && e.count("temp", "success") >= 1
			})
			all, temp := byID(t, c.On("wc-out/all")), byID(t, c.On("wc-out/temp"))
			if len(all) != 3 || all["t1"].Topic == "" || all["h1"].Topic == "" || all["root"].Topic == "" {
				t.Errorf("wc/# got %v, want t1, h1 and root", all)
			}
			if len(temp) != 1 || temp["t1"].Topic == "" {
				t.Errorf("wc/+/temp got %v, want t1", temp)
			}
			if n, m := e.count("all", "success"), e.count("temp", "success"); n != 3 || m != 1 {
				t.Errorf("invocations: all %d, temp %d; want 3 and 1 (no message twice)", n, m)
			}
			if len(c.Messages()) != 4 {
				t.Errorf("got %d results, want 4", len(c.Messages()))
			}
		})
	}
}

// An empty result publishes nothing; a failure publishes the error document
// to the publish topic, or to errors.topic when set; retry.max re-runs a
// failed invocation before giving up.
func TestFilterErrorsRetries(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := start(t, b, fn("filter", `    triggers:
      mqtt: [{subscribe: {topic: f/in, qos: 1}, publish: {topic: f/out, qos: 1}}]
`)+fn("fail", `    triggers:
      mqtt:
        - {subscribe: {topic: e/in, qos: 1}, publish: {topic: e/out, qos: 1}}
        - {subscribe: {topic: e2/in, qos: 1}, publish: {topic: e2/out, qos: 1}, errors: {topic: e2/err, qos: 1}}
`)+fn("flaky", `    triggers:
      mqtt: [{subscribe: {topic: r/in, qos: 1}, publish: {topic: r/out, qos: 1}, retry: {max: 2, backoff: 10ms}}]
`))
			c := mqtttest.NewClient(t, b.url, "f/out", "e/out", "e2/out", "e2/err", "r/out")
			c.Publish(t, "f/in", 1, []byte(`{"id": "dropped", "drop": true}`))
			c.Publish(t, "f/in", 1, []byte(`{"id": "kept"}`))
			c.Publish(t, "e/in", 1, []byte(`{"id": "x"}`))
			c.Publish(t, "e2/in", 1, []byte(`not json`))
			c.Publish(t, "r/in", 1, []byte(`{"id": "third-time", "fail": 2}`))
			c.Publish(t, "r/in", 1, []byte(`{"id": "never", "fail": 9}`))
			c.WaitFor(t, 20*time.Second, "the results and error documents", func([]mqtttest.Message) bool {
				return len(c.On("f/out")) >= 1 && len(c.On("e/out")) >= 1 && len(c.On("e2/err")) >= 1 && len(c.On("r/out")) >= 2 &&
					e.count("filter", "filtered") == 1
			})

			if f := c.On("f/out"); len(f) != 1 || decode(t, f[0].Payload)["id"] != "kept" {
				t.Errorf("filter: f/out got %v, want only the kept message", f)
			}

			var doc mqtt.ErrorDocument
			if err := json.Unmarshal(c.On("e/out")[0].Payload, &doc); err != nil {
				t.Fatal(err)
			}
			if string(doc.FunctionMessage) != `{"id":"x"}` || doc.ErrorType != "ValueError" || doc.ErrorMessage != "bad input: x" || doc.FunctionName != "fail" || doc.MessageTopic != "e/in" {
				t.Errorf("error document on the publish topic: %s", c.On("e/out")[0].Payload)
			}
			if _, ok := mqtt.ParseErrorDocument(c.On("e/out")[0].Payload); !ok {
				t.Error("ParseErrorDocument does not recognise the error document")
			}
			if err := json.Unmarshal(c.On("e2/err")[0].Payload, &doc); err != nil {
				t.Fatal(err)
			}
			if string(doc.FunctionMessage) != `"not json"` || doc.ErrorType != "ValueError" {
				t.Errorf("error document on errors.topic: %s", c.On("e2/err")[0].Payload)
			}
			if n := len(c.On("e2/out")); n != 0 {
				t.Errorf("e2/out got %d messages; with errors.topic set, error documents go there only", n)
			}

			var succeeded, failed bool
			for _, m := range c.On("r/out") {
				if d, ok := mqtt.ParseErrorDocument(m.Payload); ok {
					failed = string(d.FunctionMessage) == `{"id":"never","fail":9}` && d.ErrorMessage == "attempt 3 fails"
				} else {
					v := decode(t, m.Payload)
					succeeded = v["id"] == "third-time" && v["attempts"] == float64(3)
				}
			}
			if !succeeded || !failed {
				t.Errorf("retries: r/out got %v; want third-time to succeed on attempt 3, and the error document of never's attempt 3", c.On("r/out"))
			}
			if n := len(lines(filepath.Join(e.dir, "flaky-never"))); n != 3 {
				t.Errorf("function failing every time ran %d times, want 3 (retry.max 2)", n)
			}
		})
	}
}

// A function slower than the messages arrive, with room for two
// invocations (one running, one queued): the trigger waits for it instead
// of overloading it, and every message is processed.
func TestBackPressure(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := start(t, b, fn("slow", `    concurrency: 1
    queue: 1
    instances: {max: 1}
    triggers:
      mqtt: [{subscribe: {topic: bp/in, qos: 1}, publish: {topic: bp/out, qos: 1}}]
`), func(o *mqtt.Options) { o.InFlight = 8 })
			c := mqtttest.NewClient(t, b.url, "bp/out")
			// The first message starts the instance (while it starts, the
			// pool holds only its queue, and the trigger waits out the
			// Overloaded answers it may get).
			c.Publish(t, "bp/in", 1, []byte(`{"id": "warm-up"}`))
			c.WaitFor(t, 20*time.Second, "the warm-up result", func(m []mqtttest.Message) bool { return len(m) == 1 })
			warm := counter(e.host.Metrics().Registry, "polyfn_invocations_total", map[string]string{"function": "slow", "outcome": "Overloaded"})
			const n = 40
			for i := range n {
				c.Publish(t, "bp/in", 1, []byte(fmt.Sprintf(`{"id": "m%d"}`, i)))
			}
			c.WaitFor(t, 30*time.Second, "every result", func(m []mqtttest.Message) bool { return len(byID(t, m)) == n+1 })
			processed := lines(filepath.Join(e.dir, "slow"))
			for i := range n {
				if !slices.Contains(processed, fmt.Sprintf("m%d", i)) {
					t.Errorf("m%d was not processed", i)
				}
			}
			if o := counter(e.host.Metrics().Registry, "polyfn_invocations_total", map[string]string{"function": "slow", "outcome": "Overloaded"}) - warm; o != 0 {
				t.Errorf("%v invocations were turned away as overloaded; the trigger must wait for room", o)
			}
		})
	}
}

// The session outlives the connection: messages left unacknowledged when
// the trigger stops, and messages published while it is away, are
// delivered to the next trigger with the same client id.
func TestPersistentSession(t *testing.T) {
	url := mqtttest.Mosquitto(t)
	e := start(t, broker{name: "mosquitto", url: url}, fn("slow", `    concurrency: 2
    triggers:
      mqtt: [{subscribe: {topic: ps/in, qos: 1}}]
`), func(o *mqtt.Options) { o.InFlight = 2 })
	c := mqtttest.NewClient(t, url)
	const n = 30
	for i := range n {
		c.Publish(t, "ps/in", 1, []byte(fmt.Sprintf(`{"id": "m%d"}`, i)))
	}
	file := filepath.Join(e.dir, "slow")
	hosttest.WaitFor(t, 20*time.Second, "a few messages processed", func() bool { return len(lines(file)) >= 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.trigger.Stop(ctx)
	cancel()
	if got := len(lines(file)); got >= n {
		t.Fatalf("all %d messages were processed before the trigger stopped; the test needs some left", got)
	}
	for i := n; i < n+5; i++ {
		c.Publish(t, "ps/in", 1, []byte(fmt.Sprintf(`{"id": "m%d"}`, i)))
	}
	cfg, err := config.Parse(filepath.Join(e.dir, "polyfn.yaml"), []byte(strings.NewReplacer("@EXE@", "x", "@DIR@", e.dir).Replace("functions:\n"+fn("slow", "    triggers:\n      mqtt: [{subscribe: {topic: ps/in, qos: 1}}]\n"))))
	if err != nil {
		t.Fatal(err)
	}
	e.startTrigger(t, cfg)
	hosttest.WaitFor(t, 30*time.Second, "every message processed", func() bool {
		got := lines(file)
		for i := range n + 5 {
			if !slices.Contains(got, fmt.Sprintf("m%d", i)) {
				return false
			}
		}
		return true
	})
}

// A reload's rules replace the running ones: a new filter is subscribed, a
// changed rule publishes where it now says.
func TestApply(t *testing.T) {
	b := brokers(t)[0]
	e := start(t, b, fn("echo", "    triggers:\n      mqtt: [{subscribe: {topic: up/a, qos: 1}, publish: {topic: up/out1, qos: 1}}]\n"))
	c := mqtttest.NewClient(t, b.url, "up/+")
	c.Publish(t, "up/a", 1, []byte(`{"id": "before"}`))
	c.WaitFor(t, 20*time.Second, "the result on up/out1", func([]mqtttest.Message) bool { return len(c.On("up/out1")) == 1 })
	cfg, err := config.Parse(filepath.Join(e.dir, "polyfn.yaml"), []byte(strings.NewReplacer("@EXE@", "x", "@DIR@", e.dir).Replace("functions:\n"+
		fn("echo", "    triggers:\n      mqtt:\n        - {subscribe: {topic: up/a, qos: 1}, publish: {topic: up/out2, qos: 1}}\n        - {subscribe: {topic: up/b, qos: 0}, publish: {topic: up/out3, qos: 1}}\n"))))
	if err != nil {
		t.Fatal(err)
	}
	e.apply(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.trigger.WaitSubscribed(ctx); err != nil {
		t.Fatal(err)
	}
	c.Publish(t, "up/a", 1, []byte(`{"id": "after"}`))
	c.Publish(t, "up/b", 1, []byte(`{"id": "new"}`))
	c.WaitFor(t, 20*time.Second, "the results on up/out2 and up/out3", func([]mqtttest.Message) bool {
		return len(c.On("up/out2")) == 1 && len(c.On("up/out3")) == 1
	})
	if m := c.On("up/out3")[0]; m.QoS != 0 {
		t.Errorf("up/b is subscribed at QoS 0; its result came with QoS %d", m.QoS)
	}
}

// A busy mqtt.listen fails with the address and the key.
func TestBrokerAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = mqtt.StartBroker(mqtt.BrokerOptions{Listen: l.Addr().String()}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "mqtt.listen") || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("got %v, want an error naming mqtt.listen and %s", err, l.Addr())
	}
}

func TestTopicMatches(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"+/b", "a/b", true},
		{"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true}, {"a/+/c", "a//c", true},
	} {
		if got := mqtt.TopicMatches(c.filter, c.topic); got != c.want {
			t.Errorf("TopicMatches(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// cutProxy forwards TCP connections to a broker and can cut them all, as a
// network failure would.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	delay time.Duration // before a new connection is forwarded (under mu)
	held  int           // connections accepted and not forwarded yet (under mu)
}

func newCutProxy(t *testing.T, brokerURL string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	target := strings.TrimPrefix(brokerURL, "tcp://")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			delay := p.delay
			p.conns = append(p.conns, c)
			p.held++
			p.mu.Unlock()
			go func() {
				time.Sleep(delay)
				p.mu.Lock()
				p.held--
				p.mu.Unlock()
				b, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				p.mu.Lock()
				p.conns = append(p.conns, b)
				p.mu.Unlock()
				go func() { _, _ = io.Copy(b, c); b.Close() }()
				go func() { _, _ = io.Copy(c, b); c.Close() }()
			}()
		}
	}()
	return p
}

// setDelay makes the proxy hold each new connection for d before it
// forwards it.
func (p *cutProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// holding reports whether the proxy holds a connection it has not
// forwarded yet.
func (p *cutProxy) holding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held > 0
}

func (p *cutProxy) url() string { return "tcp://" + p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// quietWindow is how long a test watches for a message that must not come.
const quietWindow = 500 * time.Millisecond

// A connection lost while the function runs: the message is delivered again
// on the next connection and its result published from there; the run that
// began on the lost connection does not publish through the session's new
// connection (it would sit in the session, unacknowledged, holding a place
// of the broker's Receive Maximum until yet another reconnection sends it).
func TestConnectionLostWhileRunning(t *testing.T) {
	url := mqtttest.Mosquitto(t)
	px := newCutProxy(t, url)
	e := start(t, broker{name: "mosquitto", url: px.url()}, fn("nap", `    triggers:
      mqtt: [{subscribe: {topic: nap/in, qos: 1}, publish: {topic: nap/out, qos: 1}}]
`))
	c := mqtttest.NewClient(t, url, "nap/out")
	c.Publish(t, "nap/in", 1, []byte(`{"id": "a"}`))
	file := filepath.Join(e.dir, "nap")
	hosttest.WaitFor(t, 20*time.Second, "the function to start", func() bool { return len(lines(file)) >= 1 })
	px.cut()
	hosttest.WaitFor(t, 20*time.Second, "the message delivered again", func() bool { return len(lines(file)) >= 2 })
	c.WaitFor(t, 20*time.Second, "the result", func(m []mqtttest.Message) bool { return len(m) >= 1 })
	// Both runs are over and what they published is settled with the
	// broker. The trigger shows no sign of the second, so this still waits:
	// cutting as soon as the host had nothing in flight gave two results.
	time.Sleep(500 * time.Millisecond)
	px.cut()
	time.Sleep(2 * time.Second) // reconnected, and whatever the session held sent
	if got := c.On("nap/out"); len(got) != 1 {
		t.Errorf("got %d results for one message delivered twice, want 1: %v", len(got), got)
	}
}
