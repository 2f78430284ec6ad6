package server

import (
	"context"
	"reflect"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
)

// Reload reads the config file again and, if it loads and its host can be
// built, brings it fully up (or waits readyTimeout), then makes every
// trigger apply it and drains the old configuration in the background,
// deleting afterwards the metric series of the functions it removed. On
// an error the running configuration stays; the error is logged and
// returned.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := LoadConfig(s.o)
	if err != nil {
		s.log.Error("reload: the config is invalid; the running one stays", "error", err)
		return err
	}
	s.warnRestartOnly(cfg)
	h, err := host.NewWith(cfg, s.log, s.metrics)
	if err != nil {
		s.log.Error("reload: the running config stays", "error", err)
		return err
	}
	h.Start()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	if err := h.WaitReady(ctx); err != nil {
		s.log.Warn("reload: the new config is not fully up; it takes over anyway", "error", err)
	}
	cancel()
	g := &generation{cfg: cfg, h: h}
	s.metrics.SetPools(h.PoolStats)
	old := s.current.Swap(g)
	for _, t := range s.triggers {
		t.Apply(g.trigger())
	}
	if s.adminTrig != nil {
		s.adminTrig.Apply(g.trigger())
	}
	s.log.Info("reloaded: the new config serves; the old one drains", "config", cfg.File, "functions", len(cfg.Functions))
	s.old.Add(1)
	go func() {
		defer s.old.Done()
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		old.h.Close(ctx)
		s.forgetRemoved(old.cfg)
	}()
	return nil
}

// warnRestartOnly says which changes of cfg take effect on restart only:
// the HTTP listener's settings (http.max_body, http.max_stream_body and
// http.cors aside: each handler reads its own config's), the mqtt section and
// state_dir; and that MQTT rules have no broker when polyfn started
// without one.
func (s *Server) warnRestartOnly(cfg *config.Config) {
	listener := cfg.HTTP
	listener.MaxBody = s.http.MaxBody
	listener.MaxStreamBody = s.http.MaxStreamBody
	listener.CORS = s.http.CORS // follows reloads
	switch {
	case cfg.HTTP.Listen != s.http.Listen:
		s.log.Warn("reload: http.listen changed; it takes effect on restart", "listen", s.http.Listen, "config", cfg.HTTP.Listen)
	case listener != s.http:
		s.log.Warn("reload: the http section's listener settings changed; they take effect on restart (http.max_body, http.max_stream_body and http.cors follow the reload)")
	}
	if !reflect.DeepEqual(cfg.MQTT, s.mqtt) {
		s.log.Warn("reload: the mqtt section changed; it takes effect on restart (the functions' triggers.mqtt rules are reloaded)")
	}
	if a, _ := s.adminAddress(cfg); a != s.startedAdmin {
		s.log.Warn("reload: admin.listen changed; it takes effect on restart", "admin", s.startedAdmin, "config", a)
	}
	if cfg.StateDir != s.stateDir {
		s.log.Warn("reload: state_dir changed; it takes effect on restart", "state_dir", s.stateDir, "config", cfg.StateDir)
	}
	if s.mqttTrig == nil && hasMQTTRules(cfg) {
		s.log.Error("reload: functions have triggers.mqtt rules, but polyfn started without a broker; they are ignored until restart")
	}
}

// forgetRemoved deletes the metric series of the functions and apps of
// old, a drained configuration, that the one serving does not run.
func (s *Server) forgetRemoved(old *config.Config) {
	s.forget.Lock()
	defer s.forget.Unlock()
	running := names(s.current.Load().cfg)
	for n := range names(old) {
		if !running[n] {
			s.metrics.Forget(n)
			s.httpTrig.Server().Forget(n)
		}
	}
}

// names are the names metrics label with function: every function's, and
// every app's.
func names(cfg *config.Config) map[string]bool {
	out := map[string]bool{}
	for _, f := range cfg.Functions {
		out[f.Name] = true
		if f.App != "" {
			out[f.App] = true
		}
	}
	for a := range cfg.Apps {
		out[a] = true
	}
	return out
}
