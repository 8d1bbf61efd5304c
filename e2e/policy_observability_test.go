package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// startInboundEnvoy starts a sidecar of service whose application listens
// on app; it returns the Envoy and its inbound listener's address.
func startInboundEnvoy(t *testing.T, s *sluice, service, nodeID, app string) (*envoyProc, string) {
	t.Helper()
	_, appPort, _ := net.SplitHostPort(app)
	inbound := strconv.Itoa(listenerPort(t))
	e := startEnvoy(t, s, service, nodeID, "--inbound-port", appPort,
		"--inbound-listener-address", "127.0.0.1", "--inbound-listener-port", inbound)
	return e, net.JoinHostPort("127.0.0.1", inbound)
}

// waitBucketFull waits until a bucket of the given size is full again, by
// probing at half a token per second of its rate (each probe takes a
// token) until x-ratelimit-remaining says the bucket held burst tokens.
func waitBucketFull(t *testing.T, addr, path string, rps, burst int) {
	t.Helper()
	interval := 2 * time.Second / time.Duration(rps)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, hdr, _, err := request(addr, http.MethodGet, "user-service", path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code == http.StatusOK && hdr.Get("X-Ratelimit-Remaining") == strconv.Itoa(burst-1) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket of %s never full again: last status %d, x-ratelimit-remaining %q", path, code, hdr.Get("X-Ratelimit-Remaining"))
		}
		time.Sleep(interval)
	}
}

// burstCounts sends n requests back to back and counts them by status; it
// also checks that every answer carries the x-ratelimit headers.
func burstCounts(t *testing.T, addr, path string, n int) (map[int]int, time.Duration) {
	t.Helper()
	start := time.Now()
	counts := map[int]int{}
	for range n {
		code, hdr, _, err := request(addr, http.MethodGet, "user-service", path, nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[code]++
		if hdr.Get("X-Ratelimit-Limit") == "" || hdr.Get("X-Ratelimit-Remaining") == "" || hdr.Get("X-Ratelimit-Reset") == "" {
			t.Fatalf("%s answered %d without x-ratelimit headers: %v", path, code, hdr)
		}
	}
	return counts, time.Since(start)
}

// TestPolicyEnvoyInboundRateLimit: through a real sidecar's inbound
// listener, a burst gets 429s once the service's token bucket (5/s, burst
// 10) is empty — as many 200s as the bucket held plus what refilled while
// the burst ran — with x-ratelimit-* headers; sustained traffic gets
// through at the configured rate; a route with its own bucket
// (2/s, burst 3) has its own tokens; a route that opts out is never
// limited; and the 429s never reach the application.
func TestPolicyEnvoyInboundRateLimit(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	app := startHTTPBackend(t, "app", answerName("app"))
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("user-service", []string{app.addr}))
	pol := policyDir(t, servicePolicy("user-service", `  rateLimit: {requestsPerSecond: 5, burst: 10}
  routes:
    - match: {pathPrefix: /search}
      rateLimit: {requestsPerSecond: 2, burst: 3}
    - match: {path: /healthz}
      rateLimit: {disabled: true}`))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	e, inbound := startInboundEnvoy(t, s, "user-service", "user-service-1", app.addr)
	eventually(t, 30*time.Second, "the inbound listener to reach the application", func() error {
		code, _, body, err := request(inbound, http.MethodGet, "user-service", "/healthz", nil)
		if err == nil && (code != http.StatusOK || body != "app") {
			err = fmt.Errorf("status %d %q", code, body)
		}
		return err
	})
	s.noNACKs(t, 1)

	waitBucketFull(t, inbound, "/", 5, 10)
	hits := app.hits.Load()
	counts, took := burstCounts(t, inbound, "/", 40)
	// The bucket held 9 tokens (10, less the probe's) and refills 5 per
	// second, once a second: at most took/1s + 1 refills during the burst.
	maxOK := 9 + 5*int(took/time.Second+1)
	if counts[http.StatusOK] < 9 || counts[http.StatusOK] > maxOK || counts[http.StatusTooManyRequests] != 40-counts[http.StatusOK] {
		t.Fatalf("burst of 40 in %v: statuses %v, want 9..%d OK and the rest 429", took, counts, maxOK)
	}
	if got := app.hits.Load() - hits; got != int64(counts[http.StatusOK]) {
		t.Fatalf("the application got %d requests for %d OK answers: 429s must not reach it", got, counts[http.StatusOK])
	}
	if n := e.stat(t, "inbound.user-service.http_local_rate_limit.rate_limited"); n < int64(counts[http.StatusTooManyRequests]) {
		t.Errorf("envoy counted %d rate-limited requests for %d 429s", n, counts[http.StatusTooManyRequests])
	}

	// The service's bucket is empty now; /search has its own.
	counts, _ = burstCounts(t, inbound, "/search", 10)
	if counts[http.StatusOK] < 3 || counts[http.StatusOK] > 5 {
		t.Fatalf("/search burst: statuses %v, want its own 3 tokens (plus at most a refill)", counts)
	}
	// /healthz opts out of rate limiting.
	if c := statusCounts(t, inbound, http.MethodGet, "user-service", "/healthz", nil, 30); c[http.StatusOK] != 30 {
		t.Fatalf("/healthz: statuses %v, want no 429", c)
	}

	// Sustained: over about two seconds of continuous requests from an empty
	// bucket, about 5 per second get through.
	waitBucketFull(t, inbound, "/", 5, 10)
	ok, sent := 0, 0
	start := time.Now()
	for time.Since(start) < 2100*time.Millisecond {
		code, _, _, err := request(inbound, http.MethodGet, "user-service", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if code == http.StatusOK {
			ok++
		}
		time.Sleep(10 * time.Millisecond)
	}
	// 9 from the full bucket (less the probe's token), then 5 per refill:
	// 2 or 3 refills in 2.1s.
	if ok < 9+5*2 || ok > 9+5*3 {
		t.Fatalf("%d of %d requests in 2.1s got through, want 19..24 (burst 10, then 5/s)", ok, sent)
	}
}

// traceReceiver is an in-process OTLP/gRPC trace collector.
type traceReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	name    string
	attrs   map[string]string
}

