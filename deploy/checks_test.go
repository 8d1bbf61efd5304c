package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// externalSecrets are Secrets the manifests mount but users create (see
// docs/deploy.md): the xDS TLS components' certificate, and the admin API's
// bearer token (mounted optionally).
var externalSecrets = map[string]bool{"sluice-xds-tls": true, "sluice-admin-token": true}

// workload is a pod template with the object that owns it.
type workload struct {
	ID       string // "Deployment ns/name"
	NS       string
	Selector *metav1.LabelSelector
	Template corev1.PodTemplateSpec
}

func (r *rendered) workloads() []workload {
	var out []workload
	for id, d := range r.Deployments {
		out = append(out, workload{ID: "Deployment " + id, NS: d.Namespace, Selector: d.Spec.Selector, Template: d.Spec.Template})
	}
	for id, s := range r.StatefulSets {
		out = append(out, workload{ID: "StatefulSet " + id, NS: s.Namespace, Selector: s.Spec.Selector, Template: s.Spec.Template})
	}
	slices.SortFunc(out, func(a, b workload) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// allContainers are the init containers (including native sidecars) and
// the containers of a pod.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}

// TestManifestsAreConsistent checks, in every rendered kustomization, what
// the API server or the kubelet would only reject at apply or run time, and
// what Pod Security "restricted" (the label on our namespaces) admits.
func TestManifestsAreConsistent(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(strings.ReplaceAll(r.Name, "/", "_"), func(t *testing.T) {
			checkNamespaces(t, r)
			for _, w := range r.workloads() {
				checkWorkload(t, r, w)
			}
			checkServices(t, r)
			checkPDBs(t, r)
		})
	}
}

func checkNamespaces(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.Namespaces) != 1 {
		t.Errorf("%d Namespaces, want exactly 1", len(r.Namespaces))
	}
	for name, ns := range r.Namespaces {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("Namespace %s does not enforce the restricted Pod Security Standard", name)
		}
	}
	for _, obj := range r.Objects {
		kind, id, _ := strings.Cut(obj, " ")
		if kind == "Namespace" {
			continue
		}
		ns, _, _ := strings.Cut(id, "/")
		if r.Namespaces[ns] == nil {
			t.Errorf("%s is in namespace %q, which the kustomization does not create", obj, ns)
		}
	}
}

func checkWorkload(t *testing.T, r *rendered, w workload) {
	t.Helper()
	errorf := func(format string, args ...any) { t.Errorf("%s: %s", w.ID, fmt.Sprintf(format, args...)) }
	sel, err := metav1.LabelSelectorAsSelector(w.Selector)
	if err != nil || sel.Empty() {
		errorf("selector %v: empty or invalid (%v)", w.Selector, err)
	} else if !sel.Matches(labels.Set(w.Template.Labels)) {
		errorf("selector %v does not match the pod template's labels %v", w.Selector, w.Template.Labels)
	}
	spec := &w.Template.Spec
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		errorf("uses the host's network, PID or IPC namespace")
	}
	if sa := spec.ServiceAccountName; sa != "" && sa != "default" && r.ServiceAccounts[nsName(w.NS, sa)] == nil {
		errorf("ServiceAccount %q is not in the render", sa)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			if (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) && r.ConfigMaps[nsName(w.NS, v.ConfigMap.Name)] == nil {
				errorf("volume %s: ConfigMap %q is not in the render", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if r.Secrets[nsName(w.NS, v.Secret.SecretName)] == nil && !externalSecrets[v.Secret.SecretName] {
				errorf("volume %s: Secret %q is neither in the render nor a documented user-created Secret", v.Name, v.Secret.SecretName)
			}
		case v.EmptyDir != nil, v.Projected != nil, v.DownwardAPI != nil, v.PersistentVolumeClaim != nil, v.Ephemeral != nil, v.CSI != nil:
		default:
			errorf("volume %s: a volume type Pod Security restricted does not allow", v.Name)
		}
	}
	podSC := spec.SecurityContext
	if podSC == nil {
		podSC = &corev1.PodSecurityContext{}
	}
	for _, c := range allContainers(spec) {
		checkContainer(t, r, w, c, podSC, volumes)
	}
}

