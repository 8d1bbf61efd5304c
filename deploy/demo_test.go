package deploy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// bootstrapRun is one init container that runs `sluice bootstrap`.
type bootstrapRun struct {
	Workload  workload
	Container *corev1.Container
	// Flags are the bootstrap flags, --name → value.
	Flags map[string]string
}

func bootstrapRuns(t *testing.T, r *rendered) []bootstrapRun {
	t.Helper()
	var out []bootstrapRun
	for _, w := range r.workloads() {
		for i := range w.Template.Spec.InitContainers {
			c := &w.Template.Spec.InitContainers[i]
			if repo, _, _ := strings.Cut(c.Image, ":"); repo != sluiceImage || len(c.Args) == 0 || c.Args[0] != "bootstrap" {
				continue
			}
			out = append(out, bootstrapRun{Workload: w, Container: c, Flags: parseFlags(t, c.Args[1:])})
		}
	}
	return out
}

// parseFlags reads --name=value, --name value and -o value.
func parseFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !hasValue {
			if i+1 >= len(args) {
				t.Fatalf("flag %s has no value in %v", args[i], args)
			}
			i++
			value = args[i]
		}
		if name == "o" {
			name = "output"
		}
		flags[name] = value
	}
	return flags
}

// expandEnv replaces $(VAR) the way the kubelet does, with sample values
// for downward-API variables.
func expandEnv(c *corev1.Container, s string) string {
	vals := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vals[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			vals[e.Name] = "sample-" + strings.ReplaceAll(e.ValueFrom.FieldRef.FieldPath, ".", "-")
		}
	}
	return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := vals[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// TestEnvoyBootstrapsGenerate runs every bootstrap init container's command
// with the real sluice binary (which validates the bootstrap proto with
// ValidateAll before writing it; see also TestBootstrapIsValid in
// cmd/sluice), checks that an Envoy container of the same pod reads the
// file it writes, that --xds-addr is the sluice Service, and, when a real
// Envoy is at $SLUICE_ENVOY (make deps installs one), that Envoy itself
// accepts the bootstrap (envoy --mode validate).
func TestEnvoyBootstrapsGenerate(t *testing.T) {
	bin := sluiceBinary(t)
	envoyBin := os.Getenv("SLUICE_ENVOY")
	if fi, err := os.Stat(envoyBin); envoyBin == "" || err != nil || fi.IsDir() {
		t.Logf("no Envoy at SLUICE_ENVOY=%q: bootstraps are checked by sluice's ValidateAll only (run make deps for envoy --mode validate)", envoyBin)
		envoyBin = ""
	}
	total := 0
	for _, r := range renderAll(t) {
		for _, b := range bootstrapRuns(t, r) {
			total++
			id := r.Name + ": " + b.Workload.ID
			out := b.Flags["output"]
			if !strings.HasPrefix(out, "/") {
				t.Errorf("%s: bootstrap -o %q: want an absolute path in a shared volume", id, out)
				continue
			}
			checkBootstrapShared(t, id, b, out)
			checkServiceAddr(t, r, b.Workload.NS, b.Flags["xds-addr"], id+": --xds-addr")

			file := filepath.Join(t.TempDir(), "bootstrap.yaml")
			args := make([]string, 0, len(b.Container.Args)+2)
			for _, a := range b.Container.Args {
				args = append(args, expandEnv(b.Container, a))
			}
			args = append(args, "-o", file) // the last -o wins
			if msg, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
				t.Errorf("%s: sluice %s: %v\n%s", id, strings.Join(args, " "), err, msg)
				continue
			}
			checkBootstrapNode(t, id, file, expandEnv(b.Container, b.Flags["node-id"]), b.Flags["service"])
			if envoyBin != "" {
				if msg, err := exec.Command(envoyBin, "--mode", "validate", "-c", file, "--disable-hot-restart", "--log-level", "error").CombinedOutput(); err != nil {
					t.Errorf("%s: envoy --mode validate rejects the bootstrap: %v\n%s", id, err, msg)
				}
			}
		}
	}
	if total == 0 {
		t.Fatal("no bootstrap init container in any kustomization")
	}
}

