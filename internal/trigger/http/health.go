package http

import (
	"io"
	"net/http"
	"sync/atomic"
)

// Health is the server-wide state the readiness endpoint reports besides
// the configuration's own: whether the server is draining.
type Health struct {
	draining atomic.Bool
}

// Drain marks the server as draining: /healthz/ready answers 503 from now
// on.
func (h *Health) Drain() {
	if h != nil {
		h.draining.Store(true)
	}
}

// Draining reports whether Drain was called.
func (h *Health) Draining() bool { return h != nil && h.draining.Load() }

// ready answers GET /healthz/ready: 200 once every app is indexed and every
// function with instances.min has them started, 503 before and while the
// server drains. GET /healthz/live and GET /healthz answer 200 as long as
// the process serves.
func (h *Handler) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	status := "ready"
	switch {
	case h.health.Draining():
		status = "draining"
	case !h.configReady():
		status = "starting"
	}
	if status != "ready" {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, `{"status":"`+status+`"}`+"\n")
}

func (h *Handler) configReady() bool {
	r, ok := h.inv.(Readier)
	return !ok || r.Ready()
}
