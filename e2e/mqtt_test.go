package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
)

var brokerLine = regexp.MustCompile(`msg="mqtt broker listening" listen=(\S+)`)

// mqttBroker returns the URL of the embedded broker of a polyfn serve whose
// output is logs, once polyfn has subscribed to its rules' topics.
func mqttBroker(t *testing.T, logs *hosttest.SyncBuffer) string {
	t.Helper()
	var addr string
	hosttest.WaitFor(t, 15*time.Second, "the embedded broker's address in the log", func() bool {
		m := brokerLine.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	waitSubscribed(t, logs, 1)
	return "tcp://" + addr
}

// waitSubscribed waits for n subscriptions in a polyfn serve's output.
func waitSubscribed(t *testing.T, logs *hosttest.SyncBuffer, n int) {
	t.Helper()
	hosttest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d MQTT subscriptions in the log", n), func() bool {
		return strings.Count(logs.String(), `msg="mqtt: subscribed"`) >= n
	})
}

// recordFn is a Python function that appends the seq of each message it
// gets to the file $OUT, a little slowly.
const recordFn = `import os, time

def handler(event, context):
    time.sleep(0.02)
    with open(os.environ["OUT"], "a") as f:
        f.write(event["seq"] + "\n")
    return {"seq": event["seq"], "host": os.environ.get("HOST_TAG", "")}
`

// recordConfig writes a config of the record function with an MQTT rule
// on rec/in, connected to the external broker with the mqtt settings given.
func recordConfig(t *testing.T, dir, name, mqtt, out string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "fn", "record.py"), recordFn)
	// Every instance runs as a user of its own and appends to out.
	if _, err := os.Stat(out); os.IsNotExist(err) {
		writeFile(t, out, "")
	}
	if err := os.Chmod(out, 0o666); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, name)
	writeFile(t, cfg, fmt.Sprintf(`mqtt: %s
functions:
  - name: record
    handler: record.handler
    codedir: fn
    concurrency: 2
    instances: {max: 1}
    env: {OUT: %q, HOST_TAG: %q}
    triggers:
      mqtt: [{subscribe: {topic: rec/in, qos: 1}, publish: {topic: rec/out, qos: 1}}]
`, mqtt, out, name))
	return cfg
}

func readLines(file string) []string {
	b, _ := os.ReadFile(file)
	return strings.Fields(string(b))
}

func missing(got []string, n int) []string {
	var out []string
	for i := range n {
		if s := fmt.Sprintf("s%d", i); !slices.Contains(got, s) {
			out = append(out, s)
		}
	}
	return out
}

// kill -9 of polyfn while QoS 1 messages are in flight, with more published
// while it is down: after a restart every message has been processed at
// least once. The broker is an external mosquitto (the embedded one would
// die with polyfn).
func TestMQTTKill9(t *testing.T) {
	requirePython(t)
	broker := mqtttest.Mosquitto(t)
	dir := tempDir(t)
	out := filepath.Join(dir, "processed")
	cfg := recordConfig(t, dir, "polyfn.yaml", fmt.Sprintf("{broker: %s, client_id: polyfn-kill}", broker), out)
	_, cmd, logs := startServe(t, cfg)
	waitSubscribed(t, logs, 1)

	c := mqtttest.NewClient(t, broker)
	const before, during = 100, 20
	for i := range before {
		c.Publish(t, "rec/in", 1, []byte(fmt.Sprintf(`{"seq": "s%d"}`, i)))
	}
	hosttest.WaitFor(t, 30*time.Second, "some messages processed", func() bool { return len(readLines(out)) >= 10 })
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	hosttest.WaitFor(t, 10*time.Second, "polyfn to be gone", func() bool {
		return errors.Is(syscall.Kill(cmd.Process.Pid, 0), syscall.ESRCH)
	})
	atKill := len(readLines(out))
	if atKill >= before {
		t.Fatalf("all %d messages were processed before the kill; the test needs some in flight", atKill)
	}
	for i := before; i < before+during; i++ {
		c.Publish(t, "rec/in", 1, []byte(fmt.Sprintf(`{"seq": "s%d"}`, i)))
	}

	_, _, logs = startServe(t, cfg)
	waitSubscribed(t, logs, 1)
	hosttest.WaitFor(t, 60*time.Second, "every message processed", func() bool { return len(missing(readLines(out), before+during)) == 0 })
	got := readLines(out)
	t.Logf("%d messages processed before the kill; %d lines for %d messages in all (%d processed more than once)",
		atKill, len(got), before+during, len(got)-(before+during))
}

