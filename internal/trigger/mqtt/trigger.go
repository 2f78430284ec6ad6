package mqtt

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/invoke"
)

// Named durations and bounds of the trigger.
const (
	// sessionExpiry is how long the broker keeps a session (its
	// subscription and the QoS 1 messages it holds) while polyfn is away.
	sessionExpiry = 7 * 24 * 60 * 60 // seconds
	// ackInterval is how often acknowledgements go out: in batches, in the
	// order the messages arrived, as the protocol requires.
	ackInterval = 20 * time.Millisecond
	// publishTimeout bounds one attempt to publish a result (QoS 1: until
	// the broker acknowledged it).
	publishTimeout = 10 * time.Second
	// busyWait and busyWaitMax pace the attempts of an invocation the host
	// turned away as overloaded (or because its configuration was being
	// replaced); these attempts are back pressure, not retries.
	busyWait    = 50 * time.Millisecond
	busyWaitMax = time.Second
	// retireTimeout bounds the retirement of a subscription a reload
	// removed: waiting for the filters that replace it, unsubscribing and
	// handling the messages in hand.
	retireTimeout = 30 * time.Second
	// subscribeTimeout bounds one SUBSCRIBE or UNSUBSCRIBE (until the
	// broker's acknowledgement); subscribeRetry and subscribeRetryMax pace
	// the attempts of one that failed on a connection still up.
	subscribeTimeout  = 10 * time.Second
	subscribeRetry    = 500 * time.Millisecond
	subscribeRetryMax = 30 * time.Second
	// publishRetry and publishRetryMax pace the attempts to publish a
	// result the broker did not take.
	publishRetry    = 100 * time.Millisecond
	publishRetryMax = 5 * time.Second
	// disconnectTimeout bounds the DISCONNECT that ends a connection.
	disconnectTimeout = 5 * time.Second
	// qos0Backlog is how many QoS 0 messages per in-flight place may wait
	// in a subscription's queue; past it further QoS 0 messages are dropped
	// (at most once), where QoS 1 messages are never dropped.
	qos0Backlog = 10
)

// Invoker runs invocations; *host.Host implements it.
type Invoker interface {
	Invoke(ctx context.Context, req *invoke.Request) (*invoke.Result, error)
}

// Trigger runs the triggers.mqtt rules of the current configuration. Each
// distinct topic filter has a session of its own with the broker (client id
// CLIENT_ID-XXXXXXXX, persistent, one subscription): every message that
// arrives on it is for that filter's rules, whatever the broker does with
// overlapping subscriptions, and a saturated function holds back only its
// own topics. It lives as long as the process; Update swaps the rules of a
// reload, and invocations go to the configuration current when they run.
type Trigger struct {
	opts    Options
	url     *url.URL
	current func() Invoker
	log     *slog.Logger
	metrics atomic.Pointer[prometheus.CounterVec]

	// retireTimeout and subscribeTimeout are the constants of the same
	// names; tests shorten them.
	retireTimeout    time.Duration
	subscribeTimeout time.Duration

	mu       sync.Mutex
	lanes    map[string]*lane       // by filter as subscribed
	retiring map[string]*retirement // lanes being retired, by filter
	closed   bool
	retired  sync.WaitGroup // the retirements running
}

