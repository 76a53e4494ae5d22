package kubernetes

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/llorch/llorch/config/configtest"
	"github.com/llorch/llorch/supervisor"
)

// The names the manifests and the rest of the repository agree on.
const (
	namespace       = "llorch"
	partOf          = "llorch"
	labelName       = "app.kubernetes.io/name"
	labelComponent  = "app.kubernetes.io/component"
	labelPartOf     = "app.kubernetes.io/part-of"
	controlPlane    = "orchestratord" // container name
	nodeAgent       = "pool-managerd" // container name
	controlPlaneJob = "llorch-orchestratord"
	agentsJob       = "llorch-agents"
	gpuResource     = corev1.ResourceName("nvidia.com/gpu")
)

// env is what the manifests are checked against, from outside them.
type env struct {
	// secret is secret.example.yaml: the Secret users create.
	secret *corev1.Secret
	// flags are each daemon's documented flags and variables
	// (docs/configuration.md; the daemons' tests hold their flags to it).
	flags map[string]*flagTable
	// alerts are the groups of alerts/*.yml, in file order.
	alerts []monitoringv1.RuleGroup
	// dashboards are dashboards/*.json by file name.
	dashboards map[string]string
}

// flagTable is a daemon's flag table: flag → row.
type flagTable struct {
	flags   map[string]configtest.Row
	envVars map[string]bool
}

// loadEnv reads the checks' env from the repository.
func loadEnv() (*env, error) {
	e := &env{flags: map[string]*flagTable{}, dashboards: map[string]string{}}
	var errs []error
	data, err := os.ReadFile("secret.example.yaml")
	if err == nil {
		e.secret = &corev1.Secret{}
		err = yaml.UnmarshalStrict(data, e.secret)
	}
	errs = append(errs, err)
	for _, daemon := range []string{controlPlane, nodeAgent} {
		rows, err := configtest.FlagTable("../../docs/configuration.md", daemon)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ft := &flagTable{flags: map[string]configtest.Row{}, envVars: map[string]bool{}}
		for _, r := range rows {
			for _, f := range r.Flags {
				ft.flags[f] = r
			}
			for _, v := range r.EnvVars {
				ft.envVars[v] = true
			}
		}
		e.flags[daemon] = ft
	}
	alerts, err := filepath.Glob("../../alerts/*.y*ml")
	errs = append(errs, err)
	slices.Sort(alerts)
	for _, f := range alerts {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var file struct {
			Groups []monitoringv1.RuleGroup `json:"groups"`
		}
		if err := yaml.UnmarshalStrict(data, &file); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
		e.alerts = append(e.alerts, file.Groups...)
	}
	dashboards, err := filepath.Glob("../../dashboards/*.json")
	errs = append(errs, err)
	for _, f := range dashboards {
		data, err := os.ReadFile(f)
		errs = append(errs, err)
		e.dashboards[filepath.Base(f)] = string(data)
	}
	if len(alerts) == 0 || len(dashboards) == 0 {
		errs = append(errs, errors.New("no alerts/*.yml or dashboards/*.json"))
	}
	return e, errors.Join(errs...)
}

// workload is a Deployment, DaemonSet or StatefulSet: what makes pods.
type workload struct {
	kind, name string
	replicas   int32 // 0 for a DaemonSet
	selector   *metav1.LabelSelector
	template   *corev1.PodTemplateSpec
}

func (w workload) String() string { return w.kind + " " + w.name }

