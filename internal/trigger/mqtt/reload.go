package mqtt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/config"
)

// rule is one triggers.mqtt entry of a function.
type rule struct {
	function string
	cfg      config.MQTTRule
	// sem bounds the invocations the trigger runs at once in the function's
	// pool (shared by every rule of the functions of that pool): as many as
	// the pool takes, so that the trigger waits instead of being turned
	// away as overloaded.
	sem chan struct{}
}

// update makes cfg's rules the trigger's, each bounded by the capacity h
// gives its function: new filters get a session, changed ones their new
// rules, removed ones are retired (see retire) once the new ones are
// subscribed, and a filter removed by an earlier update whose retirement
// is still under way takes its lane back.
func (t *Trigger) update(cfg *config.Config, h Host) {
	sems := map[string]chan struct{}{}
	want := map[string][]*rule{}
	for _, f := range cfg.Functions {
		if len(f.Triggers.MQTT) == 0 {
			continue
		}
		pool, capacity, ok := h.Capacity(f.Name)
		if !ok {
			pool, capacity = "function "+f.Name, 1 // not run: every invocation is NotFound
		}
		if sems[pool] == nil {
			sems[pool] = make(chan struct{}, max(1, capacity))
		}
		for _, rc := range f.Triggers.MQTT {
			if rc.Publish != nil && TopicMatches(rc.Subscribe.Topic, rc.Publish.Topic) {
				t.log.Warn("mqtt: the rule publishes to a topic its own subscription matches: each result invokes the function again",
					"function", f.Name, "subscribe", rc.Subscribe.Topic, "publish", rc.Publish.Topic)
			}
			k := sharedFilter(t.opts.Share, rc.Subscribe.Topic)
			want[k] = append(want[k], &rule{function: f.Name, cfg: rc, sem: sems[pool]})
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	// The new filters first: the lanes being retired below unsubscribe only
	// once these are subscribed (or the wait for them times out), so that a
	// filter replaced by another leaves no gap.
	var added []*lane
	for _, f := range sortedKeys(want) {
		if l := t.lanes[f]; l != nil {
			l.setRules(want[f])
			continue
		}
		if r := t.retiring[f]; r != nil {
			// Removed by an earlier reload and back before its retirement
			// ended: the same lane (one session per client id) takes the
			// filter again.
			delete(t.retiring, f)
			if r.lane.revive(r, want[f]) {
				t.lanes[f] = r.lane
				added = append(added, r.lane)
				continue
			}
			// Too late: it is disconnecting. The new session begins once
			// the old one is gone, so that neither takes the other over.
			<-r.done
		}
		l, err := t.newLane(f, want[f])
		if err != nil {
			t.log.Error("mqtt: cannot subscribe", "filter", f, "error", err)
			continue
		}
		t.lanes[f] = l
		added = append(added, l)
	}
	for _, f := range sortedKeys(t.lanes) {
		if _, ok := want[f]; ok {
			continue
		}
		l := t.lanes[f]
		delete(t.lanes, f)
		r := l.beginRetire(t.retireTimeout)
		t.retiring[f] = r
		t.retired.Add(1)
		go func() {
			defer t.retired.Done()
			l.retire(r, added)
			t.mu.Lock()
			if t.retiring[f] == r {
				delete(t.retiring, f)
			}
			t.mu.Unlock()
		}()
	}
}

// retirement is the end of a lane whose filter no rule subscribes to any
// more. Until it reaches the disconnection (final), a reload that brings the
// filter back revives the lane instead.
type retirement struct {
	lane    *lane
	ctx     context.Context // done at the retire timeout, or when Stop cuts it
	cancel  context.CancelFunc
	revived chan struct{} // closed by revive
	final   bool          // under lane.rmu: disconnecting, too late to revive
	done    chan struct{} // closed when retire has returned
}

// retiring reports whether a retirement is under way.
func (l *lane) retiring() bool {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	return l.ret != nil
}

func (l *lane) beginRetire(timeout time.Duration) *retirement {
	r := &retirement{lane: l, revived: make(chan struct{}), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithTimeout(context.Background(), timeout)
	l.rmu.Lock()
	l.ret = r
	l.rmu.Unlock()
	return r
}

// revive makes a lane being retired by r take rules, as if it had never
// been removed: the messages held are handled and the filter subscribed
// again. It returns false when r has gone too far.
func (l *lane) revive(r *retirement, rules []*rule) bool {
	l.rmu.Lock()
	if l.ret != r || r.final {
		l.rmu.Unlock()
		return false
	}
	l.ret = nil
	l.qmu.Lock()
	l.hold = false
	l.qmu.Unlock()
	l.rmu.Unlock()
	close(r.revived)
	l.rules.Store(&rules)
	l.poke()
	l.log.Info("mqtt: a rule subscribes to the filter again; its session goes on")
	go l.subscribe(l.conn.Load(), true, false)
	return true
}

// retire ends the session of a filter no rule subscribes to any more. Once
// the filters added by the same reload (added) are subscribed, it
// unsubscribes; the messages received until then are handled and
// acknowledged, those that arrive later wait. When none is left and the
// acknowledgements are out, the disconnection ends the session, dropping
// with it what waits. If the retire timeout (or Stop) comes first, or if an
// acknowledgement may have been lost with a connection, the disconnection
// keeps the session instead, with every message not acknowledged: the
// broker delivers them if the filter comes back, or drops them when the
// session expires.
func (l *lane) retire(r *retirement, added []*lane) {
	defer close(r.done)
	defer r.cancel()
	l.log.Info("mqtt: no rule subscribes to the filter any more; ending its session once the messages in hand are handled")
	for _, n := range added {
		if !n.waitSubscribed(r, l.t.subscribeTimeout) {
			break
		}
	}
	conn, unacked := l.conn.Load(), l.unacked.Load()
	if !l.unsubscribe(r) {
		return // revived
	}
	timedOut := false
wait:
	for {
		l.qmu.Lock()
		idle := l.running == 0 && (len(l.queue) == 0 || l.queue[0].seq > l.boundary)
		progress := l.progress
		l.qmu.Unlock()
		if idle {
			break
		}
		select {
		case <-progress:
		case <-r.revived:
			return
		case <-r.ctx.Done():
			timedOut = true
			break wait
		}
	}
	if !timedOut {
		// The acknowledgements go out every ackInterval.
		select {
		case <-time.After(3 * ackInterval):
		case <-r.revived:
			return
		case <-r.ctx.Done():
			timedOut = true
		}
	}
	l.rmu.Lock()
	if l.ret != r {
		l.rmu.Unlock()
		return
	}
	r.final = true
	l.rmu.Unlock()
	l.halt()
	if timedOut {
		l.cancel()
	}
	l.handlers.Wait()
	l.cancel()
	l.qmu.Lock()
	waiting := len(l.queue)
	l.qmu.Unlock()
	switch {
	case timedOut:
		l.log.Warn("mqtt: retiring the filter timed out; its session stays with the broker, which delivers the messages not acknowledged if a rule subscribes to the filter again", "waiting", waiting)
	case l.conn.Load() != conn || l.unacked.Load() != unacked:
		l.log.Warn("mqtt: messages of the filter were left unacknowledged; its session stays with the broker, which delivers them if a rule subscribes to the filter again", "waiting", waiting)
	default:
		l.ending.Store(true)
		if waiting > 0 {
			l.log.Info("mqtt: messages that arrived after the filter was unsubscribed are dropped with its session", "dropped", waiting)
		}
	}
	l.disconnect()
	if l.ending.Load() {
		l.log.Info("mqtt: session ended")
	}
}

// waitSubscribed waits until l is subscribed, for at most timeout, while r
// goes on; false when r was revived or cut.
func (l *lane) waitSubscribed(r *retirement, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !l.subscribed() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return true
		case <-r.revived:
			return false
		case <-r.ctx.Done():
			return false
		}
	}
	return true
}

// unsubscribe unsubscribes from the filter, then holds the messages that
// arrive later, if r is still the retirement under way; false when it is
// not. An UNSUBSCRIBE that the broker refuses or does not acknowledge in
// time is tried again, backing off, while the connection is up and r goes
// on; past that the session, ended or kept, still has the subscription.
func (l *lane) unsubscribe(r *retirement) bool {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	conn := l.conn.Load()
	wait := subscribeRetry
	for {
		if !l.retiringBy(r) {
			return false
		}
		ctx, cancel := context.WithTimeout(r.ctx, l.t.subscribeTimeout)
		ua, err := l.cm.Load().Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{l.filter}})
		cancel()
		if err == nil {
			l.log.Debug("mqtt: unsubscribed; handling the messages in hand")
			break
		}
		if r.ctx.Err() != nil || l.conn.Load() != conn ||
			errors.Is(err, paho.ErrConnectionLost) || errors.Is(err, autopaho.ConnectionDownError) {
			l.log.Debug("mqtt: unsubscribe interrupted", "error", err)
			break
		}
		if ua != nil {
			err = fmt.Errorf("the broker refused the unsubscription: reason codes %v", ua.Reasons)
		}
		l.log.Warn("mqtt: unsubscribe failed; retrying", "in", wait, "error", err)
		select {
		case <-time.After(wait):
		case <-r.ctx.Done():
		case <-r.revived:
		}
		wait = min(2*wait, subscribeRetryMax)
	}
	// Whether or not the broker got it, a revival subscribes again.
	l.subQoS.Store(-1)
	l.subOn = 0
	l.rmu.Lock()
	defer l.rmu.Unlock()
	if l.ret != r {
		return false
	}
	l.qmu.Lock()
	l.hold, l.boundary = true, l.seq
	l.qmu.Unlock()
	return true
}

// retiringBy reports whether r is the retirement under way.
func (l *lane) retiringBy(r *retirement) bool {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	return l.ret == r
}