// New returns a trigger for the broker o names; Update gives it rules.
// current returns the configuration invocations go to.
func New(o Options, current func() Invoker) (*Trigger, error) {
	u, err := o.brokerURL()
	if err != nil {
		return nil, err
	}
	if o.InFlight <= 0 {
		o.InFlight = config.DefaultMQTTInFlight
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Trigger{opts: o, url: u, current: current, log: o.Log, retireTimeout: retireTimeout, subscribeTimeout: subscribeTimeout,
		lanes: map[string]*lane{}, retiring: map[string]*retirement{}}, nil
}

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

// Update makes cfg's rules the trigger's: new filters get a session,
// changed ones their new rules, removed ones are retired (see retire) once
// the new ones are subscribed, and a filter removed by an earlier Update
// whose retirement is still under way takes its lane back. reg, when not
// nil, is the registry of the configuration's metrics.
func (t *Trigger) Update(cfg *config.Config, reg prometheus.Registerer) {
	if reg != nil {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "polyfn_mqtt_messages_total",
			Help: "MQTT messages handled, by function and outcome (success, filtered: empty result, error: error document).",
		}, []string{"function", "outcome"})
		var are prometheus.AlreadyRegisteredError
		switch err := reg.Register(c); {
		case errors.As(err, &are):
			c = are.ExistingCollector.(*prometheus.CounterVec)
		case err != nil:
			t.log.Warn("mqtt: metrics not registered", "error", err)
			c = nil
		}
		if c != nil {
			t.metrics.Store(c)
		}
	}
	sems := map[string]chan struct{}{}
	want := map[string][]*rule{}
	for _, f := range cfg.Functions {
		if len(f.Triggers.MQTT) == 0 {
			continue
		}
		pool, capacity := f.Name, f.Concurrency*f.Instances.Max+f.Queue
		if f.App != "" {
			a := cfg.Apps[f.App]
			pool, capacity = "app "+f.App, a.Concurrency*a.Instances.Max+a.Queue
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

// Close stops reading every subscription, lets the messages being handled
// finish and be acknowledged until ctx is done, then disconnects. The
// sessions stay with the broker: what was not acknowledged is delivered
// again to the next polyfn that connects with the same client id. The
// retirements under way go on until ctx is done; then they are cut short,
// and their sessions too stay with the broker.
func (t *Trigger) Close(ctx context.Context) {
	t.mu.Lock()
	t.closed = true
	lanes := make([]*lane, 0, len(t.lanes))
	for _, l := range t.lanes {
		lanes = append(lanes, l)
	}
	t.lanes = map[string]*lane{}
	retiring := make([]*retirement, 0, len(t.retiring))
	for _, r := range t.retiring {
		retiring = append(retiring, r)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.close(ctx)
		}()
	}
	wg.Wait()
	waitOrCancel(ctx, &t.retired, func() {
		for _, r := range retiring {
			r.cancel()
		}
	})
}

// waitOrCancel waits for wg; if ctx is done first, it calls cancel and
// waits on.
func waitOrCancel(ctx context.Context, wg *sync.WaitGroup, cancel func()) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		cancel()
		<-done
	}
}

// WaitSubscribed waits until the broker has acknowledged the subscription of
// every filter of the current rules, or ctx is done.
func (t *Trigger) WaitSubscribed(ctx context.Context) error {
	for {
		t.mu.Lock()
		lanes := make([]*lane, 0, len(t.lanes))
		for _, l := range t.lanes {
			lanes = append(lanes, l)
		}
		t.mu.Unlock()
		all := true
		for _, l := range lanes {
			all = all && l.subscribed()
		}
		if all {
			return nil
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("mqtt: not every subscription is acknowledged: %w", ctx.Err())
		}
	}
}

// clientIDFor returns the client id of the session that subscribes to filter
// (as subscribed, with $share/GROUP/ when shared).
func (o Options) clientIDFor(filter string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(filter))
	return fmt.Sprintf("%s-%08x", o.ClientID, h.Sum32())
}

func (t *Trigger) count(function, outcome string) {
	if c := t.metrics.Load(); c != nil {
		c.WithLabelValues(function, outcome).Inc()
	}
}

// message is one PUBLISH received on a session.
type message struct {
	pub     *paho.Publish
	client  *paho.Client // the connection it came on: acknowledged and answered there
	arrived time.Time
	seq     uint64 // its place among the messages of the lane, from 1
}

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