func (m *manifests) workloads() []workload {
	var ws []workload
	for _, d := range m.deployments {
		r := int32(1)
		if d.Spec.Replicas != nil {
			r = *d.Spec.Replicas
		}
		ws = append(ws, workload{"Deployment", d.Name, r, d.Spec.Selector, &d.Spec.Template})
	}
	for _, d := range m.daemonSets {
		ws = append(ws, workload{"DaemonSet", d.Name, 0, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range m.statefulSets {
		r := int32(1)
		if s.Spec.Replicas != nil {
			r = *s.Spec.Replicas
		}
		ws = append(ws, workload{"StatefulSet", s.Name, r, s.Spec.Selector, &s.Spec.Template})
	}
	return ws
}

// selecting returns the workloads whose pods sel selects.
func (m *manifests) selecting(sel labels.Selector) []workload {
	var out []workload
	for _, w := range m.workloads() {
		if !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// container returns the container named name of any workload.
func (m *manifests) container(name string) (workload, *corev1.Container) {
	for _, w := range m.workloads() {
		for i := range w.template.Spec.Containers {
			if c := &w.template.Spec.Containers[i]; c.Name == name {
				return w, c
			}
		}
	}
	return workload{}, nil
}

// checker accumulates the errors of a check.
type checker struct{ errs []error }

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// check returns every way the manifests fail the rules the tests hold
// them to.
func (m *manifests) check(e *env) []error {
	c := &checker{}
	m.checkObjects(c)
	for _, w := range m.workloads() {
		m.checkWorkload(c, e, w)
	}
	m.checkControlPlane(c, e)
	m.checkNodeAgent(c, e)
	m.checkServices(c)
	m.checkPDBs(c)
	m.checkMonitors(c)
	m.checkRules(c, e)
	m.checkDashboards(c, e)
	return c.errs
}

// checkObjects: names, namespace and labels of every object.
func (m *manifests) checkObjects(c *checker) {
	seen := map[string]bool{}
	for _, o := range m.objects {
		if seen[o.String()] {
			c.errorf("%s is there twice", o)
		}
		seen[o.String()] = true
		nameErrs := validation.IsDNS1123Subdomain(o.meta.Name)
		if o.kind == "Service" {
			nameErrs = validation.IsDNS1035Label(o.meta.Name)
		}
		for _, msg := range nameErrs {
			c.errorf("%s: name: %s", o, msg)
		}
		if o.kind == "Namespace" {
			if o.meta.Namespace != "" {
				c.errorf("%s: a Namespace has no namespace", o)
			}
		} else if o.meta.Namespace != namespace {
			c.errorf("%s: namespace %q, want %q", o, o.meta.Namespace, namespace)
		}
		checkLabels(c, o.String(), o.meta.Labels, o.kind != "Namespace")
		for k := range o.meta.Annotations {
			for _, msg := range validation.IsQualifiedName(k) {
				c.errorf("%s: annotation %s: %s", o, k, msg)
			}
		}
	}
	if len(m.namespaces) != 1 || m.namespaces[0].Name != namespace {
		c.errorf("want the one Namespace %s", namespace)
	}
	for _, ns := range m.namespaces {
		if ns.Labels["pod-security.kubernetes.io/enforce"] == "" {
			c.errorf("Namespace %s: no pod-security.kubernetes.io/enforce label", ns.Name)
		}
	}
}

// checkLabels: valid labels, and the app.kubernetes.io ones.
func checkLabels(c *checker, what string, l map[string]string, component bool) {
	for k, v := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			c.errorf("%s: label %s: %s", what, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			c.errorf("%s: label %s=%q: %s", what, k, v, msg)
		}
	}
	if l[labelPartOf] != partOf {
		c.errorf("%s: label %s=%q, want %q", what, labelPartOf, l[labelPartOf], partOf)
	}
	if l[labelName] == "" {
		c.errorf("%s: no label %s", what, labelName)
	}
	if component && l[labelComponent] == "" {
		c.errorf("%s: no label %s", what, labelComponent)
	}
}

// checkWorkload: what every pod template must get right.
func (m *manifests) checkWorkload(c *checker, e *env, w workload) {
	t := w.template
	checkLabels(c, w.String()+" pod template", t.Labels, true)
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	switch {
	case err != nil || w.selector == nil:
		c.errorf("%s: selector: %v", w, err)
	case sel.Empty() || !sel.Matches(labels.Set(t.Labels)):
		c.errorf("%s: selector %s does not select its pod template's labels", w, sel)
	}
	spec := &t.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.errorf("%s: automountServiceAccountToken not false: nothing here calls the Kubernetes API", w)
	}
	for _, tsc := range spec.TopologySpreadConstraints {
		if s, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector); err != nil || s.Empty() || !s.Matches(labels.Set(t.Labels)) {
			c.errorf("%s: topology spread over %s: its labelSelector does not select the pods", w, tsc.TopologyKey)
		}
	}
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		terms := a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		for _, p := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, p.PodAffinityTerm)
		}
		for _, term := range terms {
			if s, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err != nil || s.Empty() || !s.Matches(labels.Set(t.Labels)) {
				c.errorf("%s: topology: pod anti-affinity over %s does not select the pods", w, term.TopologyKey)
			}
		}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		volumes[v.Name] = v
		if v.ConfigMap != nil {
			cm := m.configMap(v.ConfigMap.Name)
			if cm == nil {
				c.errorf("%s: volume %s: no ConfigMap %s", w, v.Name, v.ConfigMap.Name)
			}
			for _, item := range v.ConfigMap.Items {
				if cm != nil && !hasKey(cm, item.Key) {
					c.errorf("%s: volume %s: ConfigMap %s has no key %s", w, v.Name, cm.Name, item.Key)
				}
			}
		}
		if v.Secret != nil && (e.secret == nil || v.Secret.SecretName != e.secret.Name) {
			c.errorf("%s: volume %s: Secret %s is not secret.example.yaml's", w, v.Name, v.Secret.SecretName)
		}
	}
	claims := map[string]bool{}
	for _, s := range m.statefulSets {
		if s.Name == w.name && w.kind == "StatefulSet" {
			for _, pvc := range s.Spec.VolumeClaimTemplates {
				claims[pvc.Name] = true
			}
		}
	}
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i := range all {
		ctr := &all[i]
		what := fmt.Sprintf("%s container %s", w, ctr.Name)
		checkImage(c, what, ctr.Image)
		checkSecurity(c, what, psc, ctr.SecurityContext)
		checkResources(c, what, ctr)
		ports := map[string]int32{}
		for _, p := range ctr.Ports {
			for _, msg := range validation.IsValidPortName(p.Name) {
				c.errorf("%s: port name %q: %s", what, p.Name, msg)
			}
			if _, dup := ports[p.Name]; dup {
				c.errorf("%s: port %s twice", what, p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
		if i >= len(spec.InitContainers) {
			checkProbe(c, what, "readiness", ctr.ReadinessProbe, ports)
			checkProbe(c, what, "liveness", ctr.LivenessProbe, ports)
		}
		for _, vm := range ctr.VolumeMounts {
			if volumes[vm.Name] == nil && !claims[vm.Name] {
				c.errorf("%s: volumeMount %s: no such volume", what, vm.Name)
			}
		}
		m.checkEnv(c, e, what, ctr)
	}
}

func hasKey(cm *corev1.ConfigMap, key string) bool {
	_, ok := cm.Data[key]
	_, bin := cm.BinaryData[key]
	return ok || bin
}

func (m *manifests) configMap(name string) *corev1.ConfigMap {
	for _, cm := range m.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

var digestRE = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)

// checkImage: an image is pinned, by a tag other than latest or a digest.
func checkImage(c *checker, what, image string) {
	if digestRE.MatchString(image) {
		return
	}
	tag := ""
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		tag = image[i+1:]
	}
	if tag == "" || tag == "latest" {
		c.errorf("%s: image %q: pin a tag (not latest) or a digest", what, image)
	}
}

// checkSecurity: what Pod Security's "restricted" level asks of a
// container, with a read-only root filesystem on top.
func checkSecurity(c *checker, what string, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = pod.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		c.errorf("%s: securityContext: runAsNonRoot is not true", what)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.errorf("%s: securityContext: seccompProfile is not RuntimeDefault", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf("%s: securityContext: allowPrivilegeEscalation is not false", what)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf("%s: securityContext: readOnlyRootFilesystem is not true", what)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		c.errorf("%s: securityContext: capabilities must drop ALL and add none", what)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.errorf("%s: securityContext: privileged", what)
	}
}

// checkResources: requests for scheduling, a memory limit.
func checkResources(c *checker, what string, ctr *corev1.Container) {
	r := ctr.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[name]; !ok || q.IsZero() {
			c.errorf("%s: resources: no %s request", what, name)
		}
	}
	if q, ok := r.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
		c.errorf("%s: resources: no memory limit", what)
	}
}

