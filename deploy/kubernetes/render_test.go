package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The tests render the manifests as a user does, with kubectl kustomize
// (kubectl apply -k renders the same way). kubectl with kustomize v5 (kubectl
// 1.27 or later) will do; without one, `make kustomize` installs kustomize
// into .tools/. Debian's kubernetes-client (kubectl 1.20, kustomize v2)
// cannot: it predates kustomize components.

const toolsKustomize = "../../.tools/kustomize"

var (
	rendererOnce sync.Once
	rendererCmd  []string
	rendererErr  error
)

// renderer returns the command that renders a kustomization directory
// (its path appended), skipping t where there is none and the CI variable
// is unset.
func renderer(t *testing.T) []string {
	t.Helper()
	rendererOnce.Do(func() { rendererCmd, rendererErr = findRenderer() })
	if rendererErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set: the manifests must be checked)", rendererErr)
		}
		t.Skipf("%v; skipping: CI is unset", rendererErr)
	}
	return rendererCmd
}

func findRenderer() ([]string, error) {
	var why []string
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		v, err := kubectlKustomizeVersion(kubectl)
		if err == nil && v >= 5 {
			return []string{kubectl, "kustomize"}, nil
		}
		why = append(why, fmt.Sprintf("%s has no kustomize v5 (%v)", kubectl, err))
	} else {
		why = append(why, "no kubectl on PATH")
	}
	if abs, err := filepath.Abs(toolsKustomize); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return []string{abs, "build"}, nil
		}
	}
	why = append(why, "no .tools/kustomize")
	return nil, fmt.Errorf("nothing renders the manifests: %s; run `make kustomize`", strings.Join(why, ", "))
}