// Two hosts with a shared subscription split one topic's messages and
// together process every one.
func TestMQTTSharedSubscription(t *testing.T) {
	requirePython(t)
	broker := mqtttest.Mosquitto(t)
	dir := tempDir(t)
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	_, _, logsA := startServe(t, recordConfig(t, dir, "a.yaml", fmt.Sprintf("{broker: %s, client_id: polyfn-a, share: workers}", broker), outA))
	_, _, logsB := startServe(t, recordConfig(t, dir, "b.yaml", fmt.Sprintf("{broker: %s, client_id: polyfn-b, share: workers}", broker), outB))
	waitSubscribed(t, logsA, 1)
	waitSubscribed(t, logsB, 1)

	c := mqtttest.NewClient(t, broker, "rec/out")
	const n = 60
	for i := range n {
		c.Publish(t, "rec/in", 1, []byte(fmt.Sprintf(`{"seq": "s%d"}`, i)))
	}
	hosttest.WaitFor(t, 60*time.Second, "every message processed by one host or the other", func() bool {
		return len(missing(append(readLines(outA), readLines(outB)...), n)) == 0
	})
	a, b := len(readLines(outA)), len(readLines(outB))
	if a == 0 || b == 0 {
		t.Fatalf("host a processed %d messages, host b %d; the shared subscription must split them", a, b)
	}
	if a+b != n {
		t.Errorf("host a processed %d messages, host b %d: %d in all, want each of the %d once", a, b, a+b, n)
	}
	c.WaitFor(t, 30*time.Second, "every result", func(m []mqtttest.Message) bool { return len(m) >= n })
	t.Logf("host a processed %d messages, host b %d", a, b)
}

// polyfn serve fails at once, naming the address and the key, when the
// embedded broker's address is taken.
func TestMQTTListenBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := tempDir(t)
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, fmt.Sprintf("mqtt: {listen: %q}\nfunctions:\n  - {name: echo, handler: index.echo, codedir: %q}\n", l.Addr(), filepath.Join(testdata(t), "functions/kinds")))
	code, _, errOut := runCLI("serve", "-c", cfg, "--listen", hosttest.FreeAddr(t), "--state-dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "mqtt.listen") || !strings.Contains(errOut, l.Addr().String()) {
		t.Fatalf("serve with a busy mqtt.listen: exit %d, stderr %q; want a failure naming mqtt.listen and %s", code, errOut, l.Addr())
	}
}

// A reload (SIGHUP) while QoS 1 messages flow through the embedded broker:
// every message is processed, and the new configuration takes the later
// ones.
func TestMQTTReload(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	out := filepath.Join(dir, "processed")
	cfg := recordConfig(t, dir, "polyfn.yaml", "{}", out)
	_, cmd, logs := startServe(t, cfg)
	broker := mqttBroker(t, logs)
	c := mqtttest.NewClient(t, broker, "rec/out")
	const n = 40
	for i := range n {
		c.Publish(t, "rec/in", 1, []byte(fmt.Sprintf(`{"seq": "s%d"}`, i)))
		if i == n/4 {
			// The same rule in a configuration whose HOST_TAG says v2.
			text, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, cfg, strings.Replace(string(text), `HOST_TAG: "polyfn.yaml"`, `HOST_TAG: "v2"`, 1))
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
	}
	hosttest.WaitFor(t, 30*time.Second, "the reload", func() bool { return strings.Contains(logs.String(), "reloaded: the new config serves") })
	c.Publish(t, "rec/in", 1, []byte(`{"seq": "after"}`))
	c.WaitFor(t, 30*time.Second, "the result of the message sent after the reload", func(m []mqtttest.Message) bool {
		return slices.ContainsFunc(m, func(m mqtttest.Message) bool { return strings.Contains(string(m.Payload), `"seq": "after"`) })
	})
	for _, m := range c.Messages() {
		if strings.Contains(string(m.Payload), `"seq": "after"`) && !strings.Contains(string(m.Payload), `"host": "v2"`) {
			t.Errorf("the message sent after the reload was handled by the old configuration: %s", m.Payload)
		}
	}
	hosttest.WaitFor(t, 30*time.Second, "every message processed", func() bool { return len(missing(readLines(out), n)) == 0 })
}

// A second polyfn serve on the state directory of a running one fails at
// once, naming the embedded broker's store and the process that holds it.
func TestMQTTStoreInUse(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, fmt.Sprintf("functions:\n  - {name: echo, handler: index.echo, codedir: %q}\n", filepath.Join(testdata(t), "functions/kinds")))
	s := serve(t, cfg, "--state-dir", state)
	code, _, errOut := runCLI("serve", "-c", cfg, "--listen", hosttest.FreeAddr(t), "--mqtt-listen", "127.0.0.1:0", "--state-dir", state)
	want := fmt.Sprintf("mqtt store %s is in use by process %d", filepath.Join(state, "mqtt"), s.cmd.Process.Pid)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("a second serve on the state directory: exit %d, stderr %q; want a failure saying %q", code, errOut, want)
	}
}