// checkProbe: an HTTP probe on a named port of the container.
func checkProbe(c *checker, what, kind string, p *corev1.Probe, ports map[string]int32) {
	switch {
	case p == nil:
		c.errorf("%s: no %s probe", what, kind)
	case p.HTTPGet == nil:
		c.errorf("%s: %s probe: not an HTTP probe", what, kind)
	case p.HTTPGet.Port.Type != intstr.String:
		c.errorf("%s: %s probe: port %s: name the container's port", what, kind, p.HTTPGet.Port.String())
	default:
		if _, ok := ports[p.HTTPGet.Port.StrVal]; !ok {
			c.errorf("%s: %s probe: port %q is no port of the container", what, kind, p.HTTPGet.Port.StrVal)
		}
	}
}

var varRefRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkEnv: every reference out of the container's environment resolves.
func (m *manifests) checkEnv(c *checker, e *env, what string, ctr *corev1.Container) {
	defined := map[string]bool{}
	refs := func(where, s string) {
		for _, ref := range varRefRE.FindAllStringSubmatch(s, -1) {
			if !defined[ref[1]] {
				c.errorf("%s: %s: $(%s) is no variable defined before it: Kubernetes would leave it as it is", what, where, ref[1])
			}
		}
	}
	for _, ev := range ctr.Env {
		refs("env "+ev.Name, ev.Value)
		defined[ev.Name] = true
		src := ev.ValueFrom
		if src == nil {
			continue
		}
		if r := src.SecretKeyRef; r != nil {
			switch {
			case e.secret == nil || r.Name != e.secret.Name:
				c.errorf("%s: env %s: Secret %s is not secret.example.yaml's", what, ev.Name, r.Name)
			case !secretHasKey(e.secret, r.Key):
				c.errorf("%s: env %s: Secret %s has no key %s", what, ev.Name, r.Name, r.Key)
			}
		}
		if r := src.ConfigMapKeyRef; r != nil {
			if cm := m.configMap(r.Name); cm == nil || !hasKey(cm, r.Key) {
				c.errorf("%s: env %s: no ConfigMap %s with key %s", what, ev.Name, r.Name, r.Key)
			}
		}
		if r := src.ResourceFieldRef; r != nil {
			kind, res, _ := strings.Cut(r.Resource, ".")
			list := ctr.Resources.Requests
			if kind == "limits" {
				list = ctr.Resources.Limits
			}
			if _, ok := list[corev1.ResourceName(res)]; !ok {
				c.errorf("%s: env %s: resourceFieldRef %s: the container sets no such resource", what, ev.Name, r.Resource)
			}
		}
	}
	for _, ef := range ctr.EnvFrom {
		if ef.ConfigMapRef != nil && m.configMap(ef.ConfigMapRef.Name) == nil {
			c.errorf("%s: envFrom: no ConfigMap %s", what, ef.ConfigMapRef.Name)
		}
		if ef.SecretRef != nil && (e.secret == nil || ef.SecretRef.Name != e.secret.Name) {
			c.errorf("%s: envFrom: Secret %s is not secret.example.yaml's", what, ef.SecretRef.Name)
		}
	}
	for _, a := range append(slices.Clone(ctr.Command), ctr.Args...) {
		refs("argument", a)
	}
}

