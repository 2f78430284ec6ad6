package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/tracing"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
)

// shutdownTimeout bounds the drain of in-flight invocations on shutdown.
const shutdownTimeout = 30 * time.Second

func serveCmd() *cobra.Command {
	var file, listen, mqttListen, stateDir, logFormat, logLevel string
	var watch bool
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
			stopLeader, err := startLeaderElection(cfg.LeaderElection, log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer stopLeader()
			shutdownTracing, err := tracing.Setup(context.Background())
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = shutdownTracing(ctx)
			}()
			if tracing.Enabled() {
				log.Info("tracing: exporting spans over OTLP")
			}
			if listen != "" {
				cfg.HTTP.Listen = listen
			}
			if mqttListen != "" {
				cfg.MQTT.Listen = mqttListen
			}
			if stateDir != "" {
				if stateDir, err = filepath.Abs(stateDir); err != nil {
					return &exitError{code: 2, err: err}
				}
				cfg.StateDir = stateDir
			}
			srv := httptrigger.NewServer(cfg.HTTP, log)
			r := &reloader{file: file, listen: listen, mqttListen: mqttListen, stateDir: stateDir, http: cfg.HTTP, srv: srv, log: log}
			mq, err := startMQTT(cfg, log, func() mqtttrigger.Invoker { return r.current.Load().h })
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer mq.closeBroker()
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
			r.current.Store(newGeneration(h, srv, log))
			r.mqtt = mq
			mq.update(cfg, h)
			errc := make(chan error, 1)
			go func() {
				errc <- srv.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.current.Load().handler.ServeHTTP(w, req) }))
			}()
			log.Info("polyfn serving", "config", cfg.File, "listen", ln.Addr().String(), "functions", len(cfg.Functions))

			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			hups := make(chan os.Signal, 1)
			signal.Notify(hups, syscall.SIGHUP)
			defer signal.Stop(hups)
			watchCtx, stopWatch := context.WithCancel(context.Background())
			defer stopWatch()
			changes := make(chan struct{}, 1)
			if watch {
				go r.watch(watchCtx, changes)
			}
			var serveErr error
		loop:
			for {
				select {
				case sig := <-sigs:
					log.Info("shutting down", "signal", sig.String())
					break loop
				case serveErr = <-errc:
					break loop
				case <-hups:
					log.Info("reloading", "signal", "hangup")
					r.reload()
				case <-changes:
					log.Info("reloading", "cause", "files changed")
					r.reload()
				}
			}
			stopWatch()
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
			// The HTTP listener and the MQTT subscriptions stop taking work
			// and drain together, then the configurations stop.
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				mq.closeTrigger(ctx)
			}()
			_ = srv.Shutdown(ctx)
			<-stopped
			r.closeAll(ctx)
			log.Info("polyfn stopped")
			if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
				return &exitError{code: 1, err: serveErr}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&listen, "listen", "", "HTTP listen address (overrides http.listen)")
	cmd.Flags().StringVar(&mqttListen, "mqtt-listen", "", "embedded MQTT broker's listen address (overrides mqtt.listen; port 0 picks a free one)")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory: the embedded MQTT broker's store lives under it (overrides state_dir)")
	cmd.Flags().BoolVar(&watch, "watch", false, "reload when the config file or a function's code changes (development)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func validateCmd() *cobra.Command {
	var file string
	var index bool
	cmd := &cobra.Command{
		Use:   "validate -c FILE [--index]",
		Short: "Check a config file and print every problem with file:line and key",
		Long: "Check a config file and print every problem with file:line and key.\n" +
			"With --index, also start one worker of each Azure Functions app, list the\n" +
			"functions it finds and report every function that fails to index or load.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(file)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := host.CheckIsolation(cfg); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("%s: %w", cfg.File, err)}
			}
			noun := "functions"
			if len(cfg.Functions) == 1 {
				noun = "function"
			}
			cmd.Printf("%s: ok, %d %s\n", cfg.File, len(cfg.Functions), noun)
			if !index {
				return nil
			}
			return indexApps(cmd, cfg)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().BoolVar(&index, "index", false, "start each app's worker once and report its functions")
	return cmd
}

// indexApps starts every app of cfg once and prints what its worker indexed.
func indexApps(cmd *cobra.Command, cfg *config.Config) error {
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i := range cfg.Functions {
		cfg.Functions[i].Triggers.Timer = nil // indexing runs no function
	}
	h, err := host.New(cfg, log)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	defer h.Close(context.Background())
	h.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*config.DefaultInitTimeout)
	defer cancel()
	if err := h.WaitApps(ctx); err != nil {
		return &exitError{code: 1, err: err}
	}
	problems := 0
	for _, a := range h.AppStatus() {
		switch {
		case a.Error != "":
			problems++
			cmd.Printf("app %s: broken: %s\n", a.Name, a.Error)
		default:
			cmd.Printf("app %s: %d functions: %s\n", a.Name, len(a.Functions), strings.Join(a.Functions, ", "))
		}
		for _, b := range a.Broken {
			problems++
			cmd.Printf("app %s: broken function: %s\n", a.Name, b)
		}
	}
	if problems > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d problems found while indexing", problems)}
	}
	return nil
}
