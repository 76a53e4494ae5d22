package kubernetes

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func mustEnv(t *testing.T) *env {
	t.Helper()
	e, err := loadEnv()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func reportAll(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Error(err)
	}
}

// The base as shipped: every check passes, and it is the scaled-out
// control plane on etcd.
func TestBase(t *testing.T) {
	m := mustDecode(t, renderBase(t))
	reportAll(t, m.check(mustEnv(t)))

	w, ctr := m.container(controlPlane)
	if ctr == nil {
		t.Fatal("no orchestratord")
	}
	a, err := parseArgs(ctr.Args)
	if err != nil {
		t.Fatal(err)
	}
	if w.replicas != 2 || a["--registry"] != "etcd" {
		t.Errorf("base: %s with %d replicas, --registry=%s; want 2 on etcd", w, w.replicas, a["--registry"])
	}
	if len(m.statefulSets) != 1 || m.statefulSets[0].Name != "llorch-etcd" {
		t.Errorf("base: want the StatefulSet llorch-etcd")
	}
	if got := m.pdbsSelecting(w); !slices.Equal(got, []string{"llorch-orchestratord"}) {
		t.Errorf("base: PodDisruptionBudgets of %s: %v", w, got)
	}
}

// The base with components/memory: every check passes, and it is one
// control plane with its registry in memory, and no etcd.
func TestMemoryComponent(t *testing.T) {
	m := mustDecode(t, renderMemory(t))
	reportAll(t, m.check(mustEnv(t)))

	w, ctr := m.container(controlPlane)
	if ctr == nil {
		t.Fatal("no orchestratord")
	}
	a, err := parseArgs(ctr.Args)
	if err != nil {
		t.Fatal(err)
	}
	if w.replicas != 1 || a["--registry"] == "etcd" || a["--etcd-endpoints"] != "" {
		t.Errorf("memory: %s with %d replicas and %v; want 1, no etcd arguments", w, w.replicas, ctr.Args)
	}
	if len(m.statefulSets) != 0 || len(m.pdbs) != 0 {
		t.Errorf("memory: %d StatefulSets and %d PodDisruptionBudgets left, want none", len(m.statefulSets), len(m.pdbs))
	}
	base := mustDecode(t, renderBase(t))
	if len(base.objects)-len(m.objects) != 4 {
		t.Errorf("memory: %d objects, the base %d: want only etcd's Service, StatefulSet and PDB and orchestratord's PDB gone", len(m.objects), len(base.objects))
	}
}

func deployment(m *manifests, name string) *appsv1.Deployment {
	for _, d := range m.deployments {
		if d.Name == name {
			return d
		}
	}
	panic("no Deployment " + name)
}

func daemonSet(m *manifests) *appsv1.DaemonSet { return m.daemonSets[0] }

func service(m *manifests, name string) *corev1.Service {
	for _, s := range m.services {
		if s.Name == name {
			return s
		}
	}
	panic("no Service " + name)
}

func ctrOf(m *manifests, name string) *corev1.Container {
	_, c := m.container(name)
	if c == nil {
		panic("no container " + name)
	}
	return c
}

func setArg(c *corev1.Container, flag, value string) {
	for i, a := range c.Args {
		if strings.HasPrefix(a, flag+"=") {
			c.Args[i] = flag + "=" + value
			return
		}
	}
	c.Args = append(c.Args, flag+"="+value)
}

func dropArg(c *corev1.Container, flag string) {
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, flag+"=") || a == flag })
}

