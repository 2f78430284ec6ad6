package mqtt_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/mqtt/mqtttest"
)

// storeBroker starts an embedded broker with its store in dir, closed when
// the test ends (Close may be called before).
func storeBroker(t *testing.T, dir string) *mqtt.Broker {
	t.Helper()
	b, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0", Store: dir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// session is an MQTT 5 client with a persistent session (expiry one hour)
// that acknowledges what it receives and records the payloads.
type session struct {
	c   *paho.Client
	mu  sync.Mutex
	got []string
}

// connect connects as id to the broker at brokerURL: with clean, a new
// session replaces any old one; without, the old one goes on.
func connect(t *testing.T, brokerURL, id string, clean bool) *session {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{}
	s.c = paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.got = append(s.got, string(pr.Packet.Payload))
			s.mu.Unlock()
			return true, nil
		}}})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = s.c.Disconnect(&paho.Disconnect{}) })
	return s
}

func (s *session) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func (s *session) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// leave disconnects, keeping the session on the broker.
func (s *session) leave(t *testing.T) {
	t.Helper()
	if err := s.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not disconnect")
	}
}

func publishN(t *testing.T, c *mqtttest.Client, topic string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		c.Publish(t, topic, 1, []byte("m"+strconv.Itoa(i)))
	}
}

func names(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, "m"+strconv.Itoa(i))
	}
	return out
}

// A session's subscription and the QoS 1 messages it holds, and retained
// messages, outlive the broker: the next broker on the same store delivers
// them, each once, and forgets those acknowledged.
func TestBrokerStoreRestart(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	sub := connect(t, b.URL(), "sub", true)
	sub.subscribe(t, "s/t")
	sub.leave(t)
	pub := mqtttest.NewClient(t, b.URL())
	const n = 50
	publishN(t, pub, "s/t", 0, n)
	pub.PublishRetained(t, "s/r", []byte("kept"))
	b.Close()

	b = storeBroker(t, dir)
	// The subscription came back too: a message published before the
	// session returns is held for it.
	pub = mqtttest.NewClient(t, b.URL())
	publishN(t, pub, "s/t", n, n+1)
	sub = connect(t, b.URL(), "sub", false)
	hosttest.WaitFor(t, 10*time.Second, "the messages held for the session", func() bool { return len(sub.received()) >= n+1 })
	got := sub.received()
	slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a[1:]); y, _ := strconv.Atoi(b[1:]); return x - y })
	if !slices.Equal(got, names(0, n+1)) {
		t.Fatalf("after a restart the session got %v, want m0 to m%d once each", got, n)
	}
	r := mqtttest.NewClient(t, b.URL(), "s/r")
	r.WaitFor(t, 10*time.Second, "the retained message", func(m []mqtttest.Message) bool { return len(m) == 1 && string(m[0].Payload) == "kept" })
	hosttest.WaitFor(t, 10*time.Second, "the acknowledged messages to leave the store", func() bool { return mqtt.StoredMessages(b, "sub") == 0 })
	sub.leave(t)
	b.Close()

	b = storeBroker(t, dir)
	sub = connect(t, b.URL(), "sub", false)
	pub = mqtttest.NewClient(t, b.URL())
	publishN(t, pub, "s/t", n+1, n+2)
	hosttest.WaitFor(t, 10*time.Second, "the message published after the second restart", func() bool {
		return slices.Contains(sub.received(), "m"+strconv.Itoa(n+1))
	})
	if got := sub.received(); len(got) != 1 {
		t.Fatalf("after the messages were acknowledged and the broker restarted, the session got %v, want only m%d", got, n+1)
	}
}

// pubackWatch records, at each PUBACK the broker writes, how many messages
// the store holds for the session sub.
type pubackWatch struct {
	mochi.HookBase
	b    *mqtt.Broker
	mu   sync.Mutex
	seen []int
}

func (w *pubackWatch) ID() string           { return "puback-watch" }
func (w *pubackWatch) Provides(b byte) bool { return b == mochi.OnPacketSent }
func (w *pubackWatch) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Puback {
		w.mu.Lock()
		w.seen = append(w.seen, mqtt.StoredMessages(w.b, "sub"))
		w.mu.Unlock()
	}
}

// The broker acknowledges a QoS 1 message only once the store holds it for
// every session it is for (mochi alone writes the PUBACK first).
func TestBrokerStoresBeforePUBACK(t *testing.T) {
	b := storeBroker(t, t.TempDir())
	sub := connect(t, b.URL(), "sub", true)
	sub.subscribe(t, "s/t")
	sub.leave(t)
	w := &pubackWatch{b: b}
	if err := mqtt.AddHook(b, w); err != nil {
		t.Fatal(err)
	}
	pub := mqtttest.NewClient(t, b.URL())
	const n = 20
	publishN(t, pub, "s/t", 0, n)
	hosttest.WaitFor(t, 10*time.Second, "every PUBACK", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.seen) == n
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, held := range w.seen {
		if held != i+1 {
			t.Fatalf("when the PUBACKs went out the store held %v messages for the session; want 1, 2, 3, …: the message stored before its PUBACK", w.seen)
		}
	}
}

// A store is held by one broker at a time; a second one is refused at
// once, with the store and the process that holds it named.
func TestBrokerStoreInUse(t *testing.T) {
	dir := t.TempDir()
	b := storeBroker(t, dir)
	_, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0", Store: dir}, slog.New(slog.DiscardHandler))
	want := fmt.Sprintf("mqtt store %s is in use by process %d", dir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a second broker on the store: got %v, want an error saying %q", err, want)
	}
	b.Close()
	storeBroker(t, dir) // released by Close
}

// A store that cannot be read stops the broker from starting, with an
// error naming it; nothing listens.
func TestBrokerStoreUnreadable(t *testing.T) {
	t.Run("corrupt", func(t *testing.T) {
		dir := t.TempDir()
		storeBroker(t, dir).Close()
		manifest := filepath.Join(dir, "MANIFEST")
		if err := os.WriteFile(manifest, []byte("not a manifest at all, not at all"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0", Store: dir}, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "mqtt store "+dir+" cannot be read") || !strings.Contains(strings.ToLower(err.Error()), "manifest") {
			t.Fatalf("got %v, want an error naming the store and its manifest", err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "store")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := mqtt.StartBroker(mqtt.BrokerOptions{Listen: "127.0.0.1:0", Store: file}, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), file) {
			t.Fatalf("got %v, want an error naming %s", err, file)
		}
	})
}

// A message the store could not write is refused, not acknowledged: the
// MQTT 5 publisher gets a PUBACK with an error reason and keeps it.
func TestBrokerStoreWriteFails(t *testing.T) {
	b := storeBroker(t, t.TempDir())
	sub := connect(t, b.URL(), "sub", true)
	sub.subscribe(t, "s/t")
	pub := connect(t, b.URL(), "pub", true)
	mqtt.BreakStore(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pub.c.Publish(ctx, &paho.Publish{Topic: "s/t", QoS: 1, Payload: []byte("m0")})
	if err == nil || resp == nil || resp.ReasonCode != packets.ErrUnspecifiedError.Code {
		t.Fatalf("publish with the store broken: got %+v, %v; want a PUBACK with reason 0x80", resp, err)
	}
}
