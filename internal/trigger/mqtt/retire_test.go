package mqtt_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
)

// probeSession connects to the broker at url as clientID without a clean
// start and reports whether the broker had a session for it, and the ids
// of the messages it delivers again within wait. It acknowledges nothing
// and leaves a session (of a minute) behind.
func probeSession(t *testing.T, url, clientID string, wait time.Duration) (bool, []string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []string
	c := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			mu.Lock()
			ids = append(ids, fmt.Sprint(decode(t, pr.Packet.Payload)["id"]))
			mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := uint32(60)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("probe %s: %v", clientID, err)
	}
	time.Sleep(wait)
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(ids)
	return ca.SessionPresent, slices.Compact(ids)
}

// waitRetired waits until the trigger has no retirement under way.
func waitRetired(t *testing.T, tr *mqtt.Trigger, timeout time.Duration) {
	t.Helper()
	hosttest.WaitFor(t, timeout, "the retirement to end", func() bool { return mqtt.Retiring(tr) == 0 })
}

// napRule is the nap function with one rule on topic; nap takes 1.5 s a
// message, and the trigger handles one message at a time without flow
// control, so that the others wait in its queue.
func napRule(topic string) string {
	return fn("nap", fmt.Sprintf("    triggers:\n      mqtt: [{subscribe: {topic: %s, qos: 1}, publish: {topic: %s/out, qos: 1}}]\n", topic, topic))
}

func oneInFlight(o *mqtt.Options) { o.InFlight, o.FlowControl = 1, false }

// A reload that removes a filter while messages wait in its queue: they are
// handled and acknowledged before the session ends, and then the broker has
// no session for it any more.
func TestRetireHandlesQueuedMessages(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := start(t, b, napRule("rq/in"), oneInFlight)
			c := mqtttest.NewClient(t, b.url, "rq/in/out")
			for _, id := range []string{"a", "b", "c"} {
				c.Publish(t, "rq/in", 1, []byte(`{"id": "`+id+`"}`))
			}
			file := filepath.Join(e.dir, "nap")
			hosttest.WaitFor(t, 20*time.Second, "the first message handled", func() bool { return len(lines(file)) >= 1 })
			e.apply(e.config(t, fn("nap", "")))
			c.WaitFor(t, 20*time.Second, "the three results", func(m []mqtttest.Message) bool { return len(m) >= 3 })
			waitRetired(t, e.trigger, 20*time.Second)
			if got := lines(file); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Errorf("nap handled %v, want a, b and c once each", got)
			}
			if !strings.Contains(e.host.Logs.String(), "mqtt: session ended") {
				t.Error(`no "mqtt: session ended" in the log`)
			}
			if present, ids := probeSession(t, b.url, mqtt.ClientIDFor(e.opts, "rq/in"), 300*time.Millisecond); present || len(ids) > 0 {
				t.Errorf("after the retirement the broker still has the session (present %v, messages %v)", present, ids)
			}
		})
	}
}

// A retirement that runs out of time disconnects without ending the
// session: the messages not acknowledged stay with the broker, which
// delivers them to the next connection with the same client id.
func TestRetireTimeoutKeepsSession(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := startPrepared(t, b, napRule("rt/in"), func(tr *mqtt.Trigger) { mqtt.SetTimeouts(tr, 700*time.Millisecond, 10*time.Second) }, oneInFlight)
			c := mqtttest.NewClient(t, b.url)
			c.Publish(t, "rt/in", 1, []byte(`{"id": "a"}`))
			c.Publish(t, "rt/in", 1, []byte(`{"id": "b"}`))
			file := filepath.Join(e.dir, "nap")
			hosttest.WaitFor(t, 20*time.Second, "the first message handled", func() bool { return len(lines(file)) >= 1 })
			e.apply(e.config(t, fn("nap", "")))
			waitRetired(t, e.trigger, 10*time.Second)
			if !strings.Contains(e.host.Logs.String(), "mqtt: retiring the filter timed out") {
				t.Error(`no "mqtt: retiring the filter timed out" in the log`)
			}
			present, ids := probeSession(t, b.url, mqtt.ClientIDFor(e.opts, "rt/in"), time.Second)
			if !present || !slices.Equal(ids, []string{"a", "b"}) {
				t.Errorf("after a retirement that timed out: session present %v, messages delivered again %v; want the session with a and b", present, ids)
			}
		})
	}
}

