package cli

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

func newGeneration(h *host.Host, srv *httptrigger.Server, log *slog.Logger) *generation {
	return &generation{h: h, handler: httptrigger.NewHandler(h, srv, h.MaxBody(), log)}
}

// reloader swaps configurations under a running server: the new one comes
// fully up before it takes the traffic, then the old one drains; a config
// that fails validation leaves the running one untouched.
type reloader struct {
	file, listen, mqttListen string
	// http is the listener's settings, srv the listener: a reload keeps
	// both (http.max_body aside).
	http    config.HTTP
	srv     *httptrigger.Server
	mqtt    *mqttService
	log     *slog.Logger
	current atomic.Pointer[generation]
	mu      sync.Mutex // one reload at a time
	old     sync.WaitGroup
	// stateDir is --state-dir: it wins over each configuration's state_dir.
	stateDir string
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
	listener := cfg.HTTP
	listener.MaxBody = r.http.MaxBody
	switch {
	case cfg.HTTP.Listen != r.http.Listen:
		r.log.Warn("reload: http.listen changed; it takes effect on restart", "listen", r.http.Listen, "config", cfg.HTTP.Listen)
	case listener != r.http:
		r.log.Warn("reload: the http section's listener settings changed; they take effect on restart (http.max_body follows the reload)")
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
	old := r.current.Swap(newGeneration(h, r.srv, r.log))
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

// fingerprint sums up the watched files: the config file, then every file
// under the functions' and apps' code directories, in a fixed order (the
// directories sorted, each walked in lexical order), so that it changes only
// when a file does.
func (r *reloader) fingerprint() string {
	h := fmt.Sprint(stat(r.file))
	for _, d := range r.watchedDirs() {
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

// watchedDirs returns the code directories of the running configuration,
// sorted and without duplicates.
func (r *reloader) watchedDirs() []string {
	g := r.current.Load()
	if g == nil {
		return nil
	}
	var dirs []string
	for _, f := range g.h.Status() {
		if d := g.h.Codedir(f.Name); d != "" {
			dirs = append(dirs, d)
		}
	}
	for _, a := range g.h.AppStatus() {
		if d := g.h.Codedir(a.Name); d != "" {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

func stat(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "missing"
	}
	return fmt.Sprint(st.Size(), st.ModTime().UnixNano())
}