func checkContainer(t *testing.T, r *rendered, w workload, c *corev1.Container, podSC *corev1.PodSecurityContext, volumes map[string]corev1.Volume) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Errorf("%s: container %s: %s", w.ID, c.Name, fmt.Sprintf(format, args...))
	}
	// The image: set, and pinned to a tag or digest other than latest.
	name, tag, hasTag := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
	switch {
	case c.Image == "":
		errorf("no image")
	case !strings.Contains(c.Image, "@") && (!hasTag || tag == "" || tag == "latest"):
		errorf("image %q (%s) has no tag other than latest", c.Image, name)
	}
	// Pod Security "restricted", and our own read-only root.
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = podSC.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		errorf("runAsNonRoot is not true (container or pod)")
	}
	if (sc.RunAsUser != nil && *sc.RunAsUser == 0) || (sc.RunAsUser == nil && podSC.RunAsUser != nil && *podSC.RunAsUser == 0) {
		errorf("runs as uid 0")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errorf("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		errorf("privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		errorf("capabilities do not drop ALL")
	} else {
		for _, add := range sc.Capabilities.Add {
			if add != "NET_BIND_SERVICE" {
				errorf("adds capability %s", add)
			}
		}
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = podSC.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
		errorf("no RuntimeDefault (or Localhost) seccomp profile")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errorf("readOnlyRootFilesystem is not true")
	}
	// Resources: requests for scheduling, a memory limit against leaks.
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		errorf("no cpu and memory requests")
	}
	if c.Resources.Limits.Memory().IsZero() {
		errorf("no memory limit")
	}
	// Ports: no host ports; named ports that probes and Services use.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			errorf("host port %d", p.HostPort)
		}
		if p.Name != "" {
			ports[p.Name] = p.ContainerPort
		}
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil {
			continue
		}
		var port intstr.IntOrString
		switch {
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
		case p.GRPC != nil:
			continue
		default:
			errorf("%s probe: exec probes need a shell the distroless images lack", kind)
			continue
		}
		if port.Type == intstr.String {
			if _, ok := ports[port.StrVal]; !ok {
				errorf("%s probe: port %q is not a named port of the container", kind, port.StrVal)
			}
		}
	}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			errorf("mounts volume %q, which the pod does not have", m.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil && (ref.Optional == nil || !*ref.Optional) {
			cm := r.ConfigMaps[nsName(w.NS, ref.Name)]
			if cm == nil {
				errorf("env %s: ConfigMap %q is not in the render", e.Name, ref.Name)
			} else if _, ok := cm.Data[ref.Key]; !ok {
				errorf("env %s: ConfigMap %q has no key %q", e.Name, ref.Name, ref.Key)
			}
		}
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && r.Secrets[nsName(w.NS, ref.Name)] == nil && !externalSecrets[ref.Name] {
			errorf("env %s: Secret %q is not in the render", e.Name, ref.Name)
		}
	}
}

// podsFor lists the workloads in ns whose pods sel matches.
func (r *rendered) podsFor(ns string, sel labels.Selector) []workload {
	var out []workload
	for _, w := range r.workloads() {
		if w.NS == ns && sel.Matches(labels.Set(w.Template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	for id, svc := range r.Services {
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s has no selector", id)
			continue
		}
		pods := r.podsFor(svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
		if len(pods) == 0 {
			t.Errorf("Service %s: selector %v matches no pod template", id, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == "" {
				t.Errorf("Service %s: port %d has no name", id, p.Port)
			}
			if p.TargetPort.Type != intstr.String {
				continue
			}
			for _, w := range pods {
				if containerPort(&w.Template.Spec, p.TargetPort.StrVal) == 0 {
					t.Errorf("Service %s: port %s targets %q, which %s does not name", id, p.Name, p.TargetPort.StrVal, w.ID)
				}
			}
		}
	}
}

// containerPort is the number of the named port in a pod, 0 if none.
func containerPort(spec *corev1.PodSpec, name string) int32 {
	for _, c := range allContainers(spec) {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func checkPDBs(t *testing.T, r *rendered) {
	t.Helper()
	for id, pdb := range r.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PodDisruptionBudget %s: empty or invalid selector (%v)", id, err)
			continue
		}
		if len(r.podsFor(pdb.Namespace, sel)) == 0 {
			t.Errorf("PodDisruptionBudget %s: selector matches no pod template", id)
		}
	}
}