// A filter removed and brought back by the next reload while its
// retirement is under way: the lane takes it back (no second session with
// the same client id taking the first over), the message that waited is
// handled, and so are those published later, each once.
func TestRetireRevived(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			e := start(t, b, napRule("rv/in"), oneInFlight)
			c := mqtttest.NewClient(t, b.url, "rv/in/out")
			c.Publish(t, "rv/in", 1, []byte(`{"id": "a"}`))
			c.Publish(t, "rv/in", 1, []byte(`{"id": "b"}`))
			file := filepath.Join(e.dir, "nap")
			hosttest.WaitFor(t, 20*time.Second, "the first message handled", func() bool { return len(lines(file)) >= 1 })
			e.apply(e.config(t, fn("nap", "")))
			// a is still being handled, b waits, the filter is unsubscribed
			// (the embedded broker refuses the first UNSUBSCRIBE: its packet
			// id is that of a message in flight, and 0.5 s later it is tried
			// again).
			hosttest.WaitFor(t, 10*time.Second, "the filter unsubscribed", func() bool {
				return strings.Contains(e.host.Logs.String(), "mqtt: unsubscribed; handling the messages in hand")
			})
			e.apply(e.config(t, napRule("rv/in")))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.trigger.WaitSubscribed(ctx); err != nil {
				t.Fatal(err)
			}
			c.Publish(t, "rv/in", 1, []byte(`{"id": "c"}`))
			c.WaitFor(t, 20*time.Second, "the three results", func(m []mqtttest.Message) bool { return len(m) >= 3 })
			if n := mqtt.Retiring(e.trigger); n != 0 {
				t.Errorf("%d retirements still under way after the filter came back", n)
			}
			time.Sleep(quietWindow) // anything delivered twice would show
			logs := e.host.Logs.String()
			if strings.Contains(logs, "0x8e") || strings.Contains(logs, "mqtt: session ended") {
				t.Error("two sessions with the same client id, or the session ended, while the filter came back")
			}
			if !strings.Contains(logs, "mqtt: a rule subscribes to the filter again") {
				t.Error(`no "mqtt: a rule subscribes to the filter again" in the log`)
			}
			if got := lines(file); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Errorf("nap handled %v, want a, b and c once each", got)
			}
			if got := byID(t, c.Messages()); len(got) != 3 || len(c.Messages()) != 3 {
				t.Errorf("results %v, want one each for a, b and c", c.Messages())
			}
		})
	}
}

// A reload that replaces a filter by another: the old one stays subscribed
// until the new one is, so that a message published in between is handled.
// The proxy holds the new session's connection for a while.
func TestReplacedFilterSubscribedFirst(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			px := newCutProxy(t, b.url)
			e := start(t, broker{name: b.name, url: px.url(), embedded: b.embedded},
				fn("echo", "    triggers:\n      mqtt: [{subscribe: {topic: ch/a, qos: 1}, publish: {topic: ch/out, qos: 1}}]\n"))
			c := mqtttest.NewClient(t, b.url, "ch/out")
			px.setDelay(1500 * time.Millisecond)
			e.apply(e.config(t, fn("echo", "    triggers:\n      mqtt: [{subscribe: {topic: ch/+, qos: 1}, publish: {topic: ch/out, qos: 1}}]\n")))
			hosttest.WaitFor(t, 10*time.Second, "the new session's connection held by the proxy", px.holding)
			c.Publish(t, "ch/a", 1, []byte(`{"id": "between"}`))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.trigger.WaitSubscribed(ctx); err != nil {
				t.Fatal(err)
			}
			c.Publish(t, "ch/b", 1, []byte(`{"id": "after"}`))
			c.WaitFor(t, 10*time.Second, "the results of both messages", func(m []mqtttest.Message) bool {
				got := byID(t, m)
				return got["between"].Topic != "" && got["after"].Topic != ""
			})
			waitRetired(t, e.trigger, 10*time.Second)
		})
	}
}