// checkBootstrapShared: the bootstrap lands in a volume that an Envoy
// container of the pod mounts, at the path it reads (-c).
func checkBootstrapShared(t *testing.T, id string, b bootstrapRun, file string) {
	t.Helper()
	volumeAt := func(c *corev1.Container, p string) string {
		for _, m := range c.VolumeMounts {
			if rel, err := filepath.Rel(m.MountPath, p); err == nil && !strings.HasPrefix(rel, "..") {
				return m.Name
			}
		}
		return ""
	}
	vol := volumeAt(b.Container, file)
	if vol == "" {
		t.Errorf("%s: bootstrap writes %s outside every mounted volume", id, file)
		return
	}
	for _, c := range allContainers(&b.Workload.Template.Spec) {
		for i, a := range c.Args {
			if a == "-c" && i+1 < len(c.Args) && c.Args[i+1] == file && volumeAt(c, file) == vol {
				return
			}
		}
	}
	t.Errorf("%s: no container runs Envoy with -c %s from volume %s", id, file, vol)
}

func checkBootstrapNode(t *testing.T, id, file, nodeID, service string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		Node struct {
			ID       string            `json:"id"`
			Cluster  string            `json:"cluster"`
			Metadata map[string]string `json:"metadata"`
		} `json:"node"`
	}
	if err := yaml.Unmarshal(b, &boot); err != nil {
		t.Fatalf("%s: bootstrap: %v", id, err)
	}
	if boot.Node.ID != nodeID || boot.Node.Cluster != service {
		t.Errorf("%s: bootstrap node id=%q cluster=%q, want %q %q", id, boot.Node.ID, boot.Node.Cluster, nodeID, service)
	}
}

// checkServiceAddr: hostport ("name[.ns[.svc[.cluster.local]]]:port",
// optionally with an http:// scheme) names a Service of the render and one
// of its ports.
func checkServiceAddr(t *testing.T, r *rendered, ns, hostport, what string) {
	t.Helper()
	if err := resolveService(r, ns, hostport); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func resolveService(r *rendered, ns, hostport string) error {
	hostport = strings.TrimPrefix(strings.TrimPrefix(hostport, "http://"), "https://")
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hostport)
	}
	parts := strings.Split(host, ".")
	name, svcNS := parts[0], ns
	if len(parts) > 1 {
		svcNS = parts[1]
	}
	if len(parts) > 2 && strings.Join(parts[2:], ".") != "svc" && strings.Join(parts[2:], ".") != "svc.cluster.local" {
		return fmt.Errorf("%q is not a Service name of the cluster", host)
	}
	svc := r.Services[nsName(svcNS, name)]
	if svc == nil {
		return fmt.Errorf("%q: no Service %s/%s in the render", hostport, svcNS, name)
	}
	port, _ := strconv.Atoi(portStr)
	for _, p := range svc.Spec.Ports {
		if int(p.Port) == port {
			return nil
		}
	}
	return fmt.Errorf("%q: Service %s/%s has no port %d", hostport, svcNS, name, port)
}

