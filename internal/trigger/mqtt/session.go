package mqtt

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// clientIDFor returns the client id of the session that subscribes to filter
// (as subscribed, with $share/GROUP/ when shared).
func (o Options) clientIDFor(filter string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(filter))
	return fmt.Sprintf("%s-%08x", o.ClientID, h.Sum32())
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

func (l *lane) disconnect() {
	ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
	defer cancel()
	_ = l.cm.Load().Disconnect(ctx)
}
