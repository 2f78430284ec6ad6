package kube

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/polyfn/polyfn/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files and deploy/kubernetes from the renderer's output")

func render(t *testing.T, file string, o Options) []byte {
	t.Helper()
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(cfg, raw, o)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeStrict decodes every document of out into its Kubernetes API type;
// an unknown field, or a kind the renderer should not write, fails.
func decodeStrict(t *testing.T, out []byte) map[string]any {
	t.Helper()
	objs := map[string]any{}
	for i, d := range strings.Split(string(out), "\n---\n") {
		var tm struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := sigsyaml.Unmarshal([]byte(d), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Secret":
			obj = &corev1.Secret{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 Deployment":
			obj = &appsv1.Deployment{}
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "autoscaling/v2 HorizontalPodAutoscaler":
			obj = &autoscalingv2.HorizontalPodAutoscaler{}
		case "rbac.authorization.k8s.io/v1 Role":
			obj = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1 RoleBinding":
			obj = &rbacv1.RoleBinding{}
		case "keda.sh/v1alpha1 ScaledObject":
			obj = &ScaledObject{}
		default:
			t.Fatalf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		if err := sigsyaml.UnmarshalStrict([]byte(d), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, tm.Kind, err)
		}
		objs[tm.Kind] = obj
	}
	return objs
}

func golden(t *testing.T, path string, out []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/kube -update)", err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("rendered manifests differ from %s (run go test ./internal/kube -update and review the diff):\n%s", path, out)
	}
}

func TestRender(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "mqtt-pw-secret")
	cases := []struct {
		name, file string
		o          Options
	}{
		{"example", "../../examples/polyfn.yaml", Options{}},
		{"example-keda", "../../examples/polyfn.yaml", Options{KEDA: true, Replicas: 3, Image: "registry.example/polyfn:1.0"}},
		{"full", "testdata/full/polyfn.yaml", Options{Replicas: 1, MaxReplicas: 4}},
		{"minimal", "testdata/minimal/polyfn.yaml", Options{Name: "hello"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := render(t, tc.file, tc.o)
			objs := decodeStrict(t, out)
			golden(t, filepath.Join("testdata", tc.name+".golden"), out)
			dep := objs["Deployment"].(*appsv1.Deployment)
			pod := dep.Spec.Template.Spec
			c := pod.Containers[0]
			if c.LivenessProbe.HTTPGet.Path != "/healthz/live" || c.ReadinessProbe.HTTPGet.Path != "/healthz/ready" {
				t.Errorf("probes: %+v %+v", c.LivenessProbe, c.ReadinessProbe)
			}
			if *pod.TerminationGracePeriodSeconds <= int64(HostDrain.Seconds()) {
				t.Errorf("grace %d s does not exceed the drain %s", *pod.TerminationGracePeriodSeconds, HostDrain)
			}
			if !*pod.SecurityContext.RunAsNonRoot || !*c.SecurityContext.ReadOnlyRootFilesystem {
				t.Errorf("pod not non-root with a read-only root filesystem")
			}
			if _, ok := objs["PodDisruptionBudget"]; !ok {
				t.Errorf("no PodDisruptionBudget")
			}
			_, hpa := objs["HorizontalPodAutoscaler"]
			_, so := objs["ScaledObject"]
			if hpa == tc.o.KEDA || so != tc.o.KEDA {
				t.Errorf("keda %v: HPA %v, ScaledObject %v", tc.o.KEDA, hpa, so)
			}
			// The rendered config loads as the pod would load it.
			cm := objs["ConfigMap"].(*corev1.ConfigMap)
			if !strings.Contains(cm.Data["polyfn.yaml"], "listen: 0.0.0.0:8080") {
				t.Errorf("config does not listen on all addresses:\n%s", cm.Data["polyfn.yaml"])
			}
		})
	}
}

// The full config's file values go to the Secret, the environment's to
// references, and the rendered config points at the mounted Secret; the
// resources follow the limits.
func TestRenderSecretsAndLimits(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "mqtt-pw-secret")
	out := render(t, "testdata/full/polyfn.yaml", Options{})
	if strings.Contains(string(out), "mqtt-pw-secret") {
		t.Errorf("the manifests hold a value of the renderer's environment")
	}
	objs := decodeStrict(t, out)
	sec := objs["Secret"].(*corev1.Secret)
	if got := string(sec.Data["file.secrets_token"]); got != "token-value" {
		t.Errorf("secret file.secrets_token = %q", got)
	}
	if got := string(sec.Data["env.secrets_mounted"]); got != "API_KEY=v1\n" {
		t.Errorf("secret env.secrets_mounted = %q", got)
	}
	cfgText := objs["ConfigMap"].(*corev1.ConfigMap).Data["polyfn.yaml"]
	for _, w := range []string{"${file:/etc/polyfn/secrets/file.secrets_token}", "/etc/polyfn/secrets/env.secrets_db.env",
		"codedir: /app/code/fn", "share: polyfn", "broker: tcp://broker.example:1883", "embedded: false"} {
		if !strings.Contains(cfgText, w) {
			t.Errorf("rendered config lacks %q:\n%s", w, cfgText)
		}
	}
	c := objs["Deployment"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if r := env["MQTT_PASSWORD"].ValueFrom; r == nil || r.SecretKeyRef.Name != "polyfn-env" || *r.SecretKeyRef.Optional {
		t.Errorf("MQTT_PASSWORD = %+v, want a required reference to polyfn-env", env["MQTT_PASSWORD"])
	}
	if r := env["REGION"].ValueFrom; r == nil || !*r.SecretKeyRef.Optional {
		t.Errorf("REGION (has a default) = %+v, want an optional reference", env["REGION"])
	}
	// Requests: host 128Mi + report's min 1 x 256Mi; limits: host + 3 x 256Mi
	// + the app's 2 x 100Mi, within scaling.max_instances (6).
	mem := func(q fmt.Stringer) string { return q.String() }
	if got := mem(c.Resources.Requests.Memory()); got != "384Mi" {
		t.Errorf("memory request = %s, want 384Mi", got)
	}
	if got := mem(c.Resources.Limits.Memory()); got != "1096Mi" {
		t.Errorf("memory limit = %s, want 1096Mi", got)
	}
}

// deploy/kubernetes holds the renderer's output for examples/polyfn.yaml.
func TestDeployBaseIsRendered(t *testing.T) {
	out := render(t, "../../examples/polyfn.yaml", Options{})
	golden(t, "../../deploy/kubernetes/polyfn.yaml", out)
	decodeStrict(t, out)
}