// TestDemoOverlay checks the demo's shape and that every address in it (in
// sluice's config, the demo services' environment and the tracing policy)
// is a Service of the demo, so nothing points outside the overlay.
func TestDemoOverlay(t *testing.T) {
	r := renderOne(t, "overlays/demo")
	const ns = "sluice-demo"
	if r.Namespaces[ns] == nil {
		t.Fatalf("the demo is not in namespace %s", ns)
	}
	s := sluiceOf(t, r)
	for _, key := range []string{"etcd-endpoints", "consul-addr", "otel-endpoint"} {
		var addrs []string
		switch v := s.Config[key].(type) {
		case string:
			addrs = []string{v}
		case []any:
			for _, a := range v {
				addrs = append(addrs, fmt.Sprint(a))
			}
		default:
			t.Errorf("sluice config %s = %v: want the demo's own service", key, v)
		}
		for _, a := range addrs {
			checkServiceAddr(t, r, ns, a, "sluice config "+key)
		}
	}

	demo := r.Deployments[nsName(ns, "demo")]
	if demo == nil || demo.Spec.Replicas == nil || *demo.Spec.Replicas != 3 {
		t.Fatalf("demo Deployment missing or not 3 replicas")
	}
	for _, name := range []string{"demo", "demo-consul"} {
		d := r.Deployments[nsName(ns, name)]
		if d == nil {
			t.Fatalf("no Deployment %s", name)
		}
		env := map[string]string{}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
		if env["SERVICE_NAME"] != name {
			t.Errorf("%s registers as %q", name, env["SERVICE_NAME"])
		}
		checkRegisteredPort(t, r, name, env)
		switch env["REGISTRY"] {
		case "etcd":
			for _, ep := range strings.Split(env["ETCD_ENDPOINTS"], ",") {
				checkServiceAddr(t, r, ns, ep, name+" ETCD_ENDPOINTS")
			}
		case "consul":
			checkServiceAddr(t, r, ns, env["CONSUL_ADDR"], name+" CONSUL_ADDR")
		default:
			t.Errorf("%s: REGISTRY=%q, want etcd or consul", name, env["REGISTRY"])
		}
	}
	// The demo service's sidecar is a native sidecar, bootstrapped as demo.
	var sidecar bool
	for _, c := range demo.Spec.Template.Spec.InitContainers {
		sidecar = sidecar || (c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways && strings.HasPrefix(c.Image, "envoyproxy/envoy"))
	}
	if !sidecar {
		t.Errorf("the demo pods have no Envoy native sidecar")
	}
	roles := map[string]string{}
	for _, b := range bootstrapRuns(t, r) {
		roles[b.Flags["service"]] = b.Flags["role"]
	}
	if roles["demo"] != "sidecar" || roles["demo-gateway"] != "gateway" {
		t.Errorf("bootstrap roles %v, want demo=sidecar, demo-gateway=gateway", roles)
	}

	// The tracing collector of the mesh policy is the demo's collector.
	var collectors int
	for name, text := range s.Policies {
		for _, doc := range strings.Split(text, "\n---") {
			var p struct {
				Spec struct {
					Tracing struct {
						Collector string `json:"collector"`
					} `json:"tracing"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(doc), &p); err != nil {
				t.Fatalf("policy %s: %v", name, err)
			}
			if c := p.Spec.Tracing.Collector; c != "" {
				collectors++
				checkServiceAddr(t, r, ns, c, "policy "+path.Base(name)+" tracing collector")
			}
		}
	}
	if collectors != 1 {
		t.Errorf("%d tracing collectors in the demo policies, want 1", collectors)
	}
}

// defaultInboundListenerPort is sluice bootstrap's default for
// --inbound-listener-port.
const defaultInboundListenerPort = "15006"

// checkRegisteredPort: a demo service registers the port its callers must
// use: its sidecar's inbound listener when it has a sidecar (which must
// front the app's listen port), else the app's own port.
func checkRegisteredPort(t *testing.T, r *rendered, name string, env map[string]string) {
	t.Helper()
	listen := env["LISTEN_ADDR"]
	if listen == "" {
		listen = ":8080"
	}
	_, listenPort, err := net.SplitHostPort(listen)
	if err != nil {
		t.Errorf("%s: LISTEN_ADDR %q: %v", name, listen, err)
		return
	}
	advertised := env["ADVERTISE_PORT"]
	if advertised == "" {
		advertised = listenPort
	}
	var boot *bootstrapRun
	for _, b := range bootstrapRuns(t, r) {
		if b.Workload.ID == "Deployment sluice-demo/"+name {
			boot = &b
		}
	}
	if boot == nil {
		if advertised != listenPort {
			t.Errorf("%s has no sidecar but registers port %s, not its listen port %s", name, advertised, listenPort)
		}
		return
	}
	if boot.Flags["inbound-port"] != listenPort {
		t.Errorf("%s: the sidecar fronts port %s, the app listens on %s", name, boot.Flags["inbound-port"], listenPort)
	}
	inbound := boot.Flags["inbound-listener-port"]
	if inbound == "" {
		inbound = defaultInboundListenerPort
	}
	if advertised != inbound {
		t.Errorf("%s registers port %s, but its sidecar's inbound listener is on %s: callers would bypass the sidecar", name, advertised, inbound)
	}
}
