package mqtt

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/invoke"
)

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