func (t *Trigger) newLane(filter string, rules []*rule) (*lane, error) {
	id := t.opts.clientIDFor(filter)
	l := &lane{t: t, filter: filter, clientID: id,
		log:  t.log.With("filter", filter, "client_id", id),
		wake: make(chan struct{}, 1), progress: make(chan struct{}), slots: make(chan struct{}, t.opts.InFlight),
		stop: make(chan struct{}), dispatched: make(chan struct{})}
	l.subQoS.Store(-1)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.rules.Store(&rules)
	cfg := t.opts.clientConfig(t.url, id)
	cfg.CleanStartOnInitialConnection = false
	cfg.SessionExpiryInterval = sessionExpiry
	if t.opts.FlowControl {
		rm := uint16(min(t.opts.InFlight, 65535))
		cfg.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		}
	}
	cfg.OnConnectionUp = func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
		l.log.Debug("mqtt: connected", "broker", t.opts.URL, "session_present", ca.SessionPresent)
		l.cm.Store(cm)
		conn := l.conn.Add(1)
		go l.subscribe(conn, ca.SessionPresent, false)
	}
	cfg.OnConnectError = func(err error) {
		l.log.Warn("mqtt: cannot connect to the broker; retrying", "broker", t.opts.URL, "error", err)
	}
	cfg.OnConnectionDown = func() bool {
		l.conn.Add(1)
		l.log.Warn("mqtt: connection to the broker lost; reconnecting", "broker", t.opts.URL)
		return true
	}
	cfg.OnServerDisconnect = func(d *paho.Disconnect) {
		reason := ""
		if d.Properties != nil {
			reason = d.Properties.ReasonString
		}
		hint := ""
		if d.ReasonCode == 0x8E {
			hint = "another client connected with the same client id: give each polyfn host its own mqtt.client_id"
		}
		l.log.Warn("mqtt: the broker closed the connection", "reason_code", fmt.Sprintf("0x%02x", d.ReasonCode), "reason", reason, "hint", hint)
	}
	cfg.DisconnectPacketBuilder = func() *paho.Disconnect {
		d := &paho.Disconnect{ReasonCode: 0}
		if l.ending.Load() {
			zero := uint32(0)
			d.Properties = &paho.DisconnectProperties{SessionExpiryInterval: &zero}
		}
		return d
	}
	cfg.EnableManualAcknowledgment = true
	cfg.SendAcksInterval = ackInterval
	cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){l.received}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	l.cm.Store(cm)
	go l.dispatch()
	return l, nil
}

// qos is the QoS to subscribe with: the highest of the rules'.
func (l *lane) qos() int {
	q := 0
	for _, r := range *l.rules.Load() {
		q = max(q, r.cfg.Subscribe.QoS)
	}
	return q
}

// subscribed reports whether the broker acknowledged a subscription.
func (l *lane) subscribed() bool { return l.subQoS.Load() >= 0 }

func (l *lane) setRules(rules []*rule) {
	l.rules.Store(&rules)
	go l.subscribe(l.conn.Load(), true, true)
}

// subscribe subscribes to the filter on connection conn, unless it is
// subscribed there already with the QoS of the rules. On a new connection
// the subscription may already be in the session; subscribing again only
// replaces it (retained messages are not sent again). A SUBSCRIBE that the
// broker refuses or does not acknowledge in time is tried again, backing
// off, as long as that connection is up; the next connection subscribes
// anew. With onlyChange, it only changes the QoS of a subscription of conn.
func (l *lane) subscribe(conn uint64, sessionPresent, onlyChange bool) {
	wait := subscribeRetry
	for {
		err := l.subscribeOnce(conn, sessionPresent, onlyChange)
		if err == nil {
			return
		}
		l.log.Warn("mqtt: subscribe failed; retrying", "in", wait, "error", err)
		if !sleep(l.ctx, wait) {
			return
		}
		wait = min(2*wait, subscribeRetryMax)
	}
}

