// Package cli implements the polyfn command line: serve, invoke, validate,
// version.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/secret"
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Main runs the CLI with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "polyfn",
		Short:         "polyfn runs functions in any language behind HTTP",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.AddCommand(serveCmd(), invokeCmd(), validateCmd(), statusCmd(), versionCmd())
	root.AddCommand(initCmd(), newCmd())
	root.AddCommand(benchCmd(), buildCmd(), kubeCmd())
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "polyfn:", err)
	return 2
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	// Every log line is masked of the config's secret values.
	switch format {
	case "text":
		return slog.New(secret.NewHandler(slog.NewTextHandler(w, opts), secret.Process)), nil
	case "json":
		return slog.New(secret.NewHandler(slog.NewJSONHandler(w, opts), secret.Process)), nil
	}
	return nil, fmt.Errorf("--log-format: unknown format %q (text or json)", format)
}
