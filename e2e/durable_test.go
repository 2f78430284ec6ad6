package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/testnet"
)

// drainFn appends the seq of each message to $OUT, once the file $GATE is
// gone: while it is there, messages wait in the broker.
const drainFn = `import os, time

def handler(event, context):
    while os.path.exists(os.environ["GATE"]):
        time.sleep(0.005)
    with open(os.environ["OUT"], "a") as f:
        f.write(event["seq"] + "\n")
`

// ackedPublisher publishes QoS 1 messages s0 … s(n-1) to one topic over a
// few connections, from a few goroutines on each, each sending its next
// message once the previous one is acknowledged. A message whose PUBACK did
// not come (the broker went away) is sent again once its client has
// reconnected. acked is what the broker acknowledged: what must not be lost.
type ackedPublisher struct {
	mu    sync.Mutex
	acked map[int]bool
}

// publishAll starts publishing n messages to topic on the broker at
// brokerURL, over conns connections with window messages in flight on
// each; the clients stop and disconnect when the test ends.
func publishAll(t *testing.T, brokerURL, topic string, n, conns, window int) *ackedPublisher {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &ackedPublisher{acked: map[int]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var cms []*autopaho.ConnectionManager
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		for _, cm := range cms {
			_ = cm.Disconnect(dctx)
		}
	})
	todo := make(chan int, n)
	for i := range n {
		todo <- i
	}
	close(todo)
	for c := range conns {
		cm, err := autopaho.NewConnection(context.Background(), autopaho.ClientConfig{
			ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
			ConnectTimeout: 2 * time.Second, ReconnectBackoff: autopaho.NewConstantBackoff(50 * time.Millisecond),
			ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("durable-publisher-%d", c)},
		})
		if err != nil {
			t.Fatal(err)
		}
		cms = append(cms, cm)
		for range window {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range todo {
					for ctx.Err() == nil {
						pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
						_, err := cm.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, `{"seq": "s%d"}`, i)})
						pcancel()
						if err == nil {
							p.mu.Lock()
							p.acked[i] = true
							p.mu.Unlock()
							break
						}
						actx, acancel := context.WithTimeout(ctx, 100*time.Millisecond)
						_ = cm.AwaitConnection(actx)
						acancel()
					}
				}
			}()
		}
	}
	return p
}

func (p *ackedPublisher) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// lost returns the acknowledged messages that are not in processed.
func (p *ackedPublisher) lost(processed []string) []string {
	seen := map[string]bool{}
	for _, s := range processed {
		seen[s] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i := range p.acked {
		if s := "s" + strconv.Itoa(i); !seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// drainStall is how long durableRun waits for the function to process
// another message before it counts the rest as lost.
const drainStall = 15 * time.Second

// durableRun publishes n QoS 1 messages to the embedded broker of a polyfn
// serve whose function records each message it gets, and stops polyfn with
// sig (then starts it again on the same state directory) each time another
// n/(restarts+1) messages were acknowledged, the function having been held
// back for the last backlog of them, so that they wait in the broker. At the
// end every acknowledged message was processed at least once.
func durableRun(t *testing.T, sig syscall.Signal, n, restarts int) {
	requirePython(t)
	dir, state := tempDir(t), t.TempDir()
	out, gate := filepath.Join(dir, "processed"), filepath.Join(dir, "gate")
	// Each instance runs as a user of its own (a restart brings another)
	// and appends to out.
	writeFile(t, out, "")
	if err := os.Chmod(out, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "fn", "drain.py"), drainFn)
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, fmt.Sprintf(`functions:
  - name: drain
    handler: drain.handler
    codedir: fn
    concurrency: 16
    instances: {min: 1, max: 1}
    env: {OUT: %q, GATE: %q}
    triggers:
      mqtt: [{subscribe: {topic: durable/in, qos: 1}}]
`, out, gate))
	// The broker keeps its address across restarts, for the publisher.
	brokerAddr := testnet.StableAddr(t)
	args := []string{"--state-dir", state, "--mqtt-listen", brokerAddr}
	bin := buildPolyfn(t)
	s := serveBinary(t, bin, cfg, args...)
	waitSubscribed(t, s.logs, 1)

	start := time.Now()
	p := publishAll(t, "tcp://"+brokerAddr, "durable/in", n, 4, 8)
	const backlog = 300
	for k := 1; k <= restarts; k++ {
		target := k * n / (restarts + 1)
		hosttest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged messages", target-backlog), func() bool {
			return p.ackedCount() >= target-backlog
		})
		writeFile(t, gate, "")
		hosttest.WaitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged messages", target), func() bool {
			return p.ackedCount() >= target
		})
		acked, processed := p.ackedCount(), len(unique(readLines(out)))
		if err := syscall.Kill(-s.cmd.Process.Pid, sig); err != nil {
			t.Fatal(err)
		}
		// A SIGTERM lets the invocations in hand finish (they would time
		// out, fail and be acknowledged behind the gate).
		if err := os.Remove(gate); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("polyfn did not stop within a minute of %v", sig)
		}
		t.Logf("%v %d: %d messages acknowledged, %d processed", sig, k, acked, processed)
		if acked-processed < backlog/2 {
			t.Fatalf("only %d acknowledged messages were waiting in the broker; the test needs a backlog", acked-processed)
		}
		s = serveBinary(t, bin, cfg, args...)
	}
	hosttest.WaitFor(t, 120*time.Second, "every message acknowledged", func() bool { return p.ackedCount() == n })
	// Wait for the backlog to drain, as long as it drains.
	lines, progress := -1, time.Now()
	for len(p.lost(readLines(out))) > 0 && time.Since(progress) < drainStall {
		if l := len(readLines(out)); l != lines {
			lines, progress = l, time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := readLines(out)
	if lost := p.lost(got); len(lost) > 0 {
		slices.Sort(lost)
		t.Fatalf("%d of the %d acknowledged messages were never processed (nothing new for %s), such as %v", len(lost), n, drainStall, lost[:min(len(lost), 10)])
	}
	t.Logf("%d messages acknowledged across %d restarts (%v), all processed in %s: 0 lost, %d processed more than once (%d lines)",
		n, restarts, sig, time.Since(start).Round(time.Millisecond), len(got)-len(unique(got)), len(got))
}

// unique returns the distinct lines.
func unique(lines []string) map[string]bool {
	u := map[string]bool{}
	for _, l := range lines {
		u[l] = true
	}
	return u
}

// QoS 1 messages the embedded broker acknowledged survive two kill -9 of
// polyfn: its store has each one before the PUBACK goes out. Messages in
// hand when polyfn died are delivered again (at least once).
func TestMQTTEmbeddedKill9(t *testing.T) {
	durableRun(t, syscall.SIGKILL, 5000, 2)
}

// The same across a SIGTERM: polyfn drains what it is handling, and the
// broker's store keeps the rest.
func TestMQTTEmbeddedSIGTERM(t *testing.T) {
	durableRun(t, syscall.SIGTERM, 2000, 1)
}
