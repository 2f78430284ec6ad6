package kube

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/polyfn/polyfn/internal/config"
)

func readFile(dir, p string) ([]byte, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	s, err := config.ReadSecretFile(p)
	if err != nil {
		return nil, fmt.Errorf("render: ${file:%s}: %w", p, err)
	}
	return []byte(s), nil
}

func readEnvSource(dir, p string) (map[string]string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	v, err := config.ReadEnvSource(p)
	if err != nil {
		return nil, fmt.Errorf("render: env_from %s: %w", p, err)
	}
	return v, nil
}

func (r *renderer) labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "polyfn", "app.kubernetes.io/instance": r.o.Name}
}

func (r *renderer) meta(suffix string) metav1.ObjectMeta {
	name := r.o.Name
	if suffix != "" {
		name += "-" + suffix
	}
	return metav1.ObjectMeta{Name: name, Labels: r.labels()}
}

func tm(kind, apiVersion string) metav1.TypeMeta {
	return metav1.TypeMeta{Kind: kind, APIVersion: apiVersion}
}

func (r *renderer) serviceAccount() *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: tm("ServiceAccount", "v1"), ObjectMeta: r.meta("")}
}

func (r *renderer) role() *rbacv1.Role {
	return &rbacv1.Role{TypeMeta: tm("Role", "rbac.authorization.k8s.io/v1"), ObjectMeta: r.meta("leader-election"),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			Verbs: []string{"get", "create", "update"}}}}
}

func (r *renderer) roleBinding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{TypeMeta: tm("RoleBinding", "rbac.authorization.k8s.io/v1"), ObjectMeta: r.meta("leader-election"),
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: r.o.Name + "-leader-election"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: r.o.Name}}}
}

func (r *renderer) configMap(text []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: tm("ConfigMap", "v1"), ObjectMeta: r.meta("config"),
		Data: map[string]string{"polyfn.yaml": string(text)}}
}

func (r *renderer) secret() *corev1.Secret {
	return &corev1.Secret{TypeMeta: tm("Secret", "v1"), ObjectMeta: r.meta("files"), Type: corev1.SecretTypeOpaque, Data: r.files}
}

// envSecret names the Secret the ${VAR}s of the config come from; the
// renderer does not write it (the values are not in the config).
func (r *renderer) envSecret() string { return r.o.Name + "-env" }

func (r *renderer) deploymentComment() string {
	var b strings.Builder
	b.WriteString("The host. The pod runs as a non-root user with a read-only root filesystem;\n")
	b.WriteString("state, temporary files and caches live in emptyDirs; the functions' dependencies were\n")
	fmt.Fprintf(&b, "built into the image (%s). Probes ask the admin listener (port %d, not in the Service).\n", BuildDir, AdminPort)
	fmt.Fprintf(&b, "The grace period exceeds the host's drain (%s) plus the workers' stop grace.\n", HostDrain)
	if len(r.vars) > 0 {
		names := r.varNames()
		fmt.Fprintf(&b, "The config reads %s from the Secret %s; create it, e.g.\n", strings.Join(names, ", "), r.envSecret())
		fmt.Fprintf(&b, "  kubectl create secret generic %s", r.envSecret())
		for _, n := range names {
			fmt.Fprintf(&b, " --from-literal=%s=...", n)
		}
		b.WriteString("\n")
	}
	if r.mqtt {
		fmt.Fprintf(&b, "MQTT rules: the embedded broker is off; every replica subscribes on the external broker\n")
		fmt.Fprintf(&b, "%s with shared subscriptions ($share/%s/TOPIC), so each message invokes one replica.\n", r.o.MQTTBroker, r.shareName())
	}
	return b.String()
}

func (r *renderer) shareName() string {
	if r.cfg.MQTT.Share != "" {
		return r.cfg.MQTT.Share
	}
	return r.o.Name
}

