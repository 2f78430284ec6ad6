package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is the embedded MQTT broker (MQTT 3.1.1 and 5). It lives as long as
// the polyfn process and lets any client in: it listens on the loopback
// interface unless mqtt.listen says otherwise. With a store, its sessions,
// subscriptions, retained messages and the QoS 1 and 2 messages its
// sessions hold survive a restart, kill -9 included; without one they are
// in memory only.
type Broker struct {
	srv       *mochi.Server
	ln        net.Listener
	store     *store // nil without one
	closeOnce sync.Once
}

// BrokerOptions say where the embedded broker listens and keeps its state.
type BrokerOptions struct {
	// Listen is host:port; port 0 picks a free one.
	Listen string
	// Store is the directory of the broker's store, created if missing and
	// held by this process alone. Empty: sessions in memory only.
	Store string
}

// StartBroker opens the store, reads back what it holds, listens on
// o.Listen and serves MQTT there until Close. A busy address is an error
// naming the address and the mqtt.listen key; a store in use by another
// process, or one that cannot be read, is an error naming it.
func StartBroker(o BrokerOptions, log *slog.Logger) (*Broker, error) {
	caps := mochi.NewDefaultServerCapabilities()
	// The broker holds every unacknowledged QoS 1 message of a session; past
	// this it drops. 65535 is all the packet identifiers a session has.
	caps.MaximumInflight = math.MaxUint16
	// mochi drops a message a session held longer than this (24 hours by
	// default); it keeps them as long as the trigger's sessions last.
	caps.MaximumMessageExpiryInterval = sessionExpiry
	brokerLog := log.With("component", "mqtt-broker")
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi logs its start, hooks and listeners at info; polyfn logs the
		// broker's address itself and keeps the broker's warnings.
		Logger: slog.New(minLevel{h: brokerLog.Handler(), min: slog.LevelWarn}),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	var st *store
	if o.Store != "" {
		var err error
		if st, err = openStore(o.Store, srv, brokerLog); err != nil {
			return nil, err
		}
		if !st.lazy {
			if err := st.verify(); err != nil {
				st.lock.Close()
				return nil, unreadable(o.Store, err)
			}
		}
		if err := srv.AddHook(st, st.options()); err != nil {
			st.lock.Close()
			return nil, unreadable(o.Store, err)
		}
	}
	if err := srv.AddHook(newFanout(srv, st, brokerLog), nil); err != nil {
		if st != nil {
			st.lock.Close()
		}
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("mqtt.listen: the embedded MQTT broker cannot listen on %s: %w (is another broker running there? set mqtt.listen to a free address, or mqtt.embedded: false)", o.Listen, unwrapOp(err))
	}
	if err := srv.AddListener(listeners.NewNet("polyfn", ln)); err != nil {
		ln.Close()
		_ = srv.Close()
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	// Serve reads the store back before the listener accepts anyone.
	err = srv.Serve()
	if err == nil && st != nil {
		// The storage hook logs what it cannot read back and goes on.
		err = st.failed(0)
	}
	if err != nil {
		_ = srv.Close()
		if st != nil {
			return nil, unreadable(o.Store, err)
		}
		return nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	return &Broker{srv: srv, ln: ln, store: st}, nil
}

// unreadable is the error of a store that cannot be opened or read back.
func unreadable(dir string, err error) error {
	return fmt.Errorf("mqtt store %s cannot be read: %w (move the directory away to start with an empty store, or set mqtt.persist: false)", dir, err)
}

// Addr is the address the broker listens on, with the real port.
func (b *Broker) Addr() string { return b.ln.Addr().String() }

// URL is how a client on this machine reaches the broker: tcp://ADDR, with
// an unspecified host (0.0.0.0, ::) replaced by the loopback address.
func (b *Broker) URL() string { return LocalURL(b.Addr()) }

// Store is the directory of the broker's store; empty when it has none.
func (b *Broker) Store() string {
	if b.store == nil {
		return ""
	}
	return b.store.dir
}

// Close disconnects every client, stops listening and closes the store,
// once they are gone. It is safe to call more than once.
func (b *Broker) Close() { b.closeOnce.Do(func() { _ = b.srv.Close() }) }

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
