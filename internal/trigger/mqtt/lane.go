package mqtt

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// lane is the session of one topic filter: it queues what arrives, handles
// up to InFlight messages at once and acknowledges each once its rules are
// done with it.
type lane struct {
	t        *Trigger
	filter   string
	clientID string
	log      *slog.Logger
	rules    atomic.Pointer[[]*rule]
	// cm is set by newLane, or by the first connection if that comes first.
	cm atomic.Pointer[autopaho.ConnectionManager]
	// conn counts the connections going up and down: a SUBSCRIBE is retried
	// while it is unchanged, and a retirement during which it changed keeps
	// the session (an acknowledgement may not have reached the broker).
	conn atomic.Uint64

	subMu  sync.Mutex   // one SUBSCRIBE or UNSUBSCRIBE at a time
	subQoS atomic.Int32 // the QoS last subscribed with; -1: none (written under subMu)
	subOn  uint64       // the connection (conn) it was subscribed on (under subMu)

	rmu sync.Mutex  // guards ret
	ret *retirement // the retirement under way, if any

	qmu      sync.Mutex
	queue    []*message
	queued0  int
	seq      uint64 // of the last message queued
	hold     bool   // retiring: the messages after boundary wait
	boundary uint64
	running  int           // messages taken from the queue and not done yet
	progress chan struct{} // closed and replaced whenever running drops
	wake     chan struct{}

	slots      chan struct{}
	stop       chan struct{}
	stopOnce   sync.Once
	stopping   atomic.Bool
	ctx        context.Context // cancelled when a drain runs out of time
	cancel     context.CancelFunc
	handlers   sync.WaitGroup
	dispatched chan struct{} // closed when the dispatcher has returned
	ending     atomic.Bool   // the disconnect ends the session
	dropped0   atomic.Int64
	unacked    atomic.Int64 // QoS 1 messages handled and left unacknowledged
}

// message is one PUBLISH received on a session.
type message struct {
	pub     *paho.Publish
	client  *paho.Client // the connection it came on: acknowledged and answered there
	arrived time.Time
	seq     uint64 // its place among the messages of the lane, from 1
}

// received queues a message. It runs on the client's reading path and never
// blocks: the broker bounds the QoS 1 messages in flight (MQTT 5 Receive
// Maximum, or the embedded broker's own limit), and QoS 0 messages past the
// backlog are dropped.
func (l *lane) received(pr paho.PublishReceived) (bool, error) {
	if l.stopping.Load() {
		// Not acknowledged: the broker delivers it again to the next session.
		return true, nil
	}
	m := &message{pub: pr.Packet, client: pr.Client, arrived: time.Now()}
	l.qmu.Lock()
	if m.pub.QoS == 0 {
		if l.queued0 >= qos0Backlog*l.t.opts.InFlight {
			l.qmu.Unlock()
			if n := l.dropped0.Add(1); n&(n-1) == 0 { // 1, 2, 4, 8, ...
				l.log.Warn("mqtt: QoS 0 backlog full; QoS 0 messages dropped", "dropped", n, "topic", m.pub.Topic)
			}
			return true, nil
		}
		l.queued0++
	}
	l.seq++
	m.seq = l.seq
	l.queue = append(l.queue, m)
	l.qmu.Unlock()
	l.poke()
	return true, nil
}

// poke wakes the dispatcher.
func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// dispatch hands queued messages to handlers, InFlight at a time.
func (l *lane) dispatch() {
	defer close(l.dispatched)
	for {
		m := l.next()
		if m == nil {
			return
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.stop:
			l.settled()
			return
		}
		if l.stopping.Load() {
			<-l.slots
			l.settled()
			return
		}
		l.handlers.Add(1)
		go l.handle(m)
	}
}

// next returns the oldest queued message, or nil once the lane stops. While
// the lane retires, the messages that arrived after it unsubscribed wait.
func (l *lane) next() *message {
	for {
		if l.stopping.Load() {
			return nil
		}
		l.qmu.Lock()
		if len(l.queue) > 0 && (!l.hold || l.queue[0].seq <= l.boundary) {
			m := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			if m.pub.QoS == 0 {
				l.queued0--
			}
			l.running++
			l.qmu.Unlock()
			return m
		}
		l.qmu.Unlock()
		select {
		case <-l.wake:
		case <-l.stop:
			return nil
		}
	}
}

// settled counts a message taken by next as done.
func (l *lane) settled() {
	l.qmu.Lock()
	l.running--
	close(l.progress)
	l.progress = make(chan struct{})
	l.qmu.Unlock()
}

// drain stops reading, and waits for the messages being handled until ctx
// is done; then it cancels those still running (they stay unacknowledged)
// and gives their acknowledgements time to go out.
func (l *lane) drain(ctx context.Context) {
	l.halt()
	waitOrCancel(ctx, &l.handlers, func() {
		l.log.Warn("mqtt: drain timed out; the messages still being handled stay unacknowledged and are delivered again")
		l.cancel()
	})
	time.Sleep(3 * ackInterval)
	l.cancel()
}

// halt stops reading and dispatching, and waits for the dispatcher.
func (l *lane) halt() {
	l.stopOnce.Do(func() {
		l.stopping.Store(true)
		close(l.stop)
	})
	<-l.dispatched
}

// close drains the lane and disconnects; the session stays with the broker.
func (l *lane) close(ctx context.Context) {
	l.drain(ctx)
	l.disconnect()
}