// subscribeOnce makes one attempt; it returns an error when another may
// succeed.
func (l *lane) subscribeOnce(conn uint64, sessionPresent, onlyChange bool) error {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	if l.stopping.Load() || l.retiring() || l.conn.Load() != conn {
		return nil
	}
	qos := l.qos()
	if l.subOn == conn && int(l.subQoS.Load()) == qos || onlyChange && l.subOn != conn {
		return nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.t.subscribeTimeout)
	defer cancel()
	sa, err := l.cm.Load().Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: l.filter, QoS: byte(qos), RetainHandling: 1}}})
	switch {
	case err == nil && len(sa.Reasons) > 0 && sa.Reasons[0] < 0x80:
		l.subQoS.Store(int32(qos))
		l.subOn = conn
		l.log.Info("mqtt: subscribed", "broker", l.t.opts.URL, "qos", sa.Reasons[0], "session_present", sessionPresent)
		return nil
	case errors.Is(err, paho.ErrInvalidArguments):
		l.log.Error("mqtt: cannot subscribe", "error", err)
		return nil
	case l.conn.Load() != conn || l.ctx.Err() != nil ||
		errors.Is(err, paho.ErrConnectionLost) || errors.Is(err, autopaho.ConnectionDownError):
		// The connection went down: subscribing is the first thing the next one does.
		l.log.Debug("mqtt: subscribe interrupted", "error", err)
		return nil
	case sa != nil:
		reason := ""
		if sa.Properties != nil {
			reason = sa.Properties.ReasonString
		}
		return fmt.Errorf("the broker refused the subscription: reason codes %v %s", sa.Reasons, reason)
	case err == nil:
		return errors.New("no subscription acknowledgement")
	default:
		return err
	}
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

// handle runs every rule of the filter on m, then acknowledges it (QoS 1)
// if all of them are done with it: the function succeeded and its result
// was published (and acknowledged by the broker, at QoS 1), or it failed and
// its error document was. Otherwise the message stays unacknowledged and the
// broker delivers it again on the next connection.
func (l *lane) handle(m *message) {
	defer func() {
		<-l.slots
		l.settled()
		l.handlers.Done()
	}()
	rules := *l.rules.Load()
	done := true
	if len(rules) == 1 {
		done = l.process(m, rules[0])
	} else {
		var wg sync.WaitGroup
		var failed atomic.Bool
		for _, r := range rules {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !l.process(m, r) {
					failed.Store(true)
				}
			}()
		}
		wg.Wait()
		done = !failed.Load()
	}
	if m.pub.QoS == 0 {
		return
	}
	if !done {
		l.unacked.Add(1)
		return
	}
	if err := m.client.Ack(m.pub); err != nil {
		l.unacked.Add(1)
		l.log.Debug("mqtt: acknowledgement not sent; the broker delivers the message again", "topic", m.pub.Topic, "message", m.pub.PacketID, "error", err)
	}
}

// process invokes r's function with m and publishes the outcome. It
// returns false when m must not be acknowledged.
func (l *lane) process(m *message, r *rule) bool {
	qos := min(int(m.pub.QoS), r.cfg.Subscribe.QoS)
	log := l.log.With("function", r.function, "topic", m.pub.Topic, "message", m.pub.PacketID)
	req, res, err, attempts, ok := l.invoke(m, r, qos, log)
	if !ok {
		return false
	}
	if err != nil {
		l.t.count(r.function, "error")
		out := r.cfg.Publish
		if r.cfg.Errors != nil {
			out = r.cfg.Errors
		}
		if out == nil {
			log.Warn("mqtt: function failed; the rule has no publish or errors topic, so the error is only logged", "attempts", attempts, "invocation", req.ID, "error", err)
			return true
		}
		log.Warn("mqtt: function failed; publishing the error document", "attempts", attempts, "invocation", req.ID, "publish", out.Topic, "error", err)
		return l.publish(m, out.Topic, min(qos, out.QoS), NewErrorDocument(req, err), log)
	}
	if len(res.Payload) == 0 {
		l.t.count(r.function, "filtered")
		return true
	}
	if r.cfg.Publish == nil {
		l.t.count(r.function, "success")
		return true
	}
	if !l.publish(m, r.cfg.Publish.Topic, min(qos, r.cfg.Publish.QoS), res.Payload, log) {
		return false
	}
	l.t.count(r.function, "success")
	return true
}

