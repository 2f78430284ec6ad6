package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

func invokeCmd() *cobra.Command {
	var data string
	var timeout time.Duration
	var t target
	var mq mqttInvoke
	cmd := &cobra.Command{
		Use:   "invoke NAME [-d DATA | -d @FILE] [--url URL | -c FILE] | invoke --topic TOPIC [-d DATA] [--result-topic TOPIC] [-c FILE] [--broker URL]",
		Short: "Invoke a function on a running host and print the result",
		Long: "Invoke a function on a running host and print the result.\n\n" +
			"invoke NAME calls the function over HTTP: at --url, else at the http.listen\n" +
			"of the config given with -c (--listen replacing it, as for polyfn serve),\n" +
			"else at $POLYFN_URL, else at http://127.0.0.1:8080.\n\n" +
			"invoke --topic TOPIC publishes the payload to an MQTT topic instead and waits\n" +
			"for the answer on the result topic: --result-topic, or where the rules of the\n" +
			"config given with -c that subscribe to TOPIC publish. The broker is --broker,\n" +
			"else the one of that config (mqtt.broker, else its embedded broker at\n" +
			"--mqtt-listen or mqtt.listen), else tcp://127.0.0.1:1883.",
		Args: func(cmd *cobra.Command, args []string) error {
			if mq.topic != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			payload := []byte(data)
			if strings.HasPrefix(data, "@") {
				b, err := os.ReadFile(data[1:])
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				payload = b
			}
			if mq.topic != "" {
				if !cmd.Flags().Changed("timeout") {
					timeout = defaultTopicTimeout
				}
				return mq.run(cmd, &t, payload, timeout)
			}
			base, err := t.baseURL()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			u := base + "/function/" + url.PathEscape(args[0])
			client := &http.Client{Timeout: timeout}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, u, bytes.NewReader(payload))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set(httptrigger.TriggerHeader, "invoke")
			t.setKey(req)
			resp, err := client.Do(req)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("invoke %s: %w", args[0], err)}
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("read result: %w", err)}
			}
			if resp.StatusCode >= 300 {
				var eb httptrigger.ErrorBody
				if json.Unmarshal(body, &eb) == nil && eb.Error.Type != "" {
					return &exitError{code: 1, err: fmt.Errorf("error: %s: %s (HTTP %d, invocation %s)", eb.Error.Type, eb.Error.Message, resp.StatusCode, resp.Header.Get(httptrigger.InvocationIDHeader))}
				}
				return &exitError{code: 1, err: fmt.Errorf("error: HTTP %s: %s", resp.Status, bytes.TrimSpace(body))}
			}
			out := cmd.OutOrStdout()
			_, _ = out.Write(body)
			if len(body) > 0 && body[len(body)-1] != '\n' {
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "payload, or @FILE to read it from a file")
	t.httpFlags(cmd)
	t.mqttFlags(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long (with --topic: default 10s)")
	cmd.Flags().StringVar(&mq.topic, "topic", "", "publish the payload to this MQTT topic and wait for the result")
	cmd.Flags().StringVar(&mq.resultTopic, "result-topic", "", "with --topic: where the result arrives (default: from the rules of -c FILE)")
	cmd.Flags().IntVar(&mq.qos, "qos", 1, "with --topic: QoS of the published message (0 or 1)")
	return cmd
}