func (r *renderer) varNames() []string {
	names := make([]string, 0, len(r.vars))
	for n := range r.vars {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Resource estimates for a pool with no memory or CPU limit, and for the
// host process itself.
const (
	hostMemory       = 128 << 20
	hostCPUMilli     = 100
	workerMemoryEst  = 128 << 20
	workerCPUMilliEs = 100
)

// resources derives the container's requests from the instances each pool
// keeps (instances.min) and its limits from the most it may run
// (instances.max, bounded by scaling.max_instances), each instance counted at
// its memory and CPU limit (or an estimate when it has none).
func (r *renderer) resources() corev1.ResourceRequirements {
	type pool struct {
		min, max int
		lim      config.Limits
	}
	var pools []pool
	for _, f := range r.cfg.Functions {
		if f.App == "" {
			pools = append(pools, pool{f.Instances.Min, f.Instances.Max, f.Limits})
		}
	}
	names := make([]string, 0, len(r.cfg.Apps))
	for n := range r.cfg.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := r.cfg.Apps[n]
		pools = append(pools, pool{a.Instances.Min, a.Instances.Max, a.Limits})
	}
	reqMem, limMem := int64(hostMemory), int64(hostMemory)
	reqCPU, limCPU := int64(hostCPUMilli), int64(hostCPUMilli)
	total := 0
	for _, p := range pools {
		mem, cpu := int64(p.lim.Memory), int64(p.lim.CPU*1000)
		if mem == 0 {
			mem = workerMemoryEst
		}
		if cpu == 0 {
			cpu = workerCPUMilliEs
		}
		n := min(p.max, max(r.cfg.Scaling.MaxInstances-total, 0))
		total += n
		reqMem += int64(p.min) * mem
		reqCPU += int64(p.min) * cpu
		limMem += int64(n) * mem
		limCPU += int64(n) * cpu
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceMemory: *resource.NewQuantity(reqMem, resource.BinarySI), corev1.ResourceCPU: *resource.NewMilliQuantity(reqCPU, resource.DecimalSI)},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: *resource.NewQuantity(limMem, resource.BinarySI), corev1.ResourceCPU: *resource.NewMilliQuantity(limCPU, resource.DecimalSI)},
	}
}

func (r *renderer) grace() int64 {
	stop := config.DefaultStopGrace
	for _, rt := range r.cfg.Runtimes {
		stop = max(stop, rt.StopGrace.D())
	}
	return int64((HostDrain + stop + graceMargin).Seconds()) + preStopDelay
}

func ptr[T any](v T) *T { return &v }

func (r *renderer) deployment() *appsv1.Deployment {
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "HOME", Value: "/tmp"},
		{Name: "XDG_CACHE_HOME", Value: "/var/cache/polyfn"},
	}
	for _, n := range r.varNames() {
		env = append(env, corev1.EnvVar{Name: n, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: r.envSecret()}, Key: n, Optional: ptr(!r.vars[n])}}})
	}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: ConfigDir, ReadOnly: true},
		{Name: "state", MountPath: StateDir},
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "cache", MountPath: "/var/cache/polyfn"},
	}
	vols := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: r.o.Name + "-config"}}}},
		{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if len(r.files) > 0 {
		mounts = append(mounts, corev1.VolumeMount{Name: "files", MountPath: SecretDir, ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: "files", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: r.o.Name + "-files"}}})
	}
	// The probes ask the admin listener, which answers without a key and
	// stays open while the host drains (readiness then says 503).
	scheme := corev1.URISchemeHTTP
	if r.cfg.Admin.TLS.Enabled() {
		scheme = corev1.URISchemeHTTPS
	}
	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: p, Port: intstr.FromString("admin"), Scheme: scheme}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 2}
	}
	return &appsv1.Deployment{TypeMeta: tm("Deployment", "apps/v1"), ObjectMeta: r.meta(""),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(r.o.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: r.labels()},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr(intstr.FromInt32(0)), MaxSurge: ptr(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: r.labels(), Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": fmt.Sprint(AdminPort), "prometheus.io/path": "/metrics"}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            r.o.Name,
					TerminationGracePeriodSeconds: ptr(r.grace()),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(10001)), RunAsGroup: ptr(int64(10001)),
						FSGroup: ptr(int64(10001)), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name:       "polyfn",
						Image:      r.o.Image,
						Args:       []string{"serve", "-c", ConfigDir + "/polyfn.yaml", "--log-format", "json"},
						WorkingDir: AppDir,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: Port, Protocol: corev1.ProtocolTCP},
							{Name: "admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP}},
						Env:       env,
						Resources: r.resources(),
						// Liveness is the process answering; readiness is
						// every function's minimum started and not draining.
						LivenessProbe:  probe("/healthz/live", 10, 3),
						ReadinessProbe: probe("/healthz/ready", 5, 2),
						StartupProbe:   probe("/healthz/live", 2, 60),
						Lifecycle:      &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: preStopDelay}}},
						VolumeMounts:   mounts,
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
					Volumes: vols,
				},
			},
		},
	}
}