func secretHasKey(s *corev1.Secret, key string) bool {
	_, ok := s.StringData[key]
	_, ok2 := s.Data[key]
	return ok || ok2
}

// args are a daemon's parsed command line: flag (with its dashes) → value.
type args map[string]string

// parseArgs parses --name=value, --name value and --bool.
func parseArgs(list []string) (args, error) {
	a := args{}
	for i := 0; i < len(list); i++ {
		s := list[i]
		if !strings.HasPrefix(s, "-") {
			return nil, fmt.Errorf("argument %q is no flag", s)
		}
		name, value, ok := strings.Cut(s, "=")
		if !ok {
			value = "true"
			if i+1 < len(list) && !strings.HasPrefix(list[i+1], "-") {
				i++
				value = list[i]
			}
		}
		if _, dup := a[name]; dup {
			return nil, fmt.Errorf("flag %s twice", name)
		}
		a[name] = value
	}
	return a, nil
}

// duration returns a duration flag's value, def when absent.
func (a args) duration(name string, def time.Duration) (time.Duration, error) {
	v, ok := a[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%s: write a duration with its unit: %w", name, v, err)
	}
	return d, nil
}

// checkDaemon: what both daemons' containers share; returns the parsed
// arguments.
func (m *manifests) checkDaemon(c *checker, e *env, w workload, ctr *corev1.Container) args {
	what := fmt.Sprintf("%s container %s", w, ctr.Name)
	a, err := parseArgs(ctr.Args)
	if err != nil {
		c.errorf("%s: %v", what, err)
		a = args{}
	}
	table := e.flags[ctr.Name]
	if table == nil {
		c.errorf("%s: no flag table for %s in docs/configuration.md", what, ctr.Name)
		return a
	}
	for name := range a {
		if _, ok := table.flags[name]; !ok {
			c.errorf("%s: flag %s: not a flag of %s (docs/configuration.md)", what, name, ctr.Name)
		}
	}
	for _, ev := range ctr.Env {
		for _, prefix := range []string{"LLORCH_", "ORCHD_", "ORCHESTRATORD_", "POOL_MANAGERD_"} {
			if strings.HasPrefix(ev.Name, prefix) && !table.envVars[ev.Name] {
				c.errorf("%s: variable %s: not a variable of %s (docs/configuration.md)", what, ev.Name, ctr.Name)
			}
		}
	}
	token := envVar(ctr, "LLORCH_API_TOKEN")
	if token == nil || token.ValueFrom == nil || token.ValueFrom.SecretKeyRef == nil || token.Value != "" {
		c.errorf("%s: LLORCH_API_TOKEN must come from the Secret (secretKeyRef)", what)
	}
	if _, ok := a["--api-token"]; ok {
		c.errorf("%s: --api-token on the command line shows the token to anyone who reads the pod", what)
	}
	port := containerPort(ctr, "http")
	switch addr, ok := a["--addr"]; {
	case port == 0:
		c.errorf("%s: no port named http", what)
	case !ok:
		c.errorf("%s: no --addr: the default listens on loopback only", what)
	default:
		if _, p, err := net.SplitHostPort(addr); err != nil || p != strconv.Itoa(int(port)) {
			c.errorf("%s: --addr=%s does not listen on the http port %d", what, addr, port)
		}
	}
	for _, p := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe} {
		if p != nil && p.HTTPGet != nil && p.HTTPGet.Path != "/health" {
			c.errorf("%s: probe path %s: the daemons answer /health", what, p.HTTPGet.Path)
		}
	}
	return a
}

