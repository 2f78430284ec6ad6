// Package kube renders the Kubernetes manifests that run a polyfn config:
// a Deployment, its Service, a ConfigMap with the config, a Secret with the
// values the config reads from files, a PodDisruptionBudget, a
// HorizontalPodAutoscaler (or a KEDA ScaledObject on polyfn's metrics), and
// the ServiceAccount and Role the timers' leader election needs.
//
// The function code is not copied: the config's code directories are
// rewritten to the image's copy under AppDir (see docs/deploy.md).
package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/polyfn/polyfn/internal/config"
)

// Paths inside the image and the pod (docs/deploy.md).
const (
	// AppDir is where the image holds the config's directory: the
	// functions' code, built at image build time.
	AppDir = "/app"
	// ConfigDir is where the ConfigMap is mounted; the host reads
	// ConfigDir/polyfn.yaml.
	ConfigDir = "/etc/polyfn"
	// SecretDir is where the Secret of file values is mounted.
	SecretDir = "/etc/polyfn/secrets"
	// StateDir is the writable state directory (an emptyDir).
	StateDir = "/var/lib/polyfn"
	// BuildDir is the build cache (build.dir): the functions'
	// dependencies, built into the image by polyfn build. It is not under
	// StateDir, whose emptyDir would hide it, and is only read in the pod.
	BuildDir = "/opt/polyfn/build"
	// Port is the container's HTTP port.
	Port = 8080
	// AdminPort is the admin listener's port (admin.listen): the probes,
	// the HEALTHCHECK of the image and /metrics. The Service leaves it out.
	AdminPort = 9180
)

// HostDrain is how long the host drains in-flight invocations on SIGTERM
// (the serve command's shutdown timeout); the pod's grace period exceeds
// it plus the workers' stop grace.
const HostDrain = 30 * time.Second

// preStopDelay lets the endpoints controller take a terminating pod out of
// the Service before the host stops accepting requests.
const preStopDelay = 5

// graceMargin is added to the drain and stop grace in the pod's
// terminationGracePeriodSeconds.
const graceMargin = 10 * time.Second

// Options say what to render.
type Options struct {
	// Name prefixes every object and is the app.kubernetes.io/instance
	// label. Empty means "polyfn".
	Name string
	// Image is the container image holding polyfn, the runtimes and the
	// functions. Empty means DefaultImage.
	Image string
	// Replicas is the Deployment's replica count and the autoscalers'
	// minimum. Zero means 2.
	Replicas int32
	// MaxReplicas is the autoscalers' maximum. Zero means 10 (at least
	// Replicas).
	MaxReplicas int32
	// KEDA renders a KEDA ScaledObject instead of a HorizontalPodAutoscaler.
	KEDA bool
	// Prometheus is the server KEDA queries. Empty means DefaultPrometheus.
	Prometheus string
	// MQTTBroker is the external broker of MQTT rules. Empty means the
	// config's mqtt.broker, or DefaultMQTTBroker.
	MQTTBroker string
}

// Defaults of Options.
const (
	DefaultImage      = "ghcr.io/polyfn/polyfn:latest"
	DefaultPrometheus = "http://prometheus-operated.monitoring.svc:9090"
	DefaultMQTTBroker = "tcp://mqtt:1883"
)