// Each check can fail: a mutated base fails with the error the mutation
// calls for.
func TestChecksCatchMistakes(t *testing.T) {
	stream := renderBase(t)
	base := mustDecode(t, stream)
	e := mustEnv(t)
	cp := "llorch-orchestratord"
	cases := []struct {
		name   string
		raw    func(string) string // the YAML, before decoding
		mutate func(*manifests)
		want   string
	}{
		{name: "unknown field", want: "unknown field",
			raw: func(s string) string {
				return strings.Replace(s, "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1)
			}},
		{name: "unknown kind", want: "unknown kind",
			raw: func(s string) string { return s + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n" }},
		{name: "wrong type", want: "document",
			raw: func(s string) string { return strings.Replace(s, "replicas: 2", "replicas: two", 1) }},
		{name: "wrong namespace", want: "namespace",
			mutate: func(m *manifests) { service(m, cp).Namespace = "default" }},
		{name: "no part-of label", want: labelPartOf,
			mutate: func(m *manifests) { delete(m.podMonitors[0].Labels, labelPartOf) }},
		{name: "no component label on pods", want: "pod template: no label " + labelComponent,
			mutate: func(m *manifests) { delete(daemonSet(m).Spec.Template.Labels, labelComponent) }},
		{name: "object twice", want: "twice",
			mutate: func(m *manifests) { m.objects = append(m.objects, m.objects[1]) }},
		{name: "selector misses template", want: "does not select its pod template",
			mutate: func(m *manifests) {
				deployment(m, cp).Spec.Selector.MatchLabels[labelName] = "orchestrator"
			}},
		{name: "topology spread misses pods", want: "topology spread",
			mutate: func(m *manifests) {
				deployment(m, cp).Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels[labelName] = "x"
			}},
		{name: "Service selects nothing", want: "selects no pods",
			mutate: func(m *manifests) { service(m, cp).Spec.Selector[labelName] = "orchestrator" }},
		{name: "Service targetPort unnamed", want: "targetPort",
			mutate: func(m *manifests) { service(m, cp).Spec.Ports[0].TargetPort = intstr.FromString("web") }},
		{name: "Service targetPort number", want: "targetPort",
			mutate: func(m *manifests) { service(m, cp).Spec.Ports[0].TargetPort = intstr.FromInt32(8081) }},
		{name: "headless Service missing", want: "serviceName",
			mutate: func(m *manifests) { m.statefulSets[0].Spec.ServiceName = "etcd" }},
		{name: "probe port", want: "readiness probe: port",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics") }},
		{name: "probe by number", want: "name the container's port",
			mutate: func(m *manifests) { ctrOf(m, controlPlane).LivenessProbe.HTTPGet.Port = intstr.FromInt32(8080) }},
		{name: "no readiness probe", want: "no readiness probe",
			mutate: func(m *manifests) { m.statefulSets[0].Spec.Template.Spec.Containers[0].ReadinessProbe = nil }},
		{name: "probe path", want: "probe path",
			mutate: func(m *manifests) { ctrOf(m, controlPlane).ReadinessProbe.HTTPGet.Path = "/healthz" }},
		{name: "Secret name", want: "is not secret.example.yaml's",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "LLORCH_API_TOKEN").ValueFrom.SecretKeyRef.Name = "llorch-token"
			}},
		{name: "Secret key", want: "has no key",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, controlPlane), "LLORCH_API_TOKEN").ValueFrom.SecretKeyRef.Key = "api-token"
			}},
		{name: "token in the clear", want: "LLORCH_API_TOKEN must come from the Secret",
			mutate: func(m *manifests) {
				*envVar(ctrOf(m, controlPlane), "LLORCH_API_TOKEN") = corev1.EnvVar{Name: "LLORCH_API_TOKEN", Value: "secret"}
			}},
		{name: "ConfigMap volume", want: "no ConfigMap",
			mutate: func(m *manifests) { daemonSet(m).Spec.Template.Spec.Volumes[0].ConfigMap.Name = "pools" }},
		{name: "mount without volume", want: "no such volume",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).VolumeMounts[0].Name = "config" }},
		{name: "undefined variable", want: "$(POD_IP)",
			mutate: func(m *manifests) {
				c := ctrOf(m, nodeAgent)
				c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_IP" })
			}},
		{name: "resourceFieldRef", want: "resourceFieldRef",
			mutate: func(m *manifests) { delete(ctrOf(m, controlPlane).Resources.Limits, corev1.ResourceMemory) }},
		{name: "image latest", want: "pin a tag",
			mutate: func(m *manifests) {
				m.statefulSets[0].Spec.Template.Spec.Containers[0].Image = "quay.io/coreos/etcd:latest"
			}},
		{name: "image untagged", want: "pin a tag",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).Image = "registry.example.com:5000/llorch/pool-managerd" }},
		{name: "writable root", want: "readOnlyRootFilesystem",
			mutate: func(m *manifests) { *ctrOf(m, nodeAgent).SecurityContext.ReadOnlyRootFilesystem = false }},
		{name: "root", want: "runAsNonRoot",
			mutate: func(m *manifests) { deployment(m, cp).Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil }},
		{name: "no memory limit", want: "no memory limit",
			mutate: func(m *manifests) {
				delete(m.statefulSets[0].Spec.Template.Spec.Containers[0].Resources.Limits, corev1.ResourceMemory)
			}},
		{name: "unknown flag", want: "flag --registry-mode",
			mutate: func(m *manifests) { setArg(ctrOf(m, controlPlane), "--registry-mode", "etcd") }},
		{name: "flag of the other daemon", want: "flag --node-id",
			mutate: func(m *manifests) { setArg(ctrOf(m, controlPlane), "--node-id", "x") }},
		{name: "unknown variable", want: "variable POOL_MANAGERD_NODEID",
			mutate: func(m *manifests) { envVar(ctrOf(m, nodeAgent), "POOL_MANAGERD_NODE_ID").Name = "POOL_MANAGERD_NODEID" }},
		{name: "addr off the port", want: "--addr",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--addr", ":9300") }},
		{name: "no cloud profile", want: "--cloud-profile",
			mutate: func(m *manifests) { dropArg(ctrOf(m, nodeAgent), "--cloud-profile") }},
		{name: "control plane grace", want: "terminationGracePeriodSeconds 50",
			mutate: func(m *manifests) { setArg(ctrOf(m, controlPlane), "--shutdown-grace", "31s") }},
		{name: "agent grace", want: "terminationGracePeriodSeconds",
			mutate: func(m *manifests) {
				g := int64(60)
				daemonSet(m).Spec.Template.Spec.TerminationGracePeriodSeconds = &g
			}},
		{name: "bare duration", want: "with its unit",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--drain-timeout", "30") }},
		{name: "etcd endpoint not a member", want: "is no member",
			mutate: func(m *manifests) {
				setArg(ctrOf(m, controlPlane), "--etcd-endpoints", "http://llorch-etcd-0.llorch-etcd:2379,http://llorch-etcd-1.llorch-etcd:2379,http://llorch-etcd-3.llorch-etcd:2379")
			}},
		{name: "etcd endpoint port", want: "has no port",
			mutate: func(m *manifests) {
				setArg(ctrOf(m, controlPlane), "--etcd-endpoints", "http://llorch-etcd-0.llorch-etcd:2380,http://llorch-etcd-1.llorch-etcd:2379,http://llorch-etcd-2.llorch-etcd:2379")
			}},
		{name: "etcd members missing", want: "lists 2 of",
			mutate: func(m *manifests) {
				setArg(ctrOf(m, controlPlane), "--etcd-endpoints", "http://llorch-etcd-0.llorch-etcd:2379,http://llorch-etcd-1.llorch-etcd:2379")
			}},
		{name: "memory mode scaled out", want: "memory registry with 2 replicas",
			mutate: func(m *manifests) {
				dropArg(ctrOf(m, controlPlane), "--registry")
				dropArg(ctrOf(m, controlPlane), "--etcd-endpoints")
			}},
		{name: "no PodDisruptionBudget", want: "no PodDisruptionBudget",
			mutate: func(m *manifests) {
				m.pdbs = slices.DeleteFunc(m.pdbs, func(p *policyv1.PodDisruptionBudget) bool { return p.Name == cp })
			}},
		{name: "PodDisruptionBudget blocks drains", want: "allows no disruption",
			mutate: func(m *manifests) {
				two := intstr.FromInt32(2)
				for _, p := range m.pdbs {
					if p.Name == cp {
						p.Spec.MinAvailable = &two
					}
				}
			}},
		{name: "node id", want: "spec.nodeName",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "POOL_MANAGERD_NODE_ID").ValueFrom.FieldRef.FieldPath = "metadata.name"
			}},
		{name: "no GPU node selector", want: "GPU: nodeSelector",
			mutate: func(m *manifests) { daemonSet(m).Spec.Template.Spec.NodeSelector = nil }},
		{name: "no GPU toleration", want: "GPU: no toleration",
			mutate: func(m *manifests) { daemonSet(m).Spec.Template.Spec.Tolerations = nil }},
		{name: "no GPU limit", want: "GPU: no nvidia.com/gpu limit",
			mutate: func(m *manifests) { delete(ctrOf(m, nodeAgent).Resources.Limits, gpuResource) }},
		{name: "control plane URL port", want: "ORCHESTRATORD_URL",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "ORCHESTRATORD_URL").Value = "http://llorch-orchestratord:80"
			}},
		{name: "control plane URL host", want: "ORCHESTRATORD_URL",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "ORCHESTRATORD_URL").Value = "http://orchestratord:8080"
			}},
		{name: "second control plane URL", want: "ORCHESTRATORD_URL http://llorch-etcd:2379",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "ORCHESTRATORD_URL").Value = "http://llorch-orchestratord:8080,http://llorch-etcd:2379"
			}},
		{name: "agent address port", want: "POOL_MANAGERD_ADDRESS",
			mutate: func(m *manifests) {
				envVar(ctrOf(m, nodeAgent), "POOL_MANAGERD_ADDRESS").Value = "http://$(POD_IP):9201"
			}},
		{name: "runtime dir unmounted", want: "--runtime-dir",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--runtime-dir", "/var/run/engines") }},
		{name: "pools config invalid", want: "--pools-config",
			mutate: func(m *manifests) {
				cm := m.configMap("llorch-pools")
				cm.Data["pools.yaml"] = strings.Replace(cm.Data["pools.yaml"], "slots:", "slot:", 1)
			}},
		{name: "model on no volume", want: "is on no volume",
			mutate: func(m *manifests) {
				cm := m.configMap("llorch-pools")
				cm.Data["pools.yaml"] = strings.Replace(cm.Data["pools.yaml"], "/models/", "/data/", 1)
			}},
		{name: "ServiceMonitor selects nothing", want: "selects no Service",
			mutate: func(m *manifests) { m.serviceMonitors[0].Spec.Selector.MatchLabels[labelName] = "x" }},
		{name: "ServiceMonitor port", want: "is no port of Service",
			mutate: func(m *manifests) { m.serviceMonitors[0].Spec.Endpoints[0].Port = "metrics" }},
		{name: "ServiceMonitor job", want: "want \"llorch-orchestratord\"",
			mutate: func(m *manifests) { m.serviceMonitors[0].Spec.Endpoints[0].RelabelConfigs = nil }},
		{name: "PodMonitor selects nothing", want: "PodMonitor llorch-agents: selects no pods",
			mutate: func(m *manifests) { m.podMonitors[0].Spec.Selector.MatchLabels[labelName] = "agent" }},
		{name: "PodMonitor port", want: "is no port of DaemonSet",
			mutate: func(m *manifests) { p := "metrics"; m.podMonitors[0].Spec.PodMetricsEndpoints[0].Port = &p }},
		{name: "PodMonitor job", want: "job llorch-agents",
			mutate: func(m *manifests) {
				r := "agents"
				m.podMonitors[0].Spec.PodMetricsEndpoints[0].RelabelConfigs[0].Replacement = &r
			}},
		{name: "metrics path", want: "want /metrics",
			mutate: func(m *manifests) { m.podMonitors[0].Spec.PodMetricsEndpoints[0].Path = "/stats" }},
		{name: "rule dropped", want: "PrometheusRules' groups differ",
			mutate: func(m *manifests) {
				g := &m.rules[0].Spec.Groups[1]
				g.Rules = g.Rules[1:]
			}},
		{name: "rule changed", want: "PrometheusRules' groups differ",
			mutate: func(m *manifests) {
				m.rules[0].Spec.Groups[0].Rules[0].Expr = intstr.FromString("vector(1)")
			}},
		{name: "dashboard edited", want: "differs from dashboards/",
			mutate: func(m *manifests) { m.configMap("llorch-dashboard-node").Data["node.json"] += " " }},
		{name: "dashboard missing", want: "is in no ConfigMap",
			mutate: func(m *manifests) { delete(m.configMap("llorch-dashboard-gpus").Labels, DashboardLabel) }},
		{name: "automounted token", want: "automountServiceAccountToken",
			mutate: func(m *manifests) { daemonSet(m).Spec.Template.Spec.AutomountServiceAccountToken = nil }},
		{name: "no pod-security label", want: "pod-security",
			mutate: func(m *manifests) { delete(m.namespaces[0].Labels, "pod-security.kubernetes.io/enforce") }},
		{name: "token on the command line", want: "--api-token on the command line",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--api-token", "secret") }},
		{name: "unknown registry", want: "want memory or etcd",
			mutate: func(m *manifests) { setArg(ctrOf(m, controlPlane), "--registry", "redis") }},
		{name: "endpoints without etcd", want: "--etcd-endpoints without --registry=etcd",
			mutate: func(m *manifests) { setArg(ctrOf(m, controlPlane), "--registry", "memory") }},
		{name: "loopback default", want: "no --addr",
			mutate: func(m *manifests) { dropArg(ctrOf(m, controlPlane), "--addr") }},
		{name: "positional argument", want: "is no flag",
			mutate: func(m *manifests) { c := ctrOf(m, nodeAgent); c.Args = append([]string{"serve"}, c.Args...) }},
		{name: "capabilities kept", want: "capabilities must drop ALL",
			mutate: func(m *manifests) { ctrOf(m, controlPlane).SecurityContext.Capabilities = nil }},
		{name: "no seccomp", want: "seccompProfile",
			mutate: func(m *manifests) { m.statefulSets[0].Spec.Template.Spec.SecurityContext.SeccompProfile = nil }},
		{name: "privilege escalation", want: "allowPrivilegeEscalation",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).SecurityContext.AllowPrivilegeEscalation = nil }},
		{name: "no CPU request", want: "no cpu request",
			mutate: func(m *manifests) { delete(ctrOf(m, nodeAgent).Resources.Requests, corev1.ResourceCPU) }},
		{name: "runtime dir read-only", want: "--runtime-dir",
			mutate: func(m *manifests) {
				c := ctrOf(m, nodeAgent)
				for i := range c.VolumeMounts {
					if c.VolumeMounts[i].Name == "engines" {
						c.VolumeMounts[i].ReadOnly = true
					}
				}
			}},
		{name: "pools config off its ConfigMap", want: "is on no ConfigMap volume",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--pools-config", "/tmp/pools.yaml") }},
		{name: "pools config key", want: "no ConfigMap llorch-pools with key",
			mutate: func(m *manifests) { setArg(ctrOf(m, nodeAgent), "--pools-config", "/etc/llorch/pool.yaml") }},
		{name: "PodDisruptionBudget selects nothing", want: "selects 0 workloads",
			mutate: func(m *manifests) { m.pdbs[0].Spec.Selector.MatchLabels[labelName] = "x" }},
		{name: "Service port name", want: "port name",
			mutate: func(m *manifests) { service(m, cp).Spec.Ports[0].Name = "HTTP_port" }},
		{name: "container port name", want: "port name",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).Ports[0].Name = "agent-http-and-metrics" }},
		{name: "envFrom Secret", want: "envFrom: Secret",
			mutate: func(m *manifests) {
				c := ctrOf(m, nodeAgent)
				c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "other"}}})
			}},
		{name: "Secret volume", want: "volume token: Secret",
			mutate: func(m *manifests) {
				spec := &daemonSet(m).Spec.Template.Spec
				spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "llorch-token"}}})
			}},
		{name: "bad object name", want: "name:",
			mutate: func(m *manifests) { m.configMap("llorch-pools").Name = "llorch_pools" }},
		{name: "GPU quantity zero", want: "GPU: no nvidia.com/gpu limit",
			mutate: func(m *manifests) { ctrOf(m, nodeAgent).Resources.Limits[gpuResource] = resource.MustParse("0") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var errs []error
			if tc.raw != nil {
				s := tc.raw(string(stream))
				if s == string(stream) {
					t.Fatal("the mutation changed nothing")
				}
				m, err := decode([]byte(s))
				if err != nil {
					errs = append(errs, err)
				} else {
					errs = m.check(e)
				}
			} else {
				m := base.clone()
				if errs := m.check(e); len(errs) > 0 {
					t.Fatalf("the clone fails before its mutation: %v", errs)
				}
				tc.mutate(m)
				errs = m.check(e)
			}
			joined := errors.Join(errs...)
			t.Logf("errors: %v", joined)
			if joined == nil || !strings.Contains(joined.Error(), tc.want) {
				t.Errorf("want an error with %q, got %v", tc.want, joined)
			}
		})
	}
}