func envVar(ctr *corev1.Container, name string) *corev1.EnvVar {
	for i := range ctr.Env {
		if ctr.Env[i].Name == name {
			return &ctr.Env[i]
		}
	}
	return nil
}

func containerPort(ctr *corev1.Container, name string) int32 {
	for _, p := range ctr.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// grace checks that the pod gives its container need, plus any preStop
// sleep, before a SIGKILL.
func checkGrace(c *checker, w workload, ctr *corev1.Container, need time.Duration, why string) {
	if l := ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		need += time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	tgps := int64(30)
	if p := w.template.Spec.TerminationGracePeriodSeconds; p != nil {
		tgps = *p
	}
	if time.Duration(tgps)*time.Second < need {
		c.errorf("%s: terminationGracePeriodSeconds %d: %s needs %s (with any preStop sleep)", w, tgps, why, need)
	}
}

// checkControlPlane: orchestratord's Deployment.
func (m *manifests) checkControlPlane(c *checker, e *env) {
	w, ctr := m.container(controlPlane)
	if ctr == nil {
		c.errorf("no container %s", controlPlane)
		return
	}
	if w.kind != "Deployment" {
		c.errorf("%s runs in a %s, want a Deployment", controlPlane, w.kind)
	}
	a := m.checkDaemon(c, e, w, ctr)
	if a["--cloud-profile"] != "true" {
		c.errorf("%s: no --cloud-profile: the node agents could not register", w)
	}
	grace, err := a.duration("--shutdown-grace", 30*time.Second)
	if err != nil {
		c.errorf("%s: %v", w, err)
	}
	checkGrace(c, w, ctr, grace+15*time.Second, "--shutdown-grace + 15 s")
	var strategy string
	for _, d := range m.deployments {
		if d.Name == w.name {
			strategy = string(d.Spec.Strategy.Type)
		}
	}
	switch reg := a["--registry"]; reg {
	case "", "memory":
		if _, ok := a["--etcd-endpoints"]; ok {
			c.errorf("%s: --etcd-endpoints without --registry=etcd", w)
		}
		if w.replicas != 1 || strategy != "Recreate" {
			c.errorf("%s: memory registry with %d replicas and strategy %q: each replica would see part of the fleet; want exactly 1, Recreate", w, w.replicas, strategy)
		}
	case "etcd":
		m.checkEtcdEndpoints(c, w, a["--etcd-endpoints"])
	default:
		c.errorf("%s: --registry=%s: want memory or etcd", w, reg)
	}
	if w.replicas > 1 && len(m.pdbsSelecting(w)) == 0 {
		c.errorf("%s: %d replicas and no PodDisruptionBudget: a node drain may take them all", w, w.replicas)
	}
}

// checkEtcdEndpoints: the endpoints are exactly the members of an etcd
// StatefulSet, by their stable names through its headless Service.
func (m *manifests) checkEtcdEndpoints(c *checker, w workload, list string) {
	if list == "" {
		c.errorf("%s: --registry=etcd without --etcd-endpoints", w)
		return
	}
	found := map[string]bool{}
	var set string
	for _, ep := range strings.Split(list, ",") {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" {
			c.errorf("%s: --etcd-endpoints: %q is no URL", w, ep)
			continue
		}
		member, svcName, _ := strings.Cut(u.Hostname(), ".")
		var sts string
		for _, s := range m.statefulSets {
			if s.Spec.ServiceName == svcName && strings.HasPrefix(member, s.Name+"-") {
				n, err := strconv.Atoi(strings.TrimPrefix(member, s.Name+"-"))
				if err == nil && n >= 0 && s.Spec.Replicas != nil && n < int(*s.Spec.Replicas) {
					sts = s.Name
					if port := m.servicePort(svcName, u.Port()); port != "client" {
						c.errorf("%s: --etcd-endpoints: %s: Service %s has no port %s named client (etcd's client port)", w, ep, svcName, u.Port())
					}
				}
			}
		}
		if sts == "" {
			c.errorf("%s: --etcd-endpoints: %s is no member of an etcd StatefulSet (<name>-<ordinal>.<serviceName>)", w, ep)
			continue
		}
		set = sts
		found[member] = true
	}
	for _, s := range m.statefulSets {
		if s.Name == set && s.Spec.Replicas != nil && len(found) != int(*s.Spec.Replicas) {
			c.errorf("%s: --etcd-endpoints lists %d of %s's %d members", w, len(found), s.Name, *s.Spec.Replicas)
		}
	}
}

