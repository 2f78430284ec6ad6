package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/polyfn/polyfn/internal/config"
)

// The probes ask the admin listener, which the pod's config opens on all
// addresses at AdminPort (the public listener closes at once on drain, so
// readiness going false is seen only there); the container names the
// port, the Service leaves it out, and Prometheus scrapes it. The build
// cache is outside the state directory's emptyDir.
func TestProbesUseAdminListener(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "x")
	for _, file := range []string{"../../examples/polyfn.yaml", "testdata/full/polyfn.yaml", "testdata/minimal/polyfn.yaml"} {
		t.Run(file, func(t *testing.T) {
			objs := decodeStrict(t, render(t, file, Options{}))
			pod := objs["Deployment"].(*appsv1.Deployment).Spec.Template
			c := pod.Spec.Containers[0]
			for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				if p.HTTPGet == nil || p.HTTPGet.Port.String() != "admin" || p.HTTPGet.Scheme != corev1.URISchemeHTTP {
					t.Errorf("%s probe: %+v, want HTTP on the admin port", name, p.HTTPGet)
				}
			}
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports["admin"] != AdminPort || ports["http"] != Port {
				t.Errorf("container ports %v, want http %d and admin %d", ports, Port, AdminPort)
			}
			for _, p := range objs["Service"].(*corev1.Service).Spec.Ports {
				if p.TargetPort.String() != "http" {
					t.Errorf("the Service exposes %s (target %s): only http belongs there", p.Name, p.TargetPort.String())
				}
			}
			if got := pod.Annotations["prometheus.io/port"]; got != "9180" {
				t.Errorf("prometheus.io/port = %s, want the admin port", got)
			}
			// The rendered config has the listeners and the directories the
			// Deployment expects (it loads only in the pod: its codedirs
			// are the image's).
			text := objs["ConfigMap"].(*corev1.ConfigMap).Data["polyfn.yaml"]
			var cfg struct {
				HTTP     struct{ Listen string }
				Admin    struct{ Listen string }
				StateDir string `yaml:"state_dir"`
				Build    struct{ Dir string }
			}
			if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Admin.Listen != "0.0.0.0:9180" || cfg.HTTP.Listen != "0.0.0.0:8080" {
				t.Errorf("admin.listen %q, http.listen %q", cfg.Admin.Listen, cfg.HTTP.Listen)
			}
			if cfg.Build.Dir != BuildDir || cfg.StateDir != StateDir || strings.HasPrefix(cfg.Build.Dir, StateDir+"/") {
				t.Errorf("build.dir %q, state_dir %q: want %s outside the state directory", cfg.Build.Dir, cfg.StateDir, BuildDir)
			}
			for _, m := range c.VolumeMounts {
				if strings.HasPrefix(BuildDir+"/", m.MountPath+"/") {
					t.Errorf("volume %s at %s hides the image's build cache %s", m.Name, m.MountPath, BuildDir)
				}
			}
			// The image's command line is `polyfn` with the args.
			if len(c.Args) < 3 || c.Args[0] != "serve" || c.Args[1] != "-c" || c.Args[2] != ConfigDir+"/polyfn.yaml" || len(c.Command) != 0 {
				t.Errorf("command %q args %q: want the image's entrypoint with serve -c %s/polyfn.yaml", c.Command, c.Args, ConfigDir)
			}
		})
	}
}

// PodConfig is the ConfigMap's polyfn.yaml (what the image holds and
// builds with), and reads none of the files the config names.
func TestPodConfigIsTheConfigMap(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "x")
	for _, file := range []string{"../../examples/polyfn.yaml", "testdata/full/polyfn.yaml"} {
		objs := decodeStrict(t, render(t, file, Options{}))
		cfg, err := config.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := PodConfig(cfg, raw, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if want := objs["ConfigMap"].(*corev1.ConfigMap).Data["polyfn.yaml"]; string(got) != want {
			t.Errorf("%s: PodConfig:\n%s\nwant the ConfigMap's:\n%s", file, got, want)
		}
		if strings.Contains(string(got), "token-value") {
			t.Errorf("%s: the pod config holds a file's value", file)
		}
	}
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "polyfn"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: der}, key: {Type: "PRIVATE KEY", Bytes: kd}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}

// With admin.tls set, the admin listener serves HTTPS: the probes say so.
func TestProbesOverAdminTLS(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key := writeCert(t, dir)
	file := filepath.Join(dir, "polyfn.yaml")
	text := "functions:\n  - {name: hello, handler: main.handler, codedir: fn}\nadmin:\n  tls: {cert: " + cert + ", key: " + key + "}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := decodeStrict(t, render(t, file, Options{}))
	c := objs["Deployment"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0]
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe: %+v, want HTTPS on the admin port", name, p.HTTPGet)
		}
	}
}