// The committed generated files are what Generate builds.
func TestGeneratedFilesAreCommitted(t *testing.T) {
	files, err := Generate("../..")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%v: run make kubernetes", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes: run make kubernetes and commit the result", name)
		}
	}
	stale, err := filepath.Glob("*.generated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range stale {
		if _, ok := files[f]; !ok {
			t.Errorf("%s is generated by nothing: remove it", f)
		}
	}
}

// Generate refuses what would make a wrong PrometheusRule or ConfigMap.
func TestGenerateRejects(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"rule file with another key": {"alerts/a.yml": "groups: [{name: a, rules: []}]\nfoo: 1\n", "dashboards/d.json": "{}"},
		"rule file without groups":   {"alerts/a.yml": "groups: []\n", "dashboards/d.json": "{}"},
		"two files, one name":        {"alerts/a.b.yml": "groups: [{name: a}]\n", "alerts/a-b.yml": "groups: [{name: b}]\n", "dashboards/d.json": "{}"},
		"dashboard not JSON":         {"alerts/a.yml": "groups: [{name: a}]\n", "dashboards/d.json": "{"},
		"no dashboards":              {"alerts/a.yml": "groups: [{name: a}]\n"},
		"no alerts":                  {"dashboards/d.json": "{}"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			for f, content := range files {
				if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, f), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Generate(root); err == nil {
				t.Error("no error")
			}
		})
	}
}

// kustomization.yaml lists every manifest of this directory but the
// example Secret.
func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" && f != "secret.example.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want %v (every manifest here but secret.example.yaml)", got, want)
	}
}

// secret.example.yaml is the Secret the manifests read, with a key token.
func TestSecretExample(t *testing.T) {
	e := mustEnv(t)
	if e.secret.Name != "llorch-api-token" || e.secret.Namespace != namespace || !secretHasKey(e.secret, "token") {
		t.Errorf("secret.example.yaml: %s/%s with keys %v", e.secret.Namespace, e.secret.Name, e.secret.StringData)
	}
}

// The API types are the tests' alone: no daemon links them.
func TestDaemonsLinkNoKubernetesTypes(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "../../cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || strings.HasPrefix(pkg, "github.com/prometheus-operator/") {
			t.Errorf("a command depends on %s", pkg)
		}
	}
}