// servicePort returns the name of Service svc's port numbered port.
func (m *manifests) servicePort(svc, port string) string {
	for _, s := range m.services {
		if s.Name != svc {
			continue
		}
		for _, p := range s.Spec.Ports {
			if strconv.Itoa(int(p.Port)) == port {
				return p.Name
			}
		}
	}
	return ""
}

// checkNodeAgent: pool-managerd's DaemonSet.
func (m *manifests) checkNodeAgent(c *checker, e *env) {
	w, ctr := m.container(nodeAgent)
	if ctr == nil {
		c.errorf("no container %s", nodeAgent)
		return
	}
	if w.kind != "DaemonSet" {
		c.errorf("%s runs in a %s, want a DaemonSet", nodeAgent, w.kind)
	}
	a := m.checkDaemon(c, e, w, ctr)
	if a["--cloud-profile"] != "true" {
		c.errorf("%s: no --cloud-profile: the agent would not register", w)
	}
	drain, err1 := a.duration("--drain-timeout", 30*time.Second)
	step, err2 := a.duration("--shutdown-timeout", 30*time.Second)
	if err := errors.Join(err1, err2); err != nil {
		c.errorf("%s: %v", w, err)
	}
	checkGrace(c, w, ctr, drain+2*step+15*time.Second, "--drain-timeout + 2 x --shutdown-timeout + 15 s")

	spec := &w.template.Spec
	if id := envVar(ctr, "POOL_MANAGERD_NODE_ID"); id == nil || id.ValueFrom == nil || id.ValueFrom.FieldRef == nil ||
		id.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		c.errorf("%s: POOL_MANAGERD_NODE_ID must be the node's name (fieldRef spec.nodeName)", w)
	}
	if spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		c.errorf("%s: GPU: nodeSelector nvidia.com/gpu.present is not \"true\"", w)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == string(gpuResource) && (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == "")
	}) {
		c.errorf("%s: GPU: no toleration of the %s NoSchedule taint", w, gpuResource)
	}
	if q, ok := ctr.Resources.Limits[gpuResource]; !ok || q.Value() < 1 {
		c.errorf("%s: GPU: no %s limit", w, gpuResource)
	}
	port := containerPort(ctr, "http")
	if addr := envVar(ctr, "POOL_MANAGERD_ADDRESS"); addr == nil {
		c.errorf("%s: no POOL_MANAGERD_ADDRESS: the control plane could not reach the agent", w)
	} else if u, err := url.Parse(varRefRE.ReplaceAllString(addr.Value, "pod")); err != nil || u.Port() != strconv.Itoa(int(port)) {
		c.errorf("%s: POOL_MANAGERD_ADDRESS %s is not on the http port %d", w, addr.Value, port)
	}
	m.checkControlPlaneURL(c, w, ctr)

	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range ctr.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	// mountOf returns the mount that holds path.
	mountOf := func(p string) (corev1.VolumeMount, *corev1.Volume, string) {
		for dir := path.Clean(p); ; dir = path.Dir(dir) {
			if vm, ok := mounts[dir]; ok {
				rel := strings.TrimPrefix(strings.TrimPrefix(path.Clean(p), dir), "/")
				return vm, volumes[vm.Name], rel
			}
			if dir == "/" || dir == "." {
				return corev1.VolumeMount{}, nil, ""
			}
		}
	}
	if dir, ok := a["--runtime-dir"]; !ok {
		c.errorf("%s: no --runtime-dir: the default is under the read-only root filesystem", w)
	} else if vm, v, _ := mountOf(dir); v == nil || vm.ReadOnly || (v.EmptyDir == nil && v.HostPath == nil) {
		c.errorf("%s: --runtime-dir=%s is on no writable emptyDir or hostPath volume", w, dir)
	}
	file, ok := a["--pools-config"]
	if !ok {
		return
	}
	_, v, key := mountOf(file)
	if v == nil || v.ConfigMap == nil {
		c.errorf("%s: --pools-config=%s is on no ConfigMap volume", w, file)
		return
	}
	cm := m.configMap(v.ConfigMap.Name)
	if cm == nil || cm.Data[key] == "" {
		c.errorf("%s: --pools-config=%s: no ConfigMap %s with key %s", w, file, v.ConfigMap.Name, key)
		return
	}
	pools, err := supervisor.ParseFile([]byte(cm.Data[key]))
	if err != nil {
		c.errorf("%s: --pools-config: ConfigMap %s key %s: %v", w, cm.Name, key, err)
	}
	for _, p := range pools {
		if p.Engine == supervisor.EngineSim {
			continue
		}
		if _, mv, _ := mountOf(p.Model); mv == nil {
			c.errorf("%s: --pools-config: pool %s: model %s is on no volume", w, p.PoolID, p.Model)
		}
	}
}

