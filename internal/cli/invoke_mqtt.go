package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// defaultTopicTimeout bounds polyfn invoke --topic unless --timeout says otherwise.
const defaultTopicTimeout = 10 * time.Second

// mqttInvoke is polyfn invoke --topic: publish a message, print the answer.
type mqttInvoke struct {
	topic, resultTopic string
	qos                int
}

func (m *mqttInvoke) run(cmd *cobra.Command, t *target, payload []byte, timeout time.Duration) error {
	if m.qos != 0 && m.qos != 1 {
		return &exitError{code: 2, err: fmt.Errorf("--qos %d: want 0 or 1", m.qos)}
	}
	cfg, err := t.load()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	u, err := t.brokerURL(cfg)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	o := mqtttrigger.Options{URL: u}
	var results []string
	if cfg != nil {
		// The client settings of the config (credentials, TLS) go with its broker.
		if o, err = mqtttrigger.ClientOptions(cfg.MQTT, u, nil); err != nil {
			return &exitError{code: 2, err: err}
		}
		o.URL = u
		results = mqtttrigger.ResultTopics(cfg, m.topic)
	}
	if m.resultTopic != "" {
		results = []string{m.resultTopic}
	}
	if len(results) == 0 {
		where := "pass --result-topic"
		if cfg != nil {
			where = fmt.Sprintf("no rule in %s subscribes to %s and publishes; pass --result-topic", cfg.File, m.topic)
		} else {
			where += ", or -c FILE to take it from the rules that subscribe to " + m.topic
		}
		return &exitError{code: 2, err: fmt.Errorf("no result topic: %s", where)}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	r, err := mqtttrigger.Call(ctx, o, m.topic, m.qos, payload, results)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("invoke --topic %s: %w", m.topic, err)}
	}
	if r.Error != nil {
		return &exitError{code: 1, err: fmt.Errorf("error: %s: %s (function %s, invocation %s, on %s)",
			r.Error.ErrorType, r.Error.ErrorMessage, r.Error.FunctionName, r.Error.FunctionInvokeID, r.Topic)}
	}
	out := cmd.OutOrStdout()
	_, _ = out.Write(r.Payload)
	if len(r.Payload) == 0 || !strings.HasSuffix(string(r.Payload), "\n") {
		fmt.Fprintln(out)
	}
	return nil
}