// refusingHook lets every client in, and answers the first SUBSCRIBEs of
// filter as script says: "slow" holds the broker's reading of the client
// for a second and refuses, "refuse" refuses; later ones are accepted.
type refusingHook struct {
	mochi.HookBase
	filter string
	script []string
	n      atomic.Int32
}

func (h *refusingHook) ID() string { return "refusing" }

func (h *refusingHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}

func (h *refusingHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *refusingHook) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	if write || topic != h.filter {
		return true
	}
	n := int(h.n.Add(1))
	if n > len(h.script) {
		return true
	}
	if h.script[n-1] == "slow" {
		time.Sleep(time.Second)
	}
	return false
}

// A SUBSCRIBE that is not acknowledged in time, then one the broker
// refuses, on a connection that stays up: the trigger tries again, backing
// off, logging each failure, until the broker accepts.
func TestSubscribeRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	hook := &refusingHook{filter: "sr/+", script: []string{"slow", "refuse"}}
	if err := srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("test", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	url := mqtt.LocalURL(ln.Addr().String())
	e := startPrepared(t, broker{name: "refusing", url: url, embedded: true},
		fn("echo", "    triggers:\n      mqtt: [{subscribe: {topic: sr/+, qos: 1}, publish: {topic: sr-out, qos: 1}}]\n"),
		func(tr *mqtt.Trigger) { mqtt.SetTimeouts(tr, 30*time.Second, 300*time.Millisecond) })
	c := mqtttest.NewClient(t, url, "sr-out")
	c.Publish(t, "sr/x", 1, []byte(`{"id": "x"}`))
	c.WaitFor(t, 10*time.Second, "the result", func(m []mqtttest.Message) bool { return len(m) >= 1 })
	logs := e.host.Logs.String()
	if n := strings.Count(logs, "mqtt: subscribe failed; retrying"); n != 2 {
		t.Errorf("%d subscribe failures logged, want 2 (one timed out, one refused)", n)
	}
	if hook.n.Load() != 3 {
		t.Errorf("the broker got %d SUBSCRIBEs, want 3", hook.n.Load())
	}
}

// Close with a retirement under way waits for it only until its context is
// done, then cuts it: the session stays with the broker, with the messages
// not acknowledged.
func TestCloseCutsRetirement(t *testing.T) {
	b := brokers(t)[0]
	e := start(t, b, fn("long", "    triggers:\n      mqtt: [{subscribe: {topic: cc/in, qos: 1}}]\n"), oneInFlight)
	c := mqtttest.NewClient(t, b.url)
	c.Publish(t, "cc/in", 1, []byte(`{"id": "a"}`))
	c.Publish(t, "cc/in", 1, []byte(`{"id": "b"}`))
	file := filepath.Join(e.dir, "long")
	hosttest.WaitFor(t, 20*time.Second, "the first message handled", func() bool { return len(lines(file)) >= 1 })
	e.apply(e.config(t, fn("long", "")))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	e.trigger.Stop(ctx)
	if d := time.Since(began); d > 2500*time.Millisecond {
		t.Errorf("Close took %v with a context of 300ms", d)
	}
	present, ids := probeSession(t, b.url, mqtt.ClientIDFor(e.opts, "cc/in"), time.Second)
	if !present || !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("after Close cut the retirement: session present %v, messages delivered again %v; want the session with a and b", present, ids)
	}
}