// kubectlKustomizeVersion returns the major version of the kustomize that
// kubectl embeds.
func kubectlKustomizeVersion(kubectl string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "version", "--client", "-o", "json").Output()
	if err != nil {
		return 0, err
	}
	var v struct {
		KustomizeVersion string `json:"kustomizeVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return 0, err
	}
	var major int
	if _, err := fmt.Sscanf(v.KustomizeVersion, "v%d.", &major); err != nil {
		return 0, fmt.Errorf("kustomize version %q", v.KustomizeVersion)
	}
	return major, nil
}

var (
	renders   = map[string][]byte{}
	rendersMu sync.Mutex
)

// render returns the rendering of the kustomization in dir, once per dir.
func render(t *testing.T, dir string) []byte {
	t.Helper()
	cmd := renderer(t)
	rendersMu.Lock()
	defer rendersMu.Unlock()
	if out, ok := renders[dir]; ok {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd[0], append(cmd[1:], dir)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", strings.Join(cmd, " "), dir, err, stderr.String())
	}
	renders[dir] = out
	return out
}

// renderBase renders deploy/kubernetes.
func renderBase(t *testing.T) []byte {
	t.Helper()
	return render(t, ".")
}

// renderMemory renders deploy/kubernetes with components/memory, from an
// overlay in a temporary directory: as a user's overlay would. (kustomize
// refuses an overlay inside its base's directory, and absolute paths.)
func renderMemory(t *testing.T) []byte {
	t.Helper()
	renderer(t)
	rendersMu.Lock()
	out, ok := renders["memory"]
	rendersMu.Unlock()
	if ok {
		return out
	}
	dir := t.TempDir()
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	base, err := filepath.Rel(dir, here)
	if err != nil {
		t.Fatal(err)
	}
	base = filepath.ToSlash(base)
	overlay := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"+
		"resources: [%q]\ncomponents: [%q]\n", base, base+"/components/memory")
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	out = render(t, dir)
	rendersMu.Lock()
	renders["memory"] = out
	rendersMu.Unlock()
	return out
}

// manifests are the objects of a rendering, decoded.
type manifests struct {
	objects         []object
	namespaces      []*corev1.Namespace
	deployments     []*appsv1.Deployment
	daemonSets      []*appsv1.DaemonSet
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
	podMonitors     []*monitoringv1.PodMonitor
	rules           []*monitoringv1.PrometheusRule
}

// object is one decoded object: its kind, its metadata and itself.
type object struct {
	kind string
	meta *metav1.ObjectMeta
}

func (o object) String() string { return o.kind + " " + o.meta.Name }

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decode decodes every document of a YAML stream strictly: an unknown
// kind, an unknown or duplicated field, or a value of the wrong type is
// an error.
func decode(stream []byte) (*manifests, error) {
	m := &manifests{}
	var errs []error
	for i, doc := range docSeparator.Split(string(stream), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
			continue
		}
		if tm == (metav1.TypeMeta{}) {
			if strings.TrimSpace(stripComments(doc)) != "" {
				errs = append(errs, fmt.Errorf("document %d: no apiVersion and kind", i))
			}
			continue
		}
		var (
			target any
			meta   *metav1.ObjectMeta
		)
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			o := &corev1.Namespace{}
			m.namespaces, target, meta = append(m.namespaces, o), o, &o.ObjectMeta
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			m.deployments, target, meta = append(m.deployments, o), o, &o.ObjectMeta
		case "apps/v1 DaemonSet":
			o := &appsv1.DaemonSet{}
			m.daemonSets, target, meta = append(m.daemonSets, o), o, &o.ObjectMeta
		case "apps/v1 StatefulSet":
			o := &appsv1.StatefulSet{}
			m.statefulSets, target, meta = append(m.statefulSets, o), o, &o.ObjectMeta
		case "v1 Service":
			o := &corev1.Service{}
			m.services, target, meta = append(m.services, o), o, &o.ObjectMeta
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			m.configMaps, target, meta = append(m.configMaps, o), o, &o.ObjectMeta
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			m.pdbs, target, meta = append(m.pdbs, o), o, &o.ObjectMeta
		case "monitoring.coreos.com/v1 ServiceMonitor":
			o := &monitoringv1.ServiceMonitor{}
			m.serviceMonitors, target, meta = append(m.serviceMonitors, o), o, &o.ObjectMeta
		case "monitoring.coreos.com/v1 PodMonitor":
			o := &monitoringv1.PodMonitor{}
			m.podMonitors, target, meta = append(m.podMonitors, o), o, &o.ObjectMeta
		case "monitoring.coreos.com/v1 PrometheusRule":
			o := &monitoringv1.PrometheusRule{}
			m.rules, target, meta = append(m.rules, o), o, &o.ObjectMeta
		default:
			errs = append(errs, fmt.Errorf("document %d: unknown kind %s %s: add it to the tests' decode and checks", i, tm.APIVersion, tm.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err))
			continue
		}
		m.objects = append(m.objects, object{kind: tm.Kind, meta: meta})
	}
	return m, errors.Join(errs...)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// mustDecode decodes a rendering, failing t on any error.
func mustDecode(t *testing.T, stream []byte) *manifests {
	t.Helper()
	m, err := decode(stream)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// clone returns a deep copy of m, its objects grouped by kind.
func (m *manifests) clone() *manifests {
	c := &manifests{}
	c.namespaces = cloneKind(c, "Namespace", m.namespaces)
	c.deployments = cloneKind(c, "Deployment", m.deployments)
	c.daemonSets = cloneKind(c, "DaemonSet", m.daemonSets)
	c.statefulSets = cloneKind(c, "StatefulSet", m.statefulSets)
	c.services = cloneKind(c, "Service", m.services)
	c.configMaps = cloneKind(c, "ConfigMap", m.configMaps)
	c.pdbs = cloneKind(c, "PodDisruptionBudget", m.pdbs)
	c.serviceMonitors = cloneKind(c, "ServiceMonitor", m.serviceMonitors)
	c.podMonitors = cloneKind(c, "PodMonitor", m.podMonitors)
	c.rules = cloneKind(c, "PrometheusRule", m.rules)
	return c
}

// cloneKind deep-copies objects of one kind into c, listing each in
// c.objects.
func cloneKind[P interface {
	DeepCopy() P
	GetObjectMeta() metav1.Object
}](c *manifests, kind string, src []P) []P {
	out := make([]P, 0, len(src))
	for _, o := range src {
		x := o.DeepCopy()
		out = append(out, x)
		c.objects = append(c.objects, object{kind: kind, meta: x.GetObjectMeta().(*metav1.ObjectMeta)})
	}
	return out
}
