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

func statusCmd() *cobra.Command {
	var base string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--url URL] [--json]",
		Short: "Show every function of a running host: state, instances, in-flight, queued, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get(strings.TrimRight(base, "/") + "/admin/functions")
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("status: %w", err)}
			}
			defer resp.Body.Close()
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
	cmd.Flags().StringVar(&base, "url", "http://127.0.0.1:8080", "base URL of the host")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON document")
	return cmd
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
