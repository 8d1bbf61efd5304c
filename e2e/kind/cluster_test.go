//go:build kind

package kind

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Ports and names of the demo overlay.
const (
	gatewayDeployment = "demo-gateway"
	// envoyOutboundPort is where every Envoy's outbound listener listens
	// (sluice bootstrap --outbound-port): on 0.0.0.0 for the gateway, on
	// loopback for the sidecars.
	envoyOutboundPort = 15001
	envoyAdminPort    = 15000
	// inboundListenerPort is a demo sidecar's inbound listener
	// (--inbound-listener-port), fronting the app on appPort. It is the
	// port the demo service registers, so traffic to it goes through the
	// sidecar.
	inboundListenerPort = 15006
	appPort             = 8080
	sluiceAdminPort     = 18080
)

// namespace is where the demo runs: $SLUICE_KIND_NAMESPACE or sluice-demo.
var namespace = "sluice-demo"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if ns := os.Getenv("SLUICE_KIND_NAMESPACE"); ns != "" {
		namespace = ns
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/kind: kubectl is not on PATH; run `make e2e-kind`, or point kubectl at a cluster running deploy/overlays/demo")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Everything of the demo must be available before any test starts.
	if out, err := kubectlCtx(ctx, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=4m"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/kind: the demo in namespace %s is not available: %v\n%s\n", namespace, err, out)
		return 1
	}
	return m.Run()
}

// kubectlCtx runs kubectl in the demo's namespace and returns its stdout
// (stderr is folded into the error).
func kubectlCtx(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"-n", namespace}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// kubectl runs kubectl with a one-minute deadline (longer with a --timeout
// argument, which the caller sizes) and fails the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := kubectlCtx(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pod is what the tests need of a pod.
type pod struct {
	Name  string
	IP    string
	Ready bool
}

// pods lists the ready, not terminating pods with label
// app.kubernetes.io/name=app, sorted by name.
func pods(t *testing.T, app string) []pod {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	out := kubectl(t, "get", "pods", "-l", "app.kubernetes.io/name="+app, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get pods: %v", err)
	}
	var ps []pod
	for _, it := range list.Items {
		if it.Metadata.DeletionTimestamp != nil {
			continue
		}
		p := pod{Name: it.Metadata.Name, IP: it.Status.PodIP}
		for _, c := range it.Status.Conditions {
			p.Ready = p.Ready || (c.Type == "Ready" && c.Status == "True")
		}
		if p.Ready {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b pod) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

func podNames(ps []pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) ->`)

// portForward runs `kubectl port-forward TARGET :PORT` (TARGET is pod/NAME,
// deploy/NAME or svc/NAME) until the test ends and returns the local
// address. kubectl picks one pod of a Deployment or Service; the forward
// ends if that pod goes away.
func portForward(t *testing.T, target string, port int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kubectl", "-n", namespace, "port-forward", target, fmt.Sprintf(":%d", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubectl port-forward %s: %v", target, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() { // keep draining: kubectl logs every connection
			if m := forwarding.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- "127.0.0.1:" + m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case a := <-addr:
		return a
	case <-done:
		t.Fatalf("kubectl port-forward %s :%d exited: %s", target, port, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward %s :%d: no forwarding after 30s: %s", target, port, stderr.String())
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var client = &http.Client{Timeout: 10 * time.Second}

// reply is one HTTP answer.
type reply struct {
	Code   int
	Pod    string // X-Demo-Pod: which demo instance answered
	Header http.Header
	Body   string
}

// send makes one request to addr with the given Host (the service name an
// Envoy routes by).
func send(method, addr, host, path string) (reply, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return reply{}, err
	}
	return reply{Code: resp.StatusCode, Pod: resp.Header.Get("X-Demo-Pod"), Header: resp.Header, Body: string(body)}, nil
}

// burst sends n GETs with workers in parallel and returns every reply (a
// transport error counts as code 0).
func burst(addr, host, path string, n, workers int) []reply {
	out := make([]reply, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				r, err := send(http.MethodGet, addr, host, path)
				if err != nil {
					r = reply{Body: err.Error()}
				}
				out[i] = r
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out
}

// codes counts replies by status code.
func codes(rs []reply) map[int]int {
	m := map[int]int{}
	for _, r := range rs {
		m[r.Code]++
	}
	return m
}

// answeredBy counts replies by the pod that answered.
func answeredBy(rs []reply) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.Pod != "" {
			m[r.Pod]++
		}
	}
	return m
}

// eventually calls check until it returns nil, failing the test with the
// last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// getJSON fetches http://addr/path into v.
// demoAdminToken is the bearer token of the demo overlay's admin API
// (deploy/overlays/demo, secretGenerator).
const demoAdminToken = "sluice-demo-admin-token"

// adminGet GETs http://addr/path with the demo's admin token.
func adminGet(addr, path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+demoAdminToken)
	return client.Do(req)
}

func getJSON(addr, path string, v any) error {
	resp, err := adminGet(addr, path)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// getText fetches http://addr/path as text.
func getText(addr, path string) (string, error) {
	resp, err := adminGet(addr, path)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), err
}

// post sends POST http://addr/path (the demo app's knobs).
func post(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := client.Post("http://"+addr+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
}

// catalogEndpoints are the endpoints ("ip:port" → health) of service in a
// sluice replica's /debug/catalog.
func catalogEndpoints(admin, service string) (map[string]string, error) {
	var cat struct {
		Catalog struct {
			Services []struct {
				Name      string `json:"name"`
				Endpoints []struct {
					Address string `json:"address"`
					Port    int    `json:"port"`
					Health  string `json:"health"`
				} `json:"endpoints"`
			} `json:"services"`
		} `json:"catalog"`
	}
	if err := getJSON(admin, "/debug/catalog", &cat); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range cat.Catalog.Services {
		if s.Name != service {
			continue
		}
		for _, e := range s.Endpoints {
			out[fmt.Sprintf("%s:%d", e.Address, e.Port)] = e.Health
		}
	}
	return out, nil
}

// wantEndpoints says whether the catalog holds exactly the pods' IPs with
// the port they register (the sidecar's inbound listener), all healthy.
func wantEndpoints(got map[string]string, ps []pod) error {
	want := map[string]bool{}
	for _, p := range ps {
		want[fmt.Sprintf("%s:%d", p.IP, inboundListenerPort)] = true
	}
	for ep, h := range got {
		if !want[ep] {
			return fmt.Errorf("catalog has %s (%s), not one of the pods %v", ep, h, podNames(ps))
		}
		if h != "healthy" {
			return fmt.Errorf("catalog has %s as %s", ep, h)
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("catalog has %d endpoints %v, want %d", len(got), got, len(want))
	}
	return nil
}

// envoyStat reads one counter or gauge from an Envoy admin API.
func envoyStat(admin, name string) (int64, error) {
	text, err := getText(admin, "/stats?filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			var n int64
			_, err := fmt.Sscan(v, &n)
			return n, err
		}
	}
	return 0, errors.New("no stat " + name)
}
