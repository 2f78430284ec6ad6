package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/pool"
)

// statusTimeout bounds polyfn status's request to the host.
const statusTimeout = 10 * time.Second

func statusCmd() *cobra.Command {
	var t target
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--url URL | -c FILE] [--json]",
		Short: "Show every function of a running host: state, instances, in-flight, queued, last error",
		Long: "Show every function of a running host: state, instances, in-flight, queued, last error.\n\n" +
			"The host is at --url, else at the http.listen of the config given with -c\n" +
			"(--listen replacing it, as for polyfn serve), else at $POLYFN_URL, else at\n" +
			"http://127.0.0.1:8080.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := t.baseURL()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			client := &http.Client{Timeout: statusTimeout}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, base+"/admin/functions", nil)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			t.setKey(req)
			resp, err := client.Do(req)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("status: %w", err)}
			}
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return &exitError{code: 1, err: fmt.Errorf("status: HTTP %s: send an admin key (--key or $%s), or ask the admin listener (--url http://ADMIN.LISTEN)", resp.Status, KeyEnv)}
			}
			if resp.StatusCode != http.StatusOK {
				return &exitError{code: 1, err: fmt.Errorf("status: HTTP %s", resp.Status)}
			}
			var st host.AdminStatus
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("status: %w", err)}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return writeStatusTable(out, st)
		},
	}
	t.httpFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON document")
	return cmd
}

// stateText is a function's state as the table shows it: while starts are
// held back after a failure, with when the next may begin.
func stateText(state string, backoffUntil time.Time) string {
	if backoffUntil.IsZero() {
		return state
	}
	return state + " (retry at " + backoffUntil.Local().Format(time.TimeOnly) + ")"
}

func instances(is []pool.InstanceInfo, starting int) string {
	busy := 0
	for _, i := range is {
		if i.State == "busy" {
			busy++
		}
	}
	s := fmt.Sprintf("%d (%d busy)", len(is), busy)
	if starting > 0 {
		s += fmt.Sprintf(" +%d starting", starting)
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