func (r *traceReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range sp.GetAttributes() {
					attrs[a.GetKey()] = a.GetValue().GetStringValue()
				}
				r.spans = append(r.spans, receivedSpan{service: service, name: sp.GetName(), attrs: attrs})
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *traceReceiver) received() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

func startTraceReceiver(t *testing.T) (*traceReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &traceReceiver{}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, r)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return r, lis.Addr().String()
}

// TestPolicyEnvoyTracingToOTLPReceiver: the MeshPolicy points tracing at
// an in-process OTLP/gRPC receiver registered in the catalog as the
// otel-collector service, sampling 100%. Requests through a real sidecar
// of user-service — into its application via the inbound listener, and out
// to order-service via the outbound listener — produce spans that arrive
// at the receiver with the proxy's service name and the policy's tags.
func TestPolicyEnvoyTracingToOTLPReceiver(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	recv, collector := startTraceReceiver(t)
	app := startHTTPBackend(t, "app", answerName("app"))
	orders := startHTTPBackend(t, "orders", answerName("orders"))
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("user-service", []string{app.addr})+
		serviceEntry("order-service", instance(orders.addr, ""))+
		serviceEntry("otel-collector", instance(collector, "")))
	pol := policyDir(t, `apiVersion: sluice.dev/v1
kind: MeshPolicy
spec:
  tracing: {collector: otel-collector, samplingPercent: 100, tags: {env: e2e}}
`)
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	e, inbound := startInboundEnvoy(t, s, "user-service", "user-service-1", app.addr)
	s.noNACKs(t, 1)

	// Envoy exports in batches (every 5s, or once 5 spans are pending).
	eventually(t, 30*time.Second, "spans from both listeners at the receiver", func() error {
		for range 5 {
			for _, r := range []struct{ addr, host, path string }{{inbound, "user-service", "/in"}, {e.OutboundAddr, "order-service", "/out"}} {
				code, _, _, err := request(r.addr, http.MethodGet, r.host, r.path, nil)
				if err != nil {
					return fmt.Errorf("%s%s: %w", r.host, r.path, err)
				}
				if code != http.StatusOK {
					return fmt.Errorf("%s%s: status %d", r.host, r.path, code)
				}
			}
		}
		var in, out int
		for _, sp := range recv.received() {
			if sp.service != "user-service" || sp.attrs["env"] != "e2e" {
				return fmt.Errorf("span %+v: want service.name user-service and tag env=e2e", sp)
			}
			switch sp.attrs["upstream_cluster"] {
			case "inbound|" + portOf(app.addr):
				in++
			case "order-service":
				out++
			}
		}
		if in == 0 || out == 0 {
			return fmt.Errorf("%d inbound and %d outbound spans so far (of %d)", in, out, len(recv.received()))
		}
		return nil
	})
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
