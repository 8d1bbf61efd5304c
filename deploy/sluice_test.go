package deploy

import (
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// sluiceImage is the repository of sluice's image in every kustomization.
const sluiceImage = "ghcr.io/sluice-mesh/sluice"

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binPath string
	binDir  string
	binErr  error
)

// sluiceBinary builds ../cmd/sluice once (or uses $SLUICE_BIN): the checks
// run the real binary the images ship.
func sluiceBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("SLUICE_BIN"); p != "" {
			binPath = p
			return
		}
		if binDir, binErr = os.MkdirTemp("", "sluice-deploy-check-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "sluice")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/sluice")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = &buildError{err: err, out: string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("building sluice: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// sluiceSetup is what the sluice Deployment of one render is configured
// with, found by following args → mounts → volumes → ConfigMaps.
type sluiceSetup struct {
	Deployment *appsv1.Deployment
	Container  *corev1.Container
	// Config is the parsed config file; ConfigFile its text.
	Config     map[string]any
	ConfigFile string
	// Policies are the policy files (file name → text).
	Policies map[string]string
}

// mountedConfigMap finds the ConfigMap mounted at the directory of file in
// container c, and the key that is file's name.
func mountedConfigMap(t *testing.T, r *rendered, d *appsv1.Deployment, c *corev1.Container, dir string) *corev1.ConfigMap {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != path.Clean(dir) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return r.ConfigMaps[nsName(d.Namespace, v.ConfigMap.Name)]
			}
		}
	}
	t.Errorf("%s: nothing mounts a ConfigMap at %s in container %s", r.Name, dir, c.Name)
	return nil
}

func sluiceOf(t *testing.T, r *rendered) *sluiceSetup {
	t.Helper()
	var d *appsv1.Deployment
	for _, dep := range r.Deployments {
		if dep.Name == "sluice" {
			d = dep
		}
	}
	if d == nil {
		t.Fatalf("%s: no sluice Deployment", r.Name)
	}
	s := &sluiceSetup{Deployment: d, Policies: map[string]string{}}
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "sluice" {
			s.Container = c
		}
	}
	if s.Container == nil {
		t.Fatalf("%s: the sluice Deployment has no container named sluice", r.Name)
	}
	args := s.Container.Args
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("%s: sluice args %v do not run serve", r.Name, args)
	}
	var cfgPath string
	for _, a := range args[1:] {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			cfgPath = v
		}
	}
	if cfgPath == "" {
		t.Fatalf("%s: sluice args %v give no --config=FILE", r.Name, args)
	}
	cm := mountedConfigMap(t, r, d, s.Container, path.Dir(cfgPath))
	if cm == nil {
		t.FailNow()
	}
	if cm.Name == "sluice-config" {
		t.Errorf("%s: ConfigMap %s has no content-hash suffix: a config change would not roll the pods", r.Name, cm.Name)
	}
	text, ok := cm.Data[path.Base(cfgPath)]
	if !ok {
		t.Fatalf("%s: ConfigMap %s has no key %s for --config=%s", r.Name, cm.Name, path.Base(cfgPath), cfgPath)
	}
	s.ConfigFile = text
	if err := yaml.Unmarshal([]byte(text), &s.Config); err != nil {
		t.Fatalf("%s: config file: %v", r.Name, err)
	}
	policyDir, _ := s.Config["policy-dir"].(string)
	if policyDir == "" {
		t.Fatalf("%s: the config file sets no policy-dir", r.Name)
	}
	pcm := mountedConfigMap(t, r, d, s.Container, policyDir)
	if pcm == nil {
		t.FailNow()
	}
	if pcm.Name != "sluice-policies" {
		t.Errorf("%s: policies ConfigMap is %s: a content-hash name would restart sluice on every policy change instead of hot-reloading", r.Name, pcm.Name)
	}
	for k, v := range pcm.Data {
		s.Policies[k] = v
	}
	if len(s.Policies) == 0 {
		t.Errorf("%s: the policies ConfigMap is empty", r.Name)
	}
	return s
}

