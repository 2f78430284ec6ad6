//go:build !kubernetes

package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// errNoKubernetes says how to get the Kubernetes support this binary was
// built without: Kubernetes' client libraries cost the host process
// several MiB of memory at rest, which a host outside a cluster does not
// pay (docs/deploy.md).
var errNoKubernetes = errors.New("this polyfn was built without Kubernetes support: build it with `make build TAGS=kubernetes` (the container image is)")

func kubeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kube -c FILE [--image IMG] [--replicas N] [--keda]",
		Short: "Print the Kubernetes manifests that run a config (docs/deploy.md)",
		RunE: func(*cobra.Command, []string) error {
			return &exitError{code: 2, err: errNoKubernetes}
		},
		DisableFlagParsing: true,
	}
}