func (o *Options) defaults() {
	if o.Name == "" {
		o.Name = "polyfn"
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	if o.MaxReplicas == 0 {
		o.MaxReplicas = max(10, o.Replicas)
	}
	if o.Prometheus == "" {
		o.Prometheus = DefaultPrometheus
	}
}

// doc is one rendered object and the comment printed above it.
type doc struct {
	comment string
	obj     any
}

// PodConfig returns the config text as the pod reads it (the ConfigMap's
// polyfn.yaml), which the container image holds at ConfigDir/polyfn.yaml
// too, so that the dependencies built into the image are the ones the pod
// finds. The files the config reads (${file:PATH}, env_from) are not read:
// the config names their copies under SecretDir.
func PodConfig(cfg *config.Config, raw []byte, o Options) ([]byte, error) {
	o.defaults()
	r := &renderer{cfg: cfg, o: o, files: map[string][]byte{}, skipFiles: true}
	return r.podConfig(raw)
}

// Render returns the manifests for the config cfg, read from raw (its
// text), as YAML documents.
func Render(cfg *config.Config, raw []byte, o Options) ([]byte, error) {
	o.defaults()
	if o.Replicas < 1 || o.MaxReplicas < o.Replicas {
		return nil, fmt.Errorf("replicas %d and max replicas %d: want 1 <= replicas <= max replicas", o.Replicas, o.MaxReplicas)
	}
	r := &renderer{cfg: cfg, o: o, files: map[string][]byte{}}
	text, err := r.podConfig(raw)
	if err != nil {
		return nil, err
	}
	docs := []doc{
		{"ServiceAccount of the pods; the Role lets them hold the timers' Lease.", r.serviceAccount()},
		{"Leader election: the replica holding this Lease fires the timers.", r.role()},
		{"", r.roleBinding()},
		{"The config, rewritten for the pod: code from the image under " + AppDir + ", its built dependencies\n" +
			"in " + BuildDir + ", state in an emptyDir, file values from the Secret under " + SecretDir + ",\n" +
			fmt.Sprintf("the admin listener (probes, /metrics) on port %d.", AdminPort), r.configMap(text)},
	}
	if len(r.files) > 0 {
		docs = append(docs, doc{"Values the config reads from files (env_from, ${file:PATH}). They are secret:\n" +
			"keep this document out of version control, or create the Secret another way.", r.secret()})
	}
	docs = append(docs,
		doc{r.deploymentComment(), r.deployment()},
		doc{"", r.service()},
		doc{"At most one replica is down at a time for voluntary disruptions (drains, upgrades).", r.pdb()},
	)
	if o.KEDA {
		docs = append(docs, doc{"KEDA scales on polyfn's own metrics: busy instances plus queued invocations.\n" +
			"The label selectors assume Prometheus keeps the pods' labels (adjust to your scrape config).", r.scaledObject()})
	} else {
		docs = append(docs, doc{"Scales on CPU; polyfn --keda renders a KEDA ScaledObject on polyfn's metrics instead.", r.hpa()})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Rendered by polyfn kube from %s. Do not edit: render again.\n", filepath.Base(cfg.File))
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		for _, line := range strings.Split(d.comment, "\n") {
			if line != "" {
				fmt.Fprintf(&b, "# %s\n", line)
			}
		}
		out, err := marshal(d.obj)
		if err != nil {
			return nil, fmt.Errorf("render: %w", err)
		}
		b.Write(out)
	}
	return b.Bytes(), nil
}

type renderer struct {
	cfg *config.Config
	o   Options
	// files holds the Secret's entries by key.
	files map[string][]byte
	// vars lists the ${VAR}s the config reads, and whether they have a
	// default.
	vars map[string]bool
	mqtt bool
	// skipFiles: the files the config reads are not read (PodConfig).
	skipFiles bool
}

var (
	fileRefRE = regexp.MustCompile(`(^|[^$])\$\{file:([^}]+)\}`)
	varRefRE  = regexp.MustCompile(`(^|[^$])\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)
	keyRE     = regexp.MustCompile(`[^-._a-zA-Z0-9]+`)
)

// secretKey returns a Secret key for a file path.
func secretKey(prefix, p string) string {
	k := strings.Trim(keyRE.ReplaceAllString(filepath.ToSlash(p), "_"), "_.")
	return prefix + k
}

// podConfig rewrites the config text for the pod and collects the files
// the Secret holds.
func (r *renderer) podConfig(raw []byte) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("render: %s is not a mapping", r.cfg.File)
	}
	top := root.Content[0]
	set(top, "http", "listen", fmt.Sprintf("0.0.0.0:%d", Port))
	// The kubelet probes the admin listener from outside the pod: the
	// public listener closes at once on drain, so readiness going false is
	// seen only there.
	set(top, "admin", "listen", fmt.Sprintf("0.0.0.0:%d", AdminPort))
	set(top, "", "state_dir", StateDir)
	set(top, "build", "dir", BuildDir)
	if fns := get(top, "functions"); fns != nil {
		for _, fn := range fns.Content {
			if cd := get(fn, "codedir"); cd != nil {
				cd.Value = r.inApp(cd.Value)
			}
			if err := r.envFrom(fn); err != nil {
				return nil, err
			}
			if tr := get(fn, "triggers"); tr != nil && get(tr, "mqtt") != nil {
				r.mqtt = true
			}
		}
	}
	if apps := get(top, "apps"); apps != nil {
		for i := 1; i < len(apps.Content); i += 2 {
			if err := r.envFrom(apps.Content[i]); err != nil {
				return nil, err
			}
		}
	}
	if r.mqtt {
		// Every replica subscribes with a shared subscription on an
		// external broker: the broker gives each message to one replica.
		broker := r.o.MQTTBroker
		if broker == "" {
			broker = r.cfg.MQTT.Broker
		}
		if broker == "" {
			broker = DefaultMQTTBroker
		}
		r.o.MQTTBroker = broker
		set(top, "mqtt", "embedded", "false")
		set(top, "mqtt", "broker", broker)
		if r.cfg.MQTT.Share == "" {
			set(top, "mqtt", "share", r.o.Name)
		}
		// The pod's name; outside a pod (the image run by docker) the
		// objects' name.
		set(top, "mqtt", "client_id", "${POD_NAME:-"+r.o.Name+"}")
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	text := out.Bytes()
	// ${file:PATH}: the file goes into the Secret, the reference to its
	// mounted copy.
	var ferr error
	text = fileRefRE.ReplaceAllFunc(text, func(m []byte) []byte {
		sub := fileRefRE.FindSubmatch(m)
		p := string(sub[2])
		key := secretKey("file.", p)
		if !r.skipFiles {
			data, err := readFile(r.cfg.Dir, p)
			if err != nil && ferr == nil {
				ferr = err
			}
			r.files[key] = data
		}
		return []byte(string(sub[1]) + "${file:" + path.Join(SecretDir, key) + "}")
	})
	if ferr != nil {
		return nil, ferr
	}
	r.vars = map[string]bool{}
	for _, m := range varRefRE.FindAllSubmatch(text, -1) {
		name := string(m[2])
		if name == "POD_NAME" {
			continue
		}
		r.vars[name] = r.vars[name] || len(m[3]) == 0
	}
	return text, nil
}

// envFrom moves the env_from sources of a function or app node into the
// Secret and points them at its mounted files.
func (r *renderer) envFrom(n *yaml.Node) error {
	ef := get(n, "env_from")
	if ef == nil {
		return nil
	}
	for _, src := range ef.Content {
		// Each source becomes one file of KEY=VALUE lines in the Secret.
		key := secretKey("env.", src.Value)
		if r.skipFiles {
			src.Value = path.Join(SecretDir, key)
			continue
		}
		vals, err := readEnvSource(r.cfg.Dir, src.Value)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		names := make([]string, 0, len(vals))
		for k := range vals {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(&b, "%s=%s\n", k, vals[k])
		}
		r.files[key] = b.Bytes()
		src.Value = path.Join(SecretDir, key)
	}
	return nil
}

// inApp returns the image path of a path relative to the config's
// directory.
func (r *renderer) inApp(p string) string {
	if filepath.IsAbs(p) {
		rel, err := filepath.Rel(r.cfg.Dir, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			return p // outside the config's directory: the image must hold it there
		}
		p = rel
	}
	return path.Join(AppDir, filepath.ToSlash(p))
}

// get returns the value of key in mapping n, or nil.
func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// set sets section.key (or key, for section "") of top to a scalar.
func set(top *yaml.Node, section, key, value string) {
	m := top
	if section != "" {
		m = get(top, section)
		if m == nil || m.Kind != yaml.MappingNode {
			m = &yaml.Node{Kind: yaml.MappingNode}
			if old := get(top, section); old != nil {
				*old = *m
				m = old
			} else {
				top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: section}, m)
			}
		}
		m.Style = 0
	}
	v := &yaml.Node{Kind: yaml.ScalarNode, Value: value}
	if value == "false" {
		v.Tag = "!!bool"
	}
	if old := get(m, key); old != nil {
		old.Kind, old.Value, old.Tag, old.Style, old.Content = v.Kind, v.Value, v.Tag, 0, nil
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
}

// marshal writes obj as YAML without the fields only the cluster fills
// (status, creationTimestamp).
func marshal(obj any) ([]byte, error) {
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		if tpl, ok := spec["template"].(map[string]any); ok {
			if md, ok := tpl["metadata"].(map[string]any); ok {
				delete(md, "creationTimestamp")
			}
		}
	}
	return sigsyaml.Marshal(m)
}