// checkControlPlaneURL: each URL of ORCHESTRATORD_URL (comma-separated)
// names a Service, and a port of it, that reach the control plane's http
// port.
func (m *manifests) checkControlPlaneURL(c *checker, w workload, ctr *corev1.Container) {
	ev := envVar(ctr, "ORCHESTRATORD_URL")
	if ev == nil {
		c.errorf("%s: no ORCHESTRATORD_URL", w)
		return
	}
	for _, raw := range strings.Split(ev.Value, ",") {
		m.checkControlPlaneURLOne(c, w, raw)
	}
}

func (m *manifests) checkControlPlaneURLOne(c *checker, w workload, raw string) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		c.errorf("%s: ORCHESTRATORD_URL %q: %v", w, raw, err)
		return
	}
	host, _, _ := strings.Cut(u.Hostname(), ".")
	_, cp := m.container(controlPlane)
	for _, s := range m.services {
		if s.Name != host {
			continue
		}
		for _, p := range s.Spec.Ports {
			if strconv.Itoa(int(p.Port)) != u.Port() {
				continue
			}
			sel := labels.SelectorFromSet(s.Spec.Selector)
			for _, sw := range m.selecting(sel) {
				if cp != nil && slices.ContainsFunc(sw.template.Spec.Containers, func(x corev1.Container) bool { return x.Name == controlPlane }) &&
					targetPortOf(p, cp) == containerPort(cp, "http") {
					return
				}
			}
		}
	}
	c.errorf("%s: ORCHESTRATORD_URL %s: no Service port that reaches the control plane's http port", w, raw)
}

// targetPortOf returns the container port number a Service port reaches
// in ctr, 0 if none.
func targetPortOf(p corev1.ServicePort, ctr *corev1.Container) int32 {
	tp := p.TargetPort
	if tp.Type == intstr.String {
		return containerPort(ctr, tp.StrVal)
	}
	n := tp.IntVal
	if n == 0 {
		n = p.Port
	}
	for _, cp := range ctr.Ports {
		if cp.ContainerPort == n {
			return n
		}
	}
	return 0
}

// checkServices: each Service selects pods, and its ports reach theirs.
func (m *manifests) checkServices(c *checker) {
	for _, s := range m.services {
		ws := m.selecting(labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) == 0 {
			c.errorf("Service %s: selector %v selects no pods", s.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			for _, msg := range validation.IsValidPortName(p.Name) {
				c.errorf("Service %s: port name %q: %s", s.Name, p.Name, msg)
			}
			for _, w := range ws {
				if !slices.ContainsFunc(w.template.Spec.Containers, func(ctr corev1.Container) bool { return targetPortOf(p, &ctr) != 0 }) {
					c.errorf("Service %s: port %s: targetPort %s is no port of %s's containers", s.Name, p.Name, p.TargetPort.String(), w)
				}
			}
		}
	}
	for _, sts := range m.statefulSets {
		var svc *corev1.Service
		for _, s := range m.services {
			if s.Name == sts.Spec.ServiceName {
				svc = s
			}
		}
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			c.errorf("StatefulSet %s: serviceName %q is no headless Service", sts.Name, sts.Spec.ServiceName)
		}
	}
}

func (m *manifests) pdbsSelecting(w workload) []string {
	var out []string
	for _, p := range m.pdbs {
		if sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err == nil && !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, p.Name)
		}
	}
	return out
}

// checkPDBs: each selects a workload with replicas, and lets one go.
func (m *manifests) checkPDBs(c *checker) {
	for _, p := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			c.errorf("PodDisruptionBudget %s: %v", p.Name, err)
			continue
		}
		ws := m.selecting(sel)
		if len(ws) != 1 || ws[0].replicas == 0 {
			c.errorf("PodDisruptionBudget %s selects %d workloads with replicas, want 1", p.Name, len(ws))
			continue
		}
		replicas := int(ws[0].replicas)
		allowed := 0
		switch {
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
			c.errorf("PodDisruptionBudget %s: minAvailable and maxUnavailable both", p.Name)
		case p.Spec.MinAvailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, replicas, true)
			if err != nil {
				c.errorf("PodDisruptionBudget %s: %v", p.Name, err)
			}
			allowed = replicas - n
		case p.Spec.MaxUnavailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, replicas, false)
			if err != nil {
				c.errorf("PodDisruptionBudget %s: %v", p.Name, err)
			}
			allowed = n
		}
		if allowed < 1 {
			c.errorf("PodDisruptionBudget %s: allows no disruption of %s's %d replicas: node drains would block", p.Name, ws[0], replicas)
		}
	}
}

