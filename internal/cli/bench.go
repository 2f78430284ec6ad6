package cli

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/bench"
)

func benchCmd() *cobra.Command {
	var file, jsonPath, logLevel, cpuProfile, reference string
	var quick bool
	cmd := &cobra.Command{
		Use:   "bench -c FILE [--json PATH] [--quick]",
		Short: "Measure a config's functions against polyfn's budgets and print a table",
		Long: "Measure the functions of a config: floor, warm latency, host-added latency,\n" +
			"throughput, cold start, memory and (for functions that echo their input)\n" +
			"payload sizes, each figure next to its budget. The harness starts every host\n" +
			"and worker itself and stops them all. See docs/performance.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), "text", logLevel)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			command := "polyfn bench -c " + file
			if jsonPath != "" {
				command += " --json " + jsonPath
			}
			if quick {
				command += " --quick"
			}
			if reference != "" {
				command += " --reference " + reference
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return &exitError{code: 2, err: err}
				}
				defer pprof.StopCPUProfile()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, bench.Options{Config: file, Quick: quick, Log: log, Progress: cmd.ErrOrStderr(), Command: command, Reference: reference})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			rep.WriteTable(cmd.OutOrStdout())
			if jsonPath != "" {
				if err := rep.WriteJSON(jsonPath); err != nil {
					return &exitError{code: 1, err: err}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "\nJSON: %s\n", jsonPath)
			}
			if len(rep.Errors) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d errors while measuring", len(rep.Errors))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&jsonPath, "json", "", "also write the report as JSON to this file")
	cmd.Flags().BoolVar(&quick, "quick", false, "smoke run: few samples, short load points (under a minute)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the harness and its in-process hosts to this file (go tool pprof)")
	cmd.Flags().StringVar(&reference, "reference", "", "no-op functions of the config (comma-separated) to compare every other one with: host+worker CPU per invocation and best throughput as ratios")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "log level of the hosts the harness runs: debug, info, warn, error")
	cmd.AddCommand(loadGeneratorCmd())
	return cmd
}

// loadGeneratorCmd is the load generator of the bench's CPU rows, run by
// the harness as a process of its own; not for use by hand.
func loadGeneratorCmd() *cobra.Command {
	var addr, path string
	var conc int
	cmd := &cobra.Command{
		Use:    "load-generator --addr HOST:PORT --path PATH --conc N",
		Short:  "The bench's load generator (run by polyfn bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bench.RunLoadGenerator(addr, path, conc, cmd.InOrStdin(), cmd.OutOrStdout()); err != nil {
				return &exitError{code: 2, err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "the HTTP trigger's address")
	cmd.Flags().StringVar(&path, "path", "", "the path to POST to")
	cmd.Flags().IntVar(&conc, "conc", 1, "connections, each with one request at a time")
	return cmd
}
