//go:build kubernetes

package cli

import (
	"testing"

	"github.com/polyfn/polyfn/internal/kube"
	"github.com/polyfn/polyfn/internal/server"
)

// The rendered pod's grace period is computed from kube.HostDrain; it must
// be the drain serve really does.
func TestKubeHostDrainIsServeDrain(t *testing.T) {
	if kube.HostDrain != server.ShutdownTimeout {
		t.Fatalf("kube.HostDrain = %s, serve drains for %s", kube.HostDrain, server.ShutdownTimeout)
	}
}
