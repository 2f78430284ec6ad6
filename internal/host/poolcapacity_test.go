package host_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
)

// Capacity is what the MQTT trigger keeps within: a function's own pool
// (concurrency × max instances + queue), or the app's pool, the same for
// every function of the app; a function the host does not run has none.
func TestCapacity(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`
isolation: {user: host}
runtimes:
  fake: {protocol: call, command: [/bin/false]}
apps:
  shop: {concurrency: 3, queue: 5, instances: {max: 2}}
functions:
  - {name: solo, runtime: fake, handler: h, codedir: ., concurrency: 2, queue: 7, instances: {max: 4}}
  - {name: cart, runtime: fake, handler: h, codedir: ., app: shop}
  - {name: pay, runtime: fake, handler: h, codedir: ., app: shop}
`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(cfg, slog.New(slog.DiscardHandler)) // not started: no worker runs
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	for _, tc := range []struct {
		function, pool string
		n              int
		ok             bool
	}{
		{"solo", "solo", 2*4 + 7, true},
		{"cart", "app shop", 3*2 + 5, true},
		{"pay", "app shop", 3*2 + 5, true},
		{"absent", "", 0, false},
	} {
		pool, n, ok := h.Capacity(tc.function)
		if pool != tc.pool || n != tc.n || ok != tc.ok {
			t.Errorf("Capacity(%q) = %q, %d, %v; want %q, %d, %v", tc.function, pool, n, ok, tc.pool, tc.n, tc.ok)
		}
	}
}
