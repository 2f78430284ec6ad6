package cli

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// Named timeouts of a reload.
const (
	// readyTimeout bounds how long a new configuration may take to come up
	// (apps indexed, min instances started) before it takes over anyway.
	readyTimeout = 2 * time.Minute
	// watchInterval is how often --watch looks at the files.
	watchInterval = 500 * time.Millisecond
)

// generation is one running configuration: a host and its HTTP handler.
type generation struct {
	h       *host.Host
	handler http.Handler
}

func newGeneration(h *host.Host, log *slog.Logger) *generation {
	return &generation{h: h, handler: httptrigger.NewHandler(h, h.MaxBody(), log)}
}

// reloader swaps configurations under a running server: the new one comes
// fully up before it takes the traffic, then the old one drains; a config
// that fails validation leaves the running one untouched.
type reloader struct {
	file, listen, addr string
	mqttListen         string
	stateDir           string
	mqtt               *mqttService
	log                *slog.Logger
	current            atomic.Pointer[generation]
	mu                 sync.Mutex // one reload at a time
	old                sync.WaitGroup
}

func (r *reloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := config.Load(r.file)
	if err != nil {
		r.log.Error("reload: the config is invalid; the running one stays", "error", err)
		return
	}
	if r.listen != "" {
		cfg.HTTP.Listen = r.listen
	}
	if r.mqttListen != "" {
		cfg.MQTT.Listen = r.mqttListen
	}
	if r.stateDir != "" {
		cfg.StateDir = r.stateDir
	}
	if cfg.HTTP.Listen != r.addr {
		r.log.Warn("reload: http.listen changed; it takes effect on restart", "listen", r.addr, "config", cfg.HTTP.Listen)
	}
	h, err := host.New(cfg, r.log)
	if err != nil {
		r.log.Error("reload: the running config stays", "error", err)
		return
	}
	h.Start()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	if err := h.WaitReady(ctx); err != nil {
		r.log.Warn("reload: the new config is not fully up; it takes over anyway", "error", err)
	}
	cancel()
	old := r.current.Swap(newGeneration(h, r.log))
	if r.mqtt != nil {
		r.mqtt.update(cfg, h)
	}
	r.log.Info("reloaded: the new config serves; the old one drains", "config", cfg.File, "functions", len(cfg.Functions))
	r.old.Add(1)
	go func() {
		defer r.old.Done()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		old.h.Close(ctx)
	}()
}

// closeAll stops the current configuration and waits for old ones to drain.
func (r *reloader) closeAll(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current.Load().h.Close(ctx)
	r.old.Wait()
}

// watch signals changes when the config file or a file under a function's
// code directory changes (name, size or modification time).
func (r *reloader) watch(ctx context.Context, changes chan<- struct{}) {
	last := r.fingerprint()
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if fp := r.fingerprint(); fp != last {
			last = fp
			select {
			case changes <- struct{}{}:
			default:
			}
		}
	}
}

func (r *reloader) fingerprint() string {
	h := fmt.Sprint(stat(r.file))
	dirs := map[string]bool{}
	if g := r.current.Load(); g != nil {
		for _, f := range g.h.Status() {
			if d := g.h.Codedir(f.Name); d != "" {
				dirs[d] = true
			}
		}
		for _, a := range g.h.AppStatus() {
			if d := g.h.Codedir(a.Name); d != "" {
				dirs[d] = true
			}
		}
	}
	for d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.IsDir() && p != d && (e.Name()[0] == '.' || e.Name() == "node_modules" || e.Name() == "__pycache__") {
				return filepath.SkipDir
			}
			if !e.IsDir() {
				h += p + fmt.Sprint(stat(p))
			}
			return nil
		})
	}
	return h
}

func stat(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "missing"
	}
	return fmt.Sprint(st.Size(), st.ModTime().UnixNano())
}
