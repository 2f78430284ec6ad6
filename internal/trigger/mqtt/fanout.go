package mqtt

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// fanout is the embedded broker's hook that hands each inbound QoS 1 and 2
// message to its subscribers' sessions itself, so that two things hold that
// mochi v2.7.9 alone does not give:
//
//  1. The message is in every subscriber's session, and on disk when the
//     broker has a store, before its PUBACK goes out. mochi handles an
//     inbound QoS 1 PUBLISH as OnPublish → PUBACK to the publisher →
//     publishToSubscribers, so a kill between the PUBACK and the writes
//     would lose a message its publisher was told the broker had. fanout's
//     OnPublish injects the message through an inline client (the server's
//     own path for messages that need no acknowledgement: retained message,
//     subscribers, OnQosPublish for each) and then answers
//     CodeSuccessIgnore, which makes mochi acknowledge the message without
//     forwarding it again. If a write failed meanwhile, the message is
//     refused instead: MQTT 5 publishers get a PUBACK with reason 0x80,
//     MQTT 3 publishers none (and are disconnected), and send it again.
//
//  2. No message is lost while a session is taken over by a new connection
//     (a trigger reconnecting; after a restart, the trigger connecting to
//     the session the store kept). mochi takes a session over in steps
//     (inheritClientSession, then Clients.Add): it copies the old
//     connection's messages to the new one, clears the old one's, and only
//     then routes to the new connection. A message routed meanwhile lands
//     in the old connection, which nobody reads again: it was never sent,
//     and its packet identifier could be reused (and its record in the
//     store overwritten). mochi can also write such a message to the new
//     connection before its CONNACK. So the fan-out of each message holds
//     routing for reading, and a connection taking a session over holds it
//     for writing from OnSessionEstablish (before the take-over) until its
//     CONNACK is written (OnPacketSent): no message is routed during a
//     take-over; those that arrive wait for it, a few milliseconds.
//
// QoS 0 messages are left to mochi: they are not acknowledged, and a
// session does not keep them.
type fanout struct {
	mochi.HookBase
	srv   *mochi.Server
	store *store // nil without one
	log   *slog.Logger

	// injectors are inline clients that carry messages to their subscribers;
	// each is used by one publish at a time, under the id of that message's
	// publisher.
	injectors sync.Pool

	routing  sync.RWMutex
	takeover atomic.Pointer[takeover]
}

// takeoverHold bounds how long a take-over holds routing when its CONNACK
// is never written (the connection went away during the take-over).
const takeoverHold = 2 * time.Second

// takeover is a connection taking a session over, holding routing.
type takeover struct {
	cl    *mochi.Client
	once  sync.Once
	timer *time.Timer
}

func newFanout(srv *mochi.Server, st *store, log *slog.Logger) *fanout {
	f := &fanout{srv: srv, store: st, log: log}
	f.injectors.New = func() any { return srv.NewClient(nil, "local", "", true) }
	return f
}

// ID names the hook in mochi's log records.
func (f *fanout) ID() string { return "mqtt-fanout" }

func (f *fanout) Provides(b byte) bool {
	return b == mochi.OnPublish || b == mochi.OnSessionEstablish || b == mochi.OnPacketSent
}

// OnPublish hands a QoS 1 or 2 message to its subscribers (stored, when
// the broker has a store) before mochi acknowledges it.
func (f *fanout) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		// QoS 0 is not acknowledged; an inline client is ours, injecting.
		return pk, nil
	}
	var failures uint64
	if f.store != nil {
		failures = f.store.failures.Load()
	}
	inj := f.injectors.Get().(*mochi.Client)
	inj.ID = cl.ID // the message's origin: subscriptions with No Local skip it
	inj.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	fwd := pk.Copy(true)
	// mochi resolved the alias into TopicName; the alias is the publisher's.
	fwd.Properties.TopicAlias, fwd.Properties.TopicAliasFlag = 0, false
	f.routing.RLock()
	err := f.srv.InjectPacket(inj, fwd)
	f.routing.RUnlock()
	f.injectors.Put(inj)
	if err == nil && f.store != nil && f.store.failures.Load() != failures {
		err = errors.New("a write failed")
	}
	if err != nil {
		f.log.Error("mqtt store: a message was refused, not acknowledged: its publisher keeps it", "client", cl.ID, "topic", pk.TopicName, "error", err)
		if cl.Properties.ProtocolVersion == 5 {
			return pk, storeRefused
		}
		_ = f.srv.DisconnectClient(cl, storeRefused)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnSessionEstablish holds routing while cl takes over the session of an
// existing connection (see above).
func (f *fanout) OnSessionEstablish(cl *mochi.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	if _, ok := f.srv.Clients.Get(cl.ID); !ok {
		return // a new session: nothing to take over
	}
	f.routing.Lock()
	t := &takeover{cl: cl}
	t.timer = time.AfterFunc(takeoverHold, func() { f.release(t) })
	f.takeover.Store(t)
}

// OnPacketSent ends a take-over once its CONNACK is written.
func (f *fanout) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Connack {
		return
	}
	if t := f.takeover.Load(); t != nil && t.cl == cl {
		f.release(t)
	}
}

// release lets routing go on after take-over t.
func (f *fanout) release(t *takeover) {
	t.once.Do(func() {
		t.timer.Stop()
		f.takeover.CompareAndSwap(t, nil)
		f.routing.Unlock()
	})
}
