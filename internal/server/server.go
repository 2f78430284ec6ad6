// Package server owns a running polyfn for the life of the process: the
// listeners (HTTP, the embedded MQTT broker), the metrics registry, the
// triggers, the config file watcher and the reload policy. `polyfn serve`
// parses its flags and runs one.
//
// A configuration runs as a generation: a host (internal/host) that runs
// its functions. The triggers (internal/trigger) live as long as the
// server and invoke the generation that serves. A reload brings the new
// generation fully up, then makes every trigger apply it, then drains the
// old one; a configuration that does not load or does not come up leaves
// the running one serving.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/metrics"
	"github.com/polyfn/polyfn/internal/trigger"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
	mqtttrigger "github.com/polyfn/polyfn/internal/trigger/mqtt"
	"github.com/polyfn/polyfn/internal/trigger/timer"
)

// Named timeouts of the server.
const (
	// ShutdownTimeout bounds the drain of in-flight invocations on
	// shutdown, and that of an old configuration after a reload.
	ShutdownTimeout = 30 * time.Second
	// readyTimeout bounds how long a new configuration may take to come up
	// (apps indexed, min instances started) before it takes over anyway.
	readyTimeout = 2 * time.Minute
	// watchInterval is how often --watch looks at the files.
	watchInterval = 500 * time.Millisecond
)

// Options say what the server runs.
type Options struct {
	// File is the config file, read again at each reload.
	File string
	// Listen, MQTTListen and StateDir, when set, win over the config's
	// http.listen, mqtt.listen and state_dir (the serve flags).
	Listen, MQTTListen, StateDir string
	// AdminListen, when set, wins over admin.listen (the serve flag).
	AdminListen string
	// Watch reloads when the config file or a function's code changes.
	Watch bool
	Log   *slog.Logger
	// Leader, when set, gates the timers: they fire only while this
	// replica leads (leader election, internal/leader).
	Leader timer.Leader
}

// generation is one running configuration.
type generation struct {
	cfg *config.Config
	h   *host.Host
}

func (g *generation) trigger() trigger.Generation {
	return trigger.Generation{Config: g.cfg, Host: g.h}
}

// Server is a running polyfn.
type Server struct {
	o       Options
	log     *slog.Logger
	metrics *metrics.Metrics

	// As started: a reload keeps them (http.max_body, http.max_stream_body
	// and http.cors aside), and says so
	// when the new configuration changes them.
	http     config.HTTP
	mqtt     config.MQTT
	stateDir string

	broker   *mqtttrigger.Broker // nil unless embedded
	httpTrig *httptrigger.Trigger
	mqttTrig *mqtttrigger.Trigger // nil without a broker
	// adminTrig is the admin listener (nil when off); it stops after the
	// other triggers drained, so that readiness reads "draining" meanwhile.
	adminTrig *httptrigger.Trigger
	health    *httptrigger.Health
	// startedAdmin is the admin address as started ("" when off).
	startedAdmin string
	// triggers are every trigger, in the order they start.
	triggers []trigger.Trigger

	current atomic.Pointer[generation]
	mu      sync.Mutex     // one reload (or shutdown) at a time
	old     sync.WaitGroup // the old generations draining
	forget  sync.Mutex     // one deletion of removed functions' series at a time
}

// brokerStore is the embedded broker's store under the state directory.
const brokerStore = "mqtt"

// LoadConfig reads o.File and applies o's overrides.
func LoadConfig(o Options) (*config.Config, error) {
	cfg, err := config.Load(o.File)
	if err != nil {
		return nil, err
	}
	if o.Listen != "" {
		cfg.HTTP.Listen = o.Listen
	}
	if o.MQTTListen != "" {
		cfg.MQTT.Listen = o.MQTTListen
	}
	if o.StateDir != "" {
		cfg.StateDir = o.StateDir
	}
	return cfg, nil
}

// Start brings cfg up (LoadConfig read it from o.File): the embedded
// broker, the host, the HTTP listener and every trigger.
func Start(cfg *config.Config, o Options) (_ *Server, err error) {
	s := &Server{o: o, log: o.Log, metrics: metrics.New(), http: cfg.HTTP, mqtt: cfg.MQTT, stateDir: cfg.StateDir, health: &httptrigger.Health{}}
	defer func() {
		if err != nil && s.broker != nil {
			s.broker.Close()
		}
	}()
	if err := s.startMQTT(cfg); err != nil {
		return nil, err
	}
	h, err := host.NewWith(cfg, s.log, s.metrics)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		h.Close(context.Background())
		return nil, fmt.Errorf("http.listen: the HTTP listener cannot listen on %s: %w (set http.listen or --listen to a free address)", cfg.HTTP.Listen, err)
	}
	public := httptrigger.NewServer(cfg.HTTP, s.log)
	if err := s.startAdmin(cfg, public); err != nil {
		ln.Close()
		h.Close(context.Background())
		return nil, err
	}
	h.Start()
	g := &generation{cfg: cfg, h: h}
	s.metrics.SetPools(h.PoolStats)
	s.current.Store(g)
	s.httpTrig = httptrigger.NewTrigger(public, ln, s.log, s.health)
	if s.mqttTrig != nil {
		s.triggers = append(s.triggers, s.mqttTrig)
	}
	s.triggers = append(s.triggers, timer.New(s.metrics, s.o.Leader, s.log), s.httpTrig)
	if s.adminTrig != nil {
		if err := s.adminTrig.Start(g.trigger()); err != nil {
			h.Close(context.Background())
			return nil, err
		}
	}
	for i, t := range s.triggers {
		if err := t.Start(g.trigger()); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
			defer cancel()
			stopAll(ctx, s.triggers[:i])
			if s.adminTrig != nil {
				s.adminTrig.Stop(ctx)
			}
			h.Close(ctx)
			return nil, err
		}
	}
	admin := "off"
	if a := s.AdminAddr(); a != nil {
		admin = a.String()
	}
	s.log.Info("polyfn serving", "config", cfg.File, "listen", ln.Addr().String(), "admin", admin, "functions", len(cfg.Functions))
	return s, nil
}

