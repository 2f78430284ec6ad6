//go:build kubernetes

package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/kube"
)

func kubeCmd() *cobra.Command {
	var file string
	var o kube.Options
	var podConfig, withoutSecrets bool
	cmd := &cobra.Command{
		Use:   "kube -c FILE [--image IMG] [--replicas N] [--keda]",
		Short: "Print the Kubernetes manifests that run a config (docs/deploy.md)",
		Long: "Print the Kubernetes manifests that run a config: Deployment, Service, ConfigMap,\n" +
			"Secret (values the config reads from files), PodDisruptionBudget, HorizontalPodAutoscaler\n" +
			"or, with --keda, a KEDA ScaledObject on polyfn's metrics, and the RBAC of the timers'\n" +
			"leader election. The config is loaded as validate does: the variables it reads must be set.\n\n" +
			"--pod-config prints only the config rewritten for the pod (the ConfigMap's polyfn.yaml):\n" +
			"the container image holds it at /etc/polyfn/polyfn.yaml and builds the functions' dependencies\n" +
			"with it (Dockerfile).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if withoutSecrets && !podConfig {
				return &exitError{code: 2, err: fmt.Errorf("kube: --without-secrets goes with --pod-config only: the manifests' Secret holds the files' values")}
			}
			cfg, err := config.LoadWith(file, config.LoadOptions{WithoutSecrets: withoutSecrets})
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			raw, err := os.ReadFile(cfg.File)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("kube: %w", err)}
			}
			render := kube.Render
			if podConfig {
				render = kube.PodConfig
			}
			out, err := render(cfg, raw, o)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "polyfn.yaml", "config file")
	cmd.Flags().StringVar(&o.Image, "image", kube.DefaultImage, "container image holding polyfn and the functions")
	cmd.Flags().Int32Var(&o.Replicas, "replicas", 2, "replicas, and the autoscaler's minimum")
	cmd.Flags().Int32Var(&o.MaxReplicas, "max-replicas", 10, "the autoscaler's maximum")
	cmd.Flags().BoolVar(&o.KEDA, "keda", false, "render a KEDA ScaledObject on polyfn's metrics instead of a CPU HorizontalPodAutoscaler")
	cmd.Flags().StringVar(&o.Prometheus, "prometheus", kube.DefaultPrometheus, "Prometheus server KEDA queries")
	cmd.Flags().StringVar(&o.MQTTBroker, "mqtt-broker", "", "external MQTT broker of the MQTT rules (default: mqtt.broker, else "+kube.DefaultMQTTBroker+")")
	cmd.Flags().StringVar(&o.Name, "name", "polyfn", "name of the objects")
	cmd.Flags().BoolVar(&withoutSecrets, "without-secrets", false, "with --pod-config: read none of the values the config takes from the environment and files (${VAR}, ${file:PATH}, env_from, keys, TLS files): for image builds, which have no secrets")
	cmd.Flags().BoolVar(&podConfig, "pod-config", false, "print only the config rewritten for the pod, which the image holds at /etc/polyfn/polyfn.yaml")
	return cmd
}
