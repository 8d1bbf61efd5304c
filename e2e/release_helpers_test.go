package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The release tests (issue #16) measure shares of traffic. Each sample is
// sized with sampleSize so that the allowed margin is at least four
// standard deviations of the binomial share: a correct implementation
// falls outside it with probability about 6e-5 per assertion (the normal
// two-sided tail at 4σ), well under one run in a thousand for all of
// them together.

// sampleSize is the number of requests that puts margin (a fraction, 0.03
// for ±3 points) at four standard deviations of a share whose expected
// value is p: n ≥ 16·p(1-p)/margin². It is never below least.
func sampleSize(p, margin float64, least int) int {
	return max(least, int(math.Ceil(16*p*(1-p)/(margin*margin))))
}

// fanOut runs do n times from workers goroutines and counts its results.
func fanOut(n, workers int, do func() string) map[string]int {
	var mu sync.Mutex
	out := map[string]int{}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				k := do()
				mu.Lock()
				out[k]++
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return out
}

// share is the fraction of the counted results whose key has prefix.
func share(counts map[string]int, prefix string) float64 {
	var hit, total int
	for k, c := range counts {
		total += c
		if strings.HasPrefix(k, prefix) {
			hit += c
		}
	}
	if total == 0 {
		return 0
	}
	return float64(hit) / float64(total)
}

// onlyKeys fails the test unless every counted result has one of the
// prefixes (answers from known backends, expected statuses).
func onlyKeys(t *testing.T, what string, counts map[string]int, prefixes ...string) {
	t.Helper()
	for k := range counts {
		ok := false
		for _, p := range prefixes {
			ok = ok || strings.HasPrefix(k, p)
		}
		if !ok {
			t.Fatalf("%s: unexpected results %q in %v (want only %v)", what, k, sorted(counts), prefixes)
		}
	}
}

// checkShare fails the test unless the share of results with prefix is
// within margin of want.
func checkShare(t *testing.T, what string, counts map[string]int, prefix string, want, margin float64) {
	t.Helper()
	got := share(counts, prefix)
	n := 0
	for _, c := range counts {
		n += c
	}
	t.Logf("%s: %s share %.2f%% of %d (want %.0f%% ± %.0f points); counts %v", what, prefix, 100*got, n, 100*want, 100*margin, sorted(counts))
	if math.Abs(got-want) > margin {
		t.Errorf("%s: %s share %.2f%% of %d, want %.0f%% ± %.0f points", what, prefix, 100*got, n, 100*want, 100*margin)
	}
}

// sorted renders counts in key order, for stable messages.
func sorted(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, counts[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// loadClient is an HTTP client that keeps a connection per worker of a
// fanOut (Go's default transport keeps only two idle ones per host).
func loadClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// httpResult sends one GET through addr and names its result: the body
// for a 200 (a backend's name), "HTTP <code>" for another status, and
// "error: ..." when the request failed.
func httpResult(c *http.Client, addr, host, path string, header map[string]string) string {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	req.Host = host
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "error: " + err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return string(body)
}

// grpcResult makes one call with md as call metadata and names its
// result: the answering backend's name, or "code <Code>: <message>". It
// does not wait for the channel to be ready, so nothing masks a failure.
func grpcResult(client testgrpc.TestServiceClient, md map[string]string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))
	}
	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if err != nil {
		st := status.Convert(err)
		return fmt.Sprintf("code %s: %s", st.Code(), st.Message())
	}
	return resp.GetHostname()
}

// versionedHTTP starts one HTTP backend per entry of versions, named
// <version>-<index within the version> and answering its name, and
// returns their registry instance entries with metadata {version}.
func versionedHTTP(t *testing.T, versions ...string) []string {
	t.Helper()
	var out []string
	idx := map[string]int{}
	for _, v := range versions {
		name := fmt.Sprintf("%s-%d", v, idx[v])
		idx[v]++
		b := startHTTPBackend(t, name, answerName(name))
		out = append(out, instance(b.addr, "metadata: {version: "+v+"}"))
	}
	return out
}

// startNamedGRPCBackend starts a gRPC test server answering name as its
// hostname.
func startNamedGRPCBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: lis.Addr().String()}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, b)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return b
}

// versionedGRPC is versionedHTTP for gRPC backends.
func versionedGRPC(t *testing.T, versions ...string) []string {
	t.Helper()
	var out []string
	idx := map[string]int{}
	for _, v := range versions {
		b := startNamedGRPCBackend(t, fmt.Sprintf("%s-%d", v, idx[v]))
		idx[v]++
		out = append(out, instance(b.addr, "metadata: {version: "+v+"}"))
	}
	return out
}

// policies joins policy documents into one file's content.
func policies(docs ...string) string {
	return strings.Join(docs, "---\n")
}

// translatorWarnings returns the messages of the translator's diagnostics
// that /readyz shows.
func translatorWarnings(t *testing.T, s *sluice) []string {
	t.Helper()
	var st struct {
		Translator struct {
			Diagnostics []struct{ Severity, Message string }
		}
	}
	s.adminJSON(t, "/readyz", &st)
	var out []string
	for _, d := range st.Translator.Diagnostics {
		out = append(out, d.Message)
	}
	return out
}

// viaGRPC makes grpcResult a fanOut job.
func viaGRPC(client testgrpc.TestServiceClient, md map[string]string) func() string {
	return func() string { return grpcResult(client, md) }
}