// startMQTT starts the embedded broker (unless mqtt.embedded is false), with
// its store under the state directory unless mqtt.persist is false, and
// prepares the trigger when there is a broker to connect to.
func (s *Server) startMQTT(cfg *config.Config) error {
	embeddedURL := ""
	if cfg.MQTT.EmbeddedEnabled() {
		o := mqtttrigger.BrokerOptions{Listen: cfg.MQTT.Listen}
		if cfg.MQTT.PersistEnabled() {
			if cfg.StateDir == "" {
				return errors.New("state_dir: there is no default state directory (no home directory): set state_dir or --state-dir for the embedded MQTT broker's store, or mqtt.persist: false")
			}
			o.Store = filepath.Join(cfg.StateDir, brokerStore)
		}
		b, err := mqtttrigger.StartBroker(o, s.log)
		if err != nil {
			return err
		}
		s.broker, embeddedURL = b, b.URL()
		store := b.Store()
		if store == "" {
			store = "none (mqtt.persist: false): sessions in memory only"
		}
		s.log.Info("mqtt broker listening", "listen", b.Addr(), "store", store)
	}
	if cfg.MQTT.Broker == "" && s.broker == nil {
		if hasMQTTRules(cfg) {
			return errors.New("functions have triggers.mqtt rules, but mqtt.embedded is false and mqtt.broker is not set: there is no broker to subscribe to")
		}
		return nil
	}
	o, err := mqtttrigger.ClientOptions(cfg.MQTT, embeddedURL, s.log)
	if err != nil {
		return err
	}
	s.mqttTrig, err = mqtttrigger.New(o, s.metrics)
	return err
}

func hasMQTTRules(cfg *config.Config) bool {
	for _, f := range cfg.Functions {
		if len(f.Triggers.MQTT) > 0 {
			return true
		}
	}
	return false
}

// Addr is the HTTP listener's address.
func (s *Server) Addr() net.Addr { return s.httpTrig.Addr() }

// Metrics returns the process's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Run serves until SIGINT or SIGTERM, reloading on SIGHUP (and, with
// Watch, when the watched files change), then shuts down: the triggers stop
// taking work and drain, within ShutdownTimeout (a second signal cuts it
// short), and the configurations stop. It returns the error that ended
// the HTTP listener, if one did.
func (s *Server) Run() error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	changes := make(chan struct{}, 1)
	if s.o.Watch {
		go s.watch(watchCtx, changes)
	}
	var serveErr error
loop:
	for {
		select {
		case sig := <-sigs:
			s.log.Info("shutting down", "signal", sig.String())
			break loop
		case serveErr = <-s.httpTrig.Failed():
			break loop
		case serveErr = <-s.adminFailed():
			break loop
		case <-hups:
			s.log.Info("reloading", "signal", "hangup")
			_ = s.Reload()
		case <-changes:
			s.log.Info("reloading", "cause", "files changed")
			_ = s.Reload()
		}
	}
	stopWatch()
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	go func() {
		// A second signal skips the drain.
		select {
		case <-sigs:
			s.log.Warn("second signal: stopping without drain")
			cancel()
		case <-ctx.Done():
		}
	}()
	s.Shutdown(ctx)
	s.log.Info("polyfn stopped")
	return serveErr
}

// Shutdown stops every trigger taking work and lets them drain together
// until ctx is done, then stops the configurations, the running one and
// those still draining, and the embedded broker.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	stopAll(ctx, s.triggers)
	s.current.Load().h.Close(ctx)
	s.old.Wait()
	if s.adminTrig != nil {
		s.adminTrig.Stop(ctx)
	}
	if s.broker != nil {
		s.broker.Close()
	}
}

// stopAll stops ts at once and waits for all of them.
func stopAll(ctx context.Context, ts []trigger.Trigger) {
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Stop(ctx)
		}()
	}
	wg.Wait()
}

// The host gives the triggers what they ask of it.
var _ trigger.Host = (*host.Host)(nil)
