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
	var data, base string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "invoke NAME [-d DATA | -d @FILE]",
		Short: "Invoke a function on a running host and print the result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			payload := []byte(data)
			if strings.HasPrefix(data, "@") {
				b, err := os.ReadFile(data[1:])
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				payload = b
			}
			u := strings.TrimRight(base, "/") + "/function/" + url.PathEscape(args[0])
			client := &http.Client{Timeout: timeout}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, u, bytes.NewReader(payload))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set(httptrigger.TriggerHeader, "invoke")
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
	cmd.Flags().StringVar(&base, "url", "http://127.0.0.1:8080", "base URL of the host")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	return cmd
}
