// Package mqtt is the MQTT trigger: an embedded broker that `polyfn serve`
// runs by default, and the client that subscribes to the topics of the
// functions' triggers.mqtt rules, invokes the functions and publishes their
// results, with at-least-once delivery for QoS 1.
package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is the embedded MQTT broker (MQTT 3.1.1 and 5). It lives as long as
// the polyfn process, keeps its sessions in memory and lets any client in:
// it listens on the loopback interface unless mqtt.listen says otherwise.
type Broker struct {
	srv *mochi.Server
	ln  net.Listener
}

// StartBroker listens on addr (host:port; port 0 picks a free one) and
// serves MQTT there until Close. A busy address is an error naming the
// address and the mqtt.listen key.
func StartBroker(addr string, log *slog.Logger) (*Broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt.listen: the embedded MQTT broker cannot listen on %s: %w (is another broker running there? set mqtt.listen to a free address, or mqtt.embedded: false)", addr, unwrapOp(err))
	}
	caps := mochi.NewDefaultServerCapabilities()
	// The broker holds every unacknowledged QoS 1 message of a session; past
	// this it drops. 65535 is all the packet identifiers a session has.
	caps.MaximumInflight = math.MaxUint16
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi logs its start, hooks and listeners at info; polyfn logs the
		// broker's address itself and keeps the broker's warnings.
		Logger: slog.New(minLevel{h: log.With("component", "mqtt-broker").Handler(), min: slog.LevelWarn}),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	if err := srv.AddListener(listeners.NewNet("polyfn", ln)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	return &Broker{srv: srv, ln: ln}, nil
}

// Addr is the address the broker listens on, with the real port.
func (b *Broker) Addr() string { return b.ln.Addr().String() }

// URL is how a client on this machine reaches the broker: tcp://ADDR, with
// an unspecified host (0.0.0.0, ::) replaced by the loopback address.
func (b *Broker) URL() string { return LocalURL(b.Addr()) }

// Close disconnects every client and stops listening.
func (b *Broker) Close() { _ = b.srv.Close() }

// LocalURL turns a listen address into the URL a local client dials.
func LocalURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// unwrapOp drops the "listen tcp ADDR:" prefix a *net.OpError carries, the
// address being in the message already.
func unwrapOp(err error) error {
	if op, ok := err.(*net.OpError); ok && op.Err != nil {
		return op.Err
	}
	return err
}

// minLevel drops records below min.
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(a), min: m.min}
}
func (m minLevel) WithGroup(n string) slog.Handler { return minLevel{h: m.h.WithGroup(n), min: m.min} }
