package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// shutdownTimeout bounds the drain of in-flight invocations on shutdown.
const shutdownTimeout = 30 * time.Second

func serveCmd() *cobra.Command {
	var file, listen, logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   "serve -c FILE",
		Short: "Run the host: serve the functions of a config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := config.Load(file)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if listen != "" {
				cfg.HTTP.Listen = listen
			}
			h, err := host.New(cfg, log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			ln, err := net.Listen("tcp", cfg.HTTP.Listen)
			if err != nil {
				h.Close(context.Background())
				return &exitError{code: 1, err: err}
			}
			h.Start()
			srv := &http.Server{
				Handler:           httptrigger.NewHandler(h, h.MaxBody(), log),
				ReadHeaderTimeout: 10 * time.Second,
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			log.Info("polyfn serving", "config", cfg.File, "listen", ln.Addr().String(), "functions", len(cfg.Functions))

			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			var serveErr error
			select {
			case sig := <-sigs:
				log.Info("shutting down", "signal", sig.String())
			case serveErr = <-errc:
			}
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			go func() {
				// A second signal skips the drain.
				select {
				case <-sigs:
					log.Warn("second signal: stopping without drain")
					cancel()
				case <-ctx.Done():
				}
			}()
			_ = srv.Shutdown(ctx)
			h.Close(ctx)
			log.Info("polyfn stopped")
			if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
				return &exitError{code: 1, err: serveErr}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&listen, "listen", "", "HTTP listen address (overrides http.listen)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func validateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a config file and print every problem with file:line and key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(file)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			cmd.Printf("%s: ok, %d functions\n", cfg.File, len(cfg.Functions))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	return cmd
}
