package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// listenerPort returns a loopback port for an Envoy listener that must be
// named before Envoy binds it. Unlike freePort it picks from below the
// kernel's ephemeral range, so the port cannot be taken meanwhile as the
// local port of some outgoing connection (Envoy's own, say).
func listenerPort(t *testing.T) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo <= 11000 {
		return freePort(t)
	}
	for range 100 {
		port := 10000 + rand.IntN(lo-11000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port
	}
	return freePort(t)
}

// policyDir writes content as the only policy file of a new directory.
func policyDir(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.yaml"), content)
	return dir
}

// servicePolicy renders a ServicePolicy document; spec is YAML indented by
// two spaces under "spec:".
func servicePolicy(service, spec string) string {
	return fmt.Sprintf("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: %s}\nspec:\n%s\n", service, spec)
}

// failingBackend is a gRPC test server whose every call fails with
// codes.Unavailable, counting the calls it got.
type failingBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name  string
	calls atomic.Int64
}

func (b *failingBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	b.calls.Add(1)
	return nil, status.Errorf(codes.Unavailable, "%s always fails", b.name)
}

// startMixedGRPCBackends starts n gRPC servers; the one at index bad always
// fails. It returns every address and the failing server.
func startMixedGRPCBackends(t *testing.T, n, bad int) ([]string, *failingBackend) {
	t.Helper()
	good := startGRPCBackends(t, n-1)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &failingBackend{name: "failing"}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, fb)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	var addrs []string
	for i, j := 0, 0; i < n; i++ {
		if i == bad {
			addrs = append(addrs, lis.Addr().String())
			continue
		}
		addrs = append(addrs, good[j].addr)
		j++
	}
	return addrs, fb
}

// callOnce makes one call without waiting for the channel to be ready.
func callOnce(client testgrpc.TestServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	return resp.GetHostname(), err
}

// httpBackend is an HTTP server with a behaviour, counting its requests.
type httpBackend struct {
	name string
	addr string
	hits atomic.Int64
}

// startHTTPBackend serves handler (after counting the request) on a
// loopback port.
func startHTTPBackend(t *testing.T, name string, handler http.HandlerFunc) *httpBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{name: name, addr: lis.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		handler(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// answerName answers 200 with the backend's name.
func answerName(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }
}

// answer503 always answers 503.
func answer503(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "failing", http.StatusServiceUnavailable)
}

// answerAfter answers 200 after the duration in the "sleep" query
// parameter (or when the request is cancelled).
func answerAfter(w http.ResponseWriter, r *http.Request) {
	d, _ := time.ParseDuration(r.URL.Query().Get("sleep"))
	select {
	case <-time.After(d):
	case <-r.Context().Done():
		return
	}
	_, _ = io.WriteString(w, "slow")
}

// request sends one request to addr with the given Host and headers.
func request(addr, method, host, path string, header map[string]string) (int, http.Header, string, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, "", err
	}
	req.Host = host
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body), err
}

// statusCounts sends n requests and counts the answers by status code.
func statusCounts(t *testing.T, addr, method, host, path string, header map[string]string, n int) map[int]int {
	t.Helper()
	out := map[int]int{}
	for range n {
		code, _, _, err := request(addr, method, host, path, header)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		out[code]++
	}
	return out
}

// stat reads one counter or gauge from Envoy's admin /stats; a stat Envoy
// does not have reads as 0, so callers compare with a value they saw
// non-zero or moving.
func (e *envoyProc) stat(t *testing.T, name string) int64 {
	t.Helper()
	body := string(e.admin(t, "/stats?filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$")))
	for _, line := range strings.Split(body, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && k == name {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("stat %s: %q", name, line)
			}
			return n
		}
	}
	return 0
}

// healthFlags returns Envoy's health flags for one host of a cluster from
// admin /clusters, e.g. "/failed_outlier_check" or "healthy".
func (e *envoyProc) healthFlags(t *testing.T, cluster, addr string) string {
	t.Helper()
	prefix := cluster + "::" + addr + "::health_flags::"
	for _, line := range strings.Split(string(e.admin(t, "/clusters")), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest
		}
	}
	return ""
}

// waitRoutes waits until Envoy's outbound route configuration has a
// route named name (so the policy-derived config is in place).
func (e *envoyProc) waitRoutes(t *testing.T, names ...string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("envoy routes %v", names), func() error {
		dump := string(e.admin(t, "/config_dump?resource=dynamic_route_configs"))
		for _, n := range names {
			if !strings.Contains(dump, strconv.Quote(n)) {
				return fmt.Errorf("no route %q in envoy's config dump yet", n)
			}
		}
		return nil
	})
}

// noNACKs checks that sluice saw every connected client acknowledge what it
// was sent (and never NACK anything), for at least want clients.
func (s *sluice) noNACKs(t *testing.T, want int) {
	t.Helper()
	s.accepted(t, want, "")
}

// proxyAcks is what /debug/proxies says of one client's types.
type proxyAcks struct {
	NodeID string `json:"node_id"`
	Types  map[string]struct {
		Sent, Acked string
		LastNack    *struct{ Error string } `json:"last_nack"`
	} `json:"types"`
}

// accepted waits until at least want clients (only the one with node id
// node, when not empty) are connected and each has acknowledged every
// type it was sent; any NACK fails the test.
func (s *sluice) accepted(t *testing.T, want int, node string) {
	t.Helper()
	eventually(t, 30*time.Second, "every client to ack its config", func() error {
		var proxies []proxyAcks
		s.adminJSON(t, "/debug/proxies", &proxies)
		proxies = slices.DeleteFunc(proxies, func(p proxyAcks) bool { return node != "" && p.NodeID != node })
		if len(proxies) < want {
			return fmt.Errorf("%d clients connected, want %d", len(proxies), want)
		}
		for _, p := range proxies {
			for typ, st := range p.Types {
				if st.LastNack != nil {
					b, _ := json.Marshal(st.LastNack)
					t.Fatalf("%s NACKed %s: %s", p.NodeID, typ, b)
				}
			}
		}
		for _, p := range proxies {
			if len(p.Types) < 4 {
				return fmt.Errorf("%s: sent only %d types", p.NodeID, len(p.Types))
			}
			for typ, st := range p.Types {
				if st.Sent == "" || st.Sent != st.Acked {
					return fmt.Errorf("%s %s: sent %q, acked %q", p.NodeID, typ, st.Sent, st.Acked)
				}
			}
		}
		return nil
	})
}