func (r *renderer) service() *corev1.Service {
	return &corev1.Service{TypeMeta: tm("Service", "v1"), ObjectMeta: r.meta(""),
		Spec: corev1.ServiceSpec{Selector: r.labels(), Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}}}
}

func (r *renderer) pdb() *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{TypeMeta: tm("PodDisruptionBudget", "policy/v1"), ObjectMeta: r.meta(""),
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: r.labels()}}}
}

func (r *renderer) hpa() *autoscalingv2.HorizontalPodAutoscaler {
	return &autoscalingv2.HorizontalPodAutoscaler{TypeMeta: tm("HorizontalPodAutoscaler", "autoscaling/v2"), ObjectMeta: r.meta(""),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: r.o.Name},
			MinReplicas:    ptr(r.o.Replicas), MaxReplicas: r.o.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr(int32(70))}}}},
		}}
}

// ScaledObject is the part of KEDA's keda.sh/v1alpha1 ScaledObject the
// renderer writes (KEDA's Go module is not a dependency).
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ScaledObjectSpec `json:"spec"`
}

// ScaledObjectSpec is KEDA's ScaledObject spec, the fields polyfn uses.
type ScaledObjectSpec struct {
	ScaleTargetRef  ScaleTarget    `json:"scaleTargetRef"`
	MinReplicaCount *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount *int32         `json:"maxReplicaCount,omitempty"`
	PollingInterval *int32         `json:"pollingInterval,omitempty"`
	CooldownPeriod  *int32         `json:"cooldownPeriod,omitempty"`
	Triggers        []ScaleTrigger `json:"triggers"`
}

// ScaleTarget names the scaled workload.
type ScaleTarget struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name"`
}

// ScaleTrigger is one KEDA trigger.
type ScaleTrigger struct {
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata"`
}

func (r *renderer) scaledObject() *ScaledObject {
	// A replica is busy when its instances are; the target is half the
	// instances one replica may run, so that KEDA adds replicas before
	// invocations queue.
	per := 0
	for _, f := range r.cfg.Functions {
		if f.App == "" {
			per += f.Instances.Max
		}
	}
	for _, a := range r.cfg.Apps {
		per += a.Instances.Max
	}
	per = max(1, min(per, r.cfg.Scaling.MaxInstances)/2)
	sel := fmt.Sprintf(`app_kubernetes_io_instance=%q`, r.o.Name)
	query := fmt.Sprintf(`sum(polyfn_instances{%s,state="busy"}) + sum(polyfn_queue_depth{%s})`, sel, sel)
	return &ScaledObject{TypeMeta: tm("ScaledObject", "keda.sh/v1alpha1"), ObjectMeta: r.meta(""),
		Spec: ScaledObjectSpec{
			ScaleTargetRef:  ScaleTarget{APIVersion: "apps/v1", Kind: "Deployment", Name: r.o.Name},
			MinReplicaCount: ptr(r.o.Replicas), MaxReplicaCount: ptr(r.o.MaxReplicas),
			PollingInterval: ptr(int32(15)), CooldownPeriod: ptr(int32(300)),
			Triggers: []ScaleTrigger{{Type: "prometheus", Metadata: map[string]string{
				"serverAddress": r.o.Prometheus, "query": query, "threshold": fmt.Sprint(per)}}},
		}}
}