// TestSluiceDeployment checks what running sluice on Kubernetes relies on,
// in every kustomization: 2 replicas that spread and roll one at a time,
// probes on /readyz and /healthz, servers on 0.0.0.0 at the container
// ports, a PodDisruptionBudget, the Service and Prometheus annotations.
func TestSluiceDeployment(t *testing.T) {
	for _, r := range renderAll(t) {
		t.Run(strings.ReplaceAll(r.Name, "/", "_"), func(t *testing.T) {
			s := sluiceOf(t, r)
			d, c := s.Deployment, s.Container
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
				t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
			}
			if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
				t.Errorf("rolling update may take a replica down before its successor is ready: %+v", d.Spec.Strategy)
			}
			if repo, _, _ := strings.Cut(c.Image, ":"); repo != sluiceImage {
				t.Errorf("image %q, want %s:TAG", c.Image, sluiceImage)
			}
			pod := &d.Spec.Template.Spec
			spread := false
			for _, tsc := range pod.TopologySpreadConstraints {
				spread = spread || tsc.TopologyKey == "kubernetes.io/hostname"
			}
			if !spread && (pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil) {
				t.Errorf("replicas are neither spread over nodes nor anti-affine")
			}
			xdsPort, adminPort := containerPort(pod, "xds"), containerPort(pod, "admin")
			if xdsPort == 0 || adminPort == 0 {
				t.Fatalf("container ports xds=%d admin=%d, want both named", xdsPort, adminPort)
			}
			for key, port := range map[string]int32{"xds-addr": xdsPort, "admin-addr": adminPort} {
				if got, want := s.Config[key], net.JoinHostPort("0.0.0.0", strconv.Itoa(int(port))); got != want {
					t.Errorf("config %s = %v, want %s (reachable from other pods, at the container port)", key, got, want)
				}
			}
			checkProbe(t, "readiness", c.ReadinessProbe, "/readyz")
			checkProbe(t, "liveness", c.LivenessProbe, "/healthz")
			ann := d.Spec.Template.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(int(adminPort)) || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("Prometheus annotations %v do not point at the admin port's /metrics", ann)
			}
			if c.Resources.Limits.Cpu().IsZero() {
				t.Errorf("no cpu limit")
			}

			pdb := r.PDBs[nsName(d.Namespace, "sluice")]
			if pdb == nil {
				t.Fatalf("no PodDisruptionBudget sluice")
			}
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
				t.Errorf("PodDisruptionBudget minAvailable = %v, want 1", pdb.Spec.MinAvailable)
			}
			svc := r.Services[nsName(d.Namespace, "sluice")]
			if svc == nil {
				t.Fatalf("no Service sluice")
			}
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("Service sluice does not select the sluice pods")
			}
			want := map[int32]string{18000: "xds", 18080: "admin"}
			for _, p := range svc.Spec.Ports {
				if want[p.Port] == p.TargetPort.StrVal {
					delete(want, p.Port)
				}
			}
			if len(want) != 0 {
				t.Errorf("Service sluice lacks ports %v (port → target)", want)
			}
		})
	}
}

func checkProbe(t *testing.T, kind string, p *corev1.Probe, wantPath string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("no HTTP %s probe", kind)
		return
	}
	if p.HTTPGet.Path != wantPath || p.HTTPGet.Port != intstr.FromString("admin") {
		t.Errorf("%s probe GET %s on port %s, want %s on admin", kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath)
	}
}

// TestXDSTLSComponents: the components point --xds-tls-* (as SLUICE_*
// variables) at the keys of the Secret they mount.
func TestXDSTLSComponents(t *testing.T) {
	want := map[string]map[string]string{
		"components/xds-tls":  {"SLUICE_XDS_TLS_CERT": "tls.crt", "SLUICE_XDS_TLS_KEY": "tls.key"},
		"components/xds-mtls": {"SLUICE_XDS_TLS_CERT": "tls.crt", "SLUICE_XDS_TLS_KEY": "tls.key", "SLUICE_XDS_TLS_CLIENT_CA": "ca.crt"},
		"base":                {},
		"overlays/demo":       {},
	}
	for _, r := range renderAll(t) {
		s := sluiceOf(t, r)
		mounts := map[string]string{} // mount path → Secret
		for _, m := range s.Container.VolumeMounts {
			for _, v := range s.Deployment.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					mounts[m.MountPath] = v.Secret.SecretName
				}
			}
		}
		got := map[string]string{}
		for _, e := range s.Container.Env {
			if !strings.HasPrefix(e.Name, "SLUICE_XDS_TLS") {
				continue
			}
			if secret := mounts[path.Dir(e.Value)]; secret != "sluice-xds-tls" {
				t.Errorf("%s: %s=%s is not in the mounted Secret sluice-xds-tls", r.Name, e.Name, e.Value)
			}
			got[e.Name] = path.Base(e.Value)
		}
		w, ok := want[r.Name]
		if !ok {
			t.Errorf("%s: no expectation; add one", r.Name)
			continue
		}
		if len(got) != len(w) {
			t.Errorf("%s: TLS settings %v, want %v", r.Name, got, w)
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%s: %s names key %q, want %q", r.Name, k, got[k], v)
			}
		}
	}
}

// serveFlags are the flags `sluice serve` accepts, from its --help.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(sluiceBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("sluice serve --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["xds-addr"] || !flags["config"] {
		t.Fatalf("could not read the flags from sluice serve --help:\n%s", out)
	}
	return flags
}

// TestSluiceAcceptsItsConfig: every key of every config file is a flag of
// `sluice serve` (sluice refuses to start on an unknown key).
func TestSluiceAcceptsItsConfig(t *testing.T) {
	flags := serveFlags(t)
	for _, r := range renderAll(t) {
		s := sluiceOf(t, r)
		for k := range s.Config {
			if !flags[k] {
				t.Errorf("%s: config key %q is not a flag of sluice serve", r.Name, k)
			}
		}
	}
}

// TestPoliciesValidate runs `sluice validate` on the policy files each
// kustomization deploys, exactly as they land in the pod.
func TestPoliciesValidate(t *testing.T) {
	bin := sluiceBinary(t)
	for _, r := range renderAll(t) {
		s := sluiceOf(t, r)
		dir := t.TempDir()
		for name, text := range s.Policies {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command(bin, "validate", dir).CombinedOutput(); err != nil {
			t.Errorf("%s: sluice validate on the policies ConfigMap: %v\n%s", r.Name, err, out)
		}
	}
}
