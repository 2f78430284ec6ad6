package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/build"
	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
)

func buildCmd() *cobra.Command {
	var file, stateDir, logFormat, logLevel string
	var parallel int
	var withoutSecrets bool
	cmd := &cobra.Command{
		Use:   "build -c FILE",
		Short: "Build every function's dependencies into the build cache, ahead of serve",
		Long: "Build every function's dependencies into the build cache (build.dir, by default\n" +
			"STATE_DIR/build): Python requirements, Node.js packages, Go binaries. serve builds\n" +
			"what is missing at start; build does it ahead of time (for images and CI). Exits 1\n" +
			"if a build failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := config.LoadWith(file, config.LoadOptions{WithoutSecrets: withoutSecrets})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if stateDir != "" {
				if cfg.StateDir, err = filepath.Abs(stateDir); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if !cmd.Flags().Changed("log-level") {
				log = nil // failures are printed below, whole
			}
			results, err := runBuilds(ctx, cmd.OutOrStdout(), cfg, parallel, log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			failed := 0
			for _, r := range results {
				if r.Err != nil {
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "%v\n", r.Err)
				}
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d builds failed", failed, len(results))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory: builds are cached under STATE_DIR/build unless build.dir is set (overrides state_dir)")
	cmd.Flags().IntVar(&parallel, "parallel", build.DefaultParallel, "functions built at once")
	cmd.Flags().BoolVar(&withoutSecrets, "without-secrets", false, "read none of the values the config takes from the environment and files (${VAR}, ${file:PATH}, env_from, keys, TLS files): for image builds, which have no secrets")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "log level of the builds' log records (none unless set): debug, info, warn, error")
	return cmd
}

// runBuilds builds cfg's functions, printing one line per function to out
// (and, when out is a terminal, a line that shows what is running).
func runBuilds(ctx context.Context, out io.Writer, cfg *config.Config, parallel int, log *slog.Logger) ([]build.Result, error) {
	specs := build.Plan(cfg)
	if len(specs) == 0 {
		fmt.Fprintln(out, "nothing to build")
		return nil, nil
	}
	tty := isTerminal(out)
	running := map[string]string{}
	done := 0
	status := func() {
		if !tty {
			return
		}
		names := make([]string, 0, len(running))
		for n := range running {
			names = append(names, n)
		}
		fmt.Fprintf(out, "\r\033[K[%d/%d] building %s", done, len(specs), strings.Join(names, ", "))
	}
	progress := func(e build.Event) {
		if !e.Done {
			running[e.Spec.Function] = e.Command
			status()
			return
		}
		delete(running, e.Spec.Function)
		done++
		if tty {
			fmt.Fprint(out, "\r\033[K")
		}
		r := e.Result
		switch {
		case r.Err != nil:
			fmt.Fprintf(out, "%-20s %-6s FAILED (%s)\n", r.Function, r.Kind, r.Duration.Round(time.Millisecond))
		case r.Cached:
			fmt.Fprintf(out, "%-20s %-6s cached\n", r.Function, r.Kind)
		default:
			fmt.Fprintf(out, "%-20s %-6s built in %s\n", r.Function, r.Kind, r.Duration.Round(time.Millisecond))
		}
		if len(running) > 0 {
			status()
		}
	}
	b := build.New(build.Options{Dir: build.Dir(cfg), Parallel: parallel, Log: log, Progress: progress, Runner: builduser.For(cfg)})
	results := b.Run(ctx, specs)
	return results, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
