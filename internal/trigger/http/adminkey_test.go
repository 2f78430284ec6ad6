package http

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

// docInvoker serves an admin document.
type docInvoker struct{ echoInvoker }

func (docInvoker) AdminDocument() any { return map[string]string{"ok": "yes"} }

// TestAdminListenerKeyOffLoopback checks /admin/* on the admin listener:
// open at a loopback address, or when no admin key is configured; with
// admin keys, a request that reached a non-loopback address (a pod's
// admin port, open to the cluster for probes) needs one. Health stays
// open everywhere.
func TestAdminListenerKeyOffLoopback(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin.key")
	if err := os.WriteFile(keyFile, []byte("s3cret-admin-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withKeys, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`mqtt: {embedded: false}
auth: {admin_keys: [{name: ops, file: admin.key}]}
functions: [{name: echo, handler: m.h, codedir: ., auth: anonymous}]
`))
	if err != nil {
		t.Fatal(err)
	}
	noKeys, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`mqtt: {embedded: false}
functions: [{name: echo, handler: m.h, codedir: ., auth: anonymous}]
`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	get := func(cfg *config.Config, path, local, key string) int {
		h := NewHandlerWith(docInvoker{}, nil, 1<<20, log, HandlerOptions{Config: cfg, Admin: true, Health: &Health{}})
		r := httptest.NewRequest("GET", path, nil)
		addr, err := net.ResolveTCPAddr("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, addr))
		if key != "" {
			r.Header.Set(KeyHeader, key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for _, c := range []struct {
		name             string
		cfg              *config.Config
		path, local, key string
		want             int
	}{
		{"keys, loopback", withKeys, "/admin/functions", "127.0.0.1:9180", "", 200},
		{"keys, loopback v6", withKeys, "/admin/functions", "[::1]:9180", "", 200},
		{"keys, pod address, no key", withKeys, "/admin/functions", "10.1.2.3:9180", "", 401},
		{"keys, pod address, wrong key", withKeys, "/admin/functions", "10.1.2.3:9180", "nope", 401},
		{"keys, pod address, admin key", withKeys, "/admin/functions", "10.1.2.3:9180", "s3cret-admin-key", 200},
		{"keys, pod address, live", withKeys, "/healthz/live", "10.1.2.3:9180", "", 200},
		{"no keys, pod address", noKeys, "/admin/functions", "10.1.2.3:9180", "", 200},
	} {
		if got := get(c.cfg, c.path, c.local, c.key); got != c.want {
			t.Errorf("%s: %s got %d, want %d", c.name, c.path, got, c.want)
		}
	}
}
