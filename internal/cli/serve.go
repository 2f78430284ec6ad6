package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/server"
	"github.com/polyfn/polyfn/internal/tracing"
)

func serveCmd() *cobra.Command {
	var file, listen, mqttListen, adminListen, stateDir, logFormat, logLevel string
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
			if stateDir != "" {
				if stateDir, err = filepath.Abs(stateDir); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			o := server.Options{File: file, Listen: listen, MQTTListen: mqttListen, AdminListen: adminListen, StateDir: stateDir, Watch: watch, Log: log}
			cfg, err := server.LoadConfig(o)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			el, stopLeader, err := startLeaderElection(cfg.LeaderElection, log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer stopLeader()
			o.Leader = el
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
			srv, err := server.Start(cfg, o)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := srv.Run(); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&listen, "listen", "", "HTTP listen address (overrides http.listen)")
	cmd.Flags().StringVar(&mqttListen, "mqtt-listen", "", "embedded MQTT broker's listen address (overrides mqtt.listen; port 0 picks a free one)")
	cmd.Flags().StringVar(&adminListen, "admin-listen", "", "admin listener's address: /admin/*, /metrics, /healthz without a key (overrides admin.listen; off: none)")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory: the embedded MQTT broker's store and the functions' build cache live under it (overrides state_dir)")
	cmd.Flags().BoolVar(&watch, "watch", false, "reload when the config file or a function's code changes (development)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func validateCmd() *cobra.Command {
	var file string
	var index, load bool
	var stateDir string
	cmd := &cobra.Command{
		Use:   "validate -c FILE [--index] [--load=false]",
		Short: "Check a config file and print every problem with file:line and key",
		Long: "Check a config file and print every problem with file:line and key.\n" +
			"With --index, also start one worker of each Azure Functions app, list the\n" +
			"functions it finds and report every function that fails to index or load, every\n" +
			"function polyfn cannot serve (a queue trigger, say) and the host.json keys it\n" +
			"does not honour.\n" +
			"Unless --load=false, also build each function's dependencies (cached, as serve\n" +
			"does) and load it without serving: import each Python handler's module and check\n" +
			"the attribute, load each Node.js module and export, compile each Go function;\n" +
			"problems are reported with file:line.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(file)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := host.CheckIsolation(cfg); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("%s: %w", cfg.File, err)}
			}
			if errs := host.CheckRuntimes(cfg); len(errs) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%s: %w", cfg.File, errors.Join(errs...))}
			}
			if stateDir != "" {
				if cfg.StateDir, err = filepath.Abs(stateDir); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			if load {
				if err := loadFunctions(cmd, cfg); err != nil {
					return err
				}
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
	cmd.Flags().BoolVar(&load, "load", true, "build each function and load its handler without serving it")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory whose build cache the loading uses (overrides state_dir)")
	return cmd
}

// indexApps starts every app of cfg once and prints what its worker indexed.
func indexApps(cmd *cobra.Command, cfg *config.Config) error {
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
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
		// Not problems: the rest of the app serves.
		for _, u := range a.Unsupported {
			cmd.Printf("app %s: unsupported function (not served): %s\n", a.Name, u)
		}
		if len(a.HostJSONIgnored) > 0 {
			cmd.Printf("app %s: host.json keys polyfn does not honour: %s\n", a.Name, strings.Join(a.HostJSONIgnored, ", "))
		}
	}
	if problems > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d problems found while indexing", problems)}
	}
	return nil
}
