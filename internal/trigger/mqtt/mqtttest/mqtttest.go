// Package mqtttest starts a real external broker (mosquitto) for tests and
// gives them an MQTT client that publishes and collects messages.
package mqtttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/polyfn/polyfn/internal/testlog"
	"github.com/polyfn/polyfn/internal/testnet"
)

// MosquittoPath is where the Debian package installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// Mosquitto starts a mosquitto broker on a free loopback port with a
// generated config (anonymous clients, no persistence, no limit on the
// messages it queues for a session) and returns its URL. It is stopped by
// pid when the test ends. Without mosquitto the test fails when CI=true and
// is skipped otherwise.
func Mosquitto(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat(MosquittoPath); serr == nil {
			bin, err = MosquittoPath, nil
		}
	}
	if err != nil {
		msg := "mosquitto is not installed (apt-get install -y mosquitto; .ci/run installs it): the tests against an external broker need it"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	// A port the kernel does not hand out by itself: nothing takes it
	// between this check and mosquitto's listen.
	addr := testnet.StableAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n", port)
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		conf += "user root\n" // as root mosquitto would switch to the mosquitto user
	}
	file := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", file)
	var logs testlog.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	// Pdeathsig: a test binary that dies (a panic) takes the broker along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("mosquitto exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto does not accept connections on %s: %s", addr, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "tcp://" + addr
}

// Message is what a Client received.
type Message struct {
	Topic   string
	QoS     byte
	Payload []byte
}

// Client is an MQTT 5 test client with a clean session: it publishes, and
// collects what arrives on the topics it subscribed to.
type Client struct {
	cm   *autopaho.ConnectionManager
	mu   sync.Mutex
	msgs []Message
}

// NewClient connects to brokerURL and subscribes to topics at QoS 1. It
// disconnects when the test ends.
func NewClient(t testing.TB, brokerURL string, topics ...string) *Client {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{}
	var id [6]byte
	_, _ = rand.Read(id[:])
	cfg := autopaho.ClientConfig{ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ClientConfig: paho.ClientConfig{ClientID: fmt.Sprintf("test-%x", id),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.mu.Lock()
				c.msgs = append(c.msgs, Message{Topic: pr.Packet.Topic, QoS: pr.Packet.QoS, Payload: pr.Packet.Payload})
				c.mu.Unlock()
				return true, nil
			}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.cm, err = autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.cm.Disconnect(ctx)
	})
	if err := c.cm.AwaitConnection(ctx); err != nil {
		t.Fatalf("connect to %s: %v", brokerURL, err)
	}
	if len(topics) > 0 {
		sub := &paho.Subscribe{}
		for _, tp := range topics {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: tp, QoS: 1})
		}
		if _, err := c.cm.Subscribe(ctx, sub); err != nil {
			t.Fatalf("subscribe %v: %v", topics, err)
		}
	}
	return c
}

// Publish publishes payload to topic (at QoS 1: until the broker has it).
func (c *Client) Publish(t testing.TB, topic string, qos byte, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload}); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// PublishRetained publishes payload to topic at QoS 1 with the retain flag.
func (c *Client) PublishRetained(t testing.TB, topic string, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: payload}); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// Messages returns what arrived so far.
func (c *Client) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.msgs...)
}

// On returns what arrived on topic so far.
func (c *Client) On(topic string) []Message {
	var out []Message
	for _, m := range c.Messages() {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor polls cond on the messages received until it holds, failing the
// test after timeout.
func (c *Client) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Message) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond(c.Messages()) {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			for _, m := range c.Messages() {
				fmt.Fprintf(&b, "  %s (QoS %d): %s\n", m.Topic, m.QoS, m.Payload)
			}
			t.Fatalf("timed out after %s waiting for %s; received:\n%s", timeout, what, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