// checkMonitors: the ServiceMonitors and PodMonitors find their targets,
// by ports that exist, and give them the jobs alerts/ expects.
func (m *manifests) checkMonitors(c *checker) {
	jobs := map[string]bool{}
	for _, sm := range m.serviceMonitors {
		what := "ServiceMonitor " + sm.Name
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || sel.Empty() {
			c.errorf("%s: selector: %v", what, err)
			continue
		}
		var svcs []*corev1.Service
		for _, s := range m.services {
			if sel.Matches(labels.Set(s.Labels)) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) == 0 {
			c.errorf("%s: selects no Service", what)
		}
		for _, ep := range sm.Spec.Endpoints {
			for _, s := range svcs {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					c.errorf("%s: port %q is no port of Service %s", what, ep.Port, s.Name)
				}
			}
			checkMetricsPath(c, what, ep.Path)
			job := relabelledJob(ep.RelabelConfigs)
			jobs[job] = true
			for _, s := range svcs {
				for _, w := range m.selecting(labels.SelectorFromSet(s.Spec.Selector)) {
					checkJob(c, what, w, job)
				}
			}
		}
	}
	for _, pm := range m.podMonitors {
		what := "PodMonitor " + pm.Name
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil || sel.Empty() {
			c.errorf("%s: selector: %v", what, err)
			continue
		}
		ws := m.selecting(sel)
		if len(ws) == 0 {
			c.errorf("%s: selects no pods", what)
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			port := ""
			if ep.Port != nil {
				port = *ep.Port
			}
			for _, w := range ws {
				if !slices.ContainsFunc(w.template.Spec.Containers, func(ctr corev1.Container) bool { return containerPort(&ctr, port) != 0 }) {
					c.errorf("%s: port %q is no port of %s's containers", what, port, w)
				}
			}
			checkMetricsPath(c, what, ep.Path)
			job := relabelledJob(ep.RelabelConfigs)
			jobs[job] = true
			for _, w := range ws {
				checkJob(c, what, w, job)
			}
		}
	}
	for _, want := range []string{controlPlaneJob, agentsJob} {
		if !jobs[want] {
			c.errorf("no ServiceMonitor or PodMonitor gives job %s, which alerts/ and the dashboards read", want)
		}
	}
}

func checkMetricsPath(c *checker, what, p string) {
	if p != "/metrics" {
		c.errorf("%s: path %q, want /metrics", what, p)
	}
}

// relabelledJob returns the job a target's relabelling sets, "" if none.
func relabelledJob(rcs []monitoringv1.RelabelConfig) string {
	job := ""
	for _, rc := range rcs {
		action := strings.ToLower(rc.Action)
		if rc.TargetLabel == "job" && (action == "" || action == "replace") && rc.Replacement != nil && len(rc.SourceLabels) == 0 {
			job = *rc.Replacement
		}
	}
	return job
}

// checkJob: the control plane's and the agents' targets get the job names
// of deploy/prometheus, which alerts/ and the dashboards read.
func checkJob(c *checker, what string, w workload, job string) {
	for _, ctr := range w.template.Spec.Containers {
		want := map[string]string{controlPlane: controlPlaneJob, nodeAgent: agentsJob}[ctr.Name]
		if want != "" && job != want {
			c.errorf("%s: %s's targets get job %q, want %q (relabel job)", what, w, job, want)
		}
	}
}

// checkRules: the PrometheusRules hold exactly alerts/*.yml's groups.
func (m *manifests) checkRules(c *checker, e *env) {
	var groups []monitoringv1.RuleGroup
	for _, r := range m.rules {
		groups = append(groups, r.Spec.Groups...)
	}
	if !reflect.DeepEqual(groups, e.alerts) {
		c.errorf("the PrometheusRules' groups differ from alerts/*.yml's (%d groups, want %d): run make kubernetes", len(groups), len(e.alerts))
	}
}

// checkDashboards: every dashboards/*.json file, as it is, in a ConfigMap
// Grafana's sidecar picks up; no other dashboard.
func (m *manifests) checkDashboards(c *checker, e *env) {
	seen := map[string]bool{}
	for _, cm := range m.configMaps {
		if cm.Labels[DashboardLabel] != "1" {
			continue
		}
		for key, content := range cm.Data {
			want, ok := e.dashboards[key]
			switch {
			case !ok:
				c.errorf("ConfigMap %s: dashboard %s is no dashboards/*.json file", cm.Name, key)
			case content != want:
				c.errorf("ConfigMap %s: dashboard %s differs from dashboards/%s: run make kubernetes", cm.Name, key, key)
			}
			seen[key] = true
		}
	}
	for f := range e.dashboards {
		if !seen[f] {
			c.errorf("dashboard dashboards/%s is in no ConfigMap labelled %s: \"1\"", f, DashboardLabel)
		}
	}
}