// invoke runs the invocation until it succeeds, fails for good (after
// retry.max retries) or the lane gives up (ok false). Overloaded and
// Unavailable answers are waited out: back pressure, not failures.
func (l *lane) invoke(m *message, r *rule, qos int, log *slog.Logger) (req *invoke.Request, res *invoke.Result, err error, attempts int, ok bool) {
	wait := busyWait
	for {
		req = &invoke.Request{Function: r.function, Trigger: invoke.TriggerMQTT, Payload: m.pub.Payload,
			MessageID: uint64(m.pub.PacketID), QOS: uint32(qos), Topic: m.pub.Topic, Timestamp: m.arrived}
		select {
		case r.sem <- struct{}{}:
		case <-l.ctx.Done():
			return req, nil, nil, attempts, false
		}
		res, err = l.t.current().Invoke(l.ctx, req)
		<-r.sem
		if l.ctx.Err() != nil {
			return req, nil, nil, attempts, false
		}
		if err == nil {
			return req, res, nil, attempts + 1, true
		}
		switch invoke.KindOf(err) {
		case invoke.KindOverloaded, invoke.KindUnavailable:
			if !sleep(l.ctx, wait) {
				return req, nil, nil, attempts, false
			}
			wait = min(2*wait, busyWaitMax)
			continue
		case invoke.KindNotFound, invoke.KindBadRequest, invoke.KindTooLarge, invoke.KindMethodNotAllowed:
			return req, nil, err, attempts + 1, true // running it again cannot help
		}
		attempts++
		if attempts > r.cfg.Retry.Max {
			return req, nil, err, attempts, true
		}
		d := retryDelay(r.cfg.Retry.Backoff.D(), attempts)
		log.Info("mqtt: function failed; retrying", "attempt", attempts, "of", r.cfg.Retry.Max, "in", d, "invocation", req.ID, "error", err)
		if !sleep(l.ctx, d) {
			return req, nil, nil, attempts, false
		}
	}
}

// retryDelay is the wait before retry n (1-based): backoff doubled for each
// earlier retry, at most a minute (or backoff, if longer).
func retryDelay(backoff time.Duration, n int) time.Duration {
	d := backoff
	for i := 1; i < n && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, max(backoff, time.Minute))
}

// publish sends payload to topic on m's connection, with m's MQTT 5
// correlation data, and waits for the broker's acknowledgement at QoS 1.
// It returns false when the connection is gone (m is delivered again on the
// next one) or the lane gives up.
func (l *lane) publish(m *message, topic string, qos int, payload []byte, log *slog.Logger) bool {
	p := &paho.Publish{Topic: topic, QoS: byte(qos), Payload: payload}
	if pp := m.pub.Properties; pp != nil && len(pp.CorrelationData) > 0 {
		p.Properties = &paho.PublishProperties{CorrelationData: pp.CorrelationData}
	}
	wait := publishRetry
	for {
		// m's connection must still be up: the client of a connection that
		// is gone would put the publication in the session that the next
		// connection uses, without sending it there, where it would hold a
		// place of the broker's Receive Maximum until yet another connection.
		select {
		case <-m.client.Done():
			log.Debug("mqtt: connection lost before the result was published; the broker delivers the message again", "publish", topic)
			return false
		case <-l.ctx.Done():
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(l.ctx, publishTimeout)
		resp, err := m.client.Publish(ctx, p)
		cancel()
		if err == nil {
			return true
		}
		if resp != nil && resp.ReasonCode >= 0x80 {
			log.Error("mqtt: the broker refused the publication; it is dropped", "publish", topic, "reason_code", resp.ReasonCode, "error", err)
			return true
		}
		select {
		case <-m.client.Done():
			log.Debug("mqtt: connection lost before the result was published; the broker delivers the message again", "publish", topic)
			return false
		case <-l.ctx.Done():
			return false
		default:
		}
		log.Warn("mqtt: publish failed; retrying", "publish", topic, "error", err)
		if !sleep(l.ctx, wait) {
			return false
		}
		wait = min(2*wait, publishRetryMax)
	}
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

func (l *lane) disconnect() {
	ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
	defer cancel()
	_ = l.cm.Load().Disconnect(ctx)
}

// retirement is the end of a lane whose filter no rule subscribes to any
// more. Until it reaches the disconnection (final), a reload that brings the
// filter back revives the lane instead.
type retirement struct {
	lane    *lane
	ctx     context.Context // done at the retire timeout, or when Close cuts it
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
// with it what waits. If the retire timeout (or Close) comes first, or if an
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

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
