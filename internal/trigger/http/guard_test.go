package http

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/polyfn/polyfn/internal/peer"
)

// When the host cannot tell whether an admin request comes from a worker,
// it refuses it: 403 with a JSON error, not the admin document.
func TestAdminRefusedWhenTheClientCannotBeTold(t *testing.T) {
	h := &Handler{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	served := false
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true })
	guard := h.refuseWorkers(peer.Guard{HostPID: os.Getpid()}, next)

	r := httptest.NewRequest("GET", "/admin/functions", nil)
	r.RemoteAddr = "not an address"
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
	w := httptest.NewRecorder()
	guard.ServeHTTP(w, r)
	var body ErrorBody
	if w.Code != http.StatusForbidden || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error.Type != "Forbidden" || served {
		t.Fatalf("got %d %s (served: %v), want 403 Forbidden", w.Code, w.Body, served)
	}
}
