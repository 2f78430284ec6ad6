package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/polyfn/polyfn/internal/config"
)

// Reply is a message published in answer to Call.
type Reply struct {
	Topic   string
	Payload []byte
	// Error is set when the payload is an error document.
	Error *ErrorDocument
}

// ResultTopics returns the topics where the rules of cfg that subscribe to
// topic publish: their results and error documents.
func ResultTopics(cfg *config.Config, topic string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range cfg.Functions {
		for _, r := range f.Triggers.MQTT {
			if !TopicMatches(r.Subscribe.Topic, topic) {
				continue
			}
			for _, p := range []*config.Publication{r.Publish, r.Errors} {
				if p != nil && !seen[p.Topic] {
					seen[p.Topic] = true
					out = append(out, p.Topic)
				}
			}
		}
	}
	return out
}

// Call publishes payload to topic and waits, until ctx is done, for the
// first message on one of resultTopics that carries Call's MQTT 5
// correlation data (the trigger copies it from a message to what it
// publishes in answer) or none.
func Call(ctx context.Context, o Options, topic string, qos int, payload []byte, resultTopics []string) (*Reply, error) {
	u, err := o.brokerURL()
	if err != nil {
		return nil, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	corr := []byte(hex.EncodeToString(rnd[:]))
	replies := make(chan *Reply, 1)
	var mu sync.Mutex
	var connErr error
	cfg := o.clientConfig(u, "polyfn-invoke-"+string(corr))
	cfg.CleanStartOnInitialConnection = true
	cfg.OnConnectError = func(err error) {
		mu.Lock()
		connErr = err
		mu.Unlock()
	}
	cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		if pp := p.Properties; pp != nil && len(pp.CorrelationData) > 0 && !bytes.Equal(pp.CorrelationData, corr) {
			return true, nil // the answer to someone else's message
		}
		r := &Reply{Topic: p.Topic, Payload: p.Payload}
		if doc, ok := ParseErrorDocument(p.Payload); ok {
			r.Error = doc
		}
		select {
		case replies <- r:
		default:
		}
		return true, nil
	}}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		_ = cm.Disconnect(dctx)
	}()
	if err := cm.AwaitConnection(ctx); err != nil {
		mu.Lock()
		defer mu.Unlock()
		if connErr != nil {
			return nil, fmt.Errorf("cannot connect to the MQTT broker %s: %w", o.URL, connErr)
		}
		return nil, fmt.Errorf("cannot connect to the MQTT broker %s: %w", o.URL, err)
	}
	sub := &paho.Subscribe{}
	for _, t := range resultTopics {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: t, QoS: 1, NoLocal: true})
	}
	sa, err := cm.Subscribe(ctx, sub)
	if err != nil {
		return nil, fmt.Errorf("subscribe to %v: %w", resultTopics, err)
	}
	for i, code := range sa.Reasons {
		if code >= 0x80 {
			return nil, fmt.Errorf("the broker refused the subscription to %s (reason code 0x%02x)", resultTopics[min(i, len(resultTopics)-1)], code)
		}
	}
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: byte(qos), Payload: payload,
		Properties: &paho.PublishProperties{CorrelationData: corr}}); err != nil {
		return nil, fmt.Errorf("publish to %s: %w", topic, err)
	}
	select {
	case r := <-replies:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer on %v: %w", resultTopics, ctx.Err())
	}
}
