package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServerMemory is the server's resident memory around the initial sync, read
// from its Prometheus endpoint (process_resident_memory_bytes).
type ServerMemory struct {
	BeforeMiB    float64 `json:"before_mib"`
	AfterSyncMiB float64 `json:"after_sync_mib"`
	PerProxyKiB  float64 `json:"per_proxy_kib"`
	// HeapPerProxyKiB is the growth of the Go heap in use per proxy
	// (go_memstats_alloc_bytes, after a forced garbage collection when
	// the server offers /debug/pprof): resident memory also counts freed
	// memory the runtime has not returned yet.
	HeapPerProxyKiB float64 `json:"heap_per_proxy_kib,omitempty"`
	MetricsAddress  string  `json:"metrics_url"`
}

// ResidentBytes reads process_resident_memory_bytes from a metrics URL.
func ResidentBytes(ctx context.Context, url string) (float64, error) {
	return metricValue(ctx, url, "process_resident_memory_bytes")
}

// HeapInuseBytes reads go_memstats_alloc_bytes (bytes of allocated heap
// objects; after a collection, the live heap) from a metrics URL.
func HeapInuseBytes(ctx context.Context, url string) (float64, error) {
	return metricValue(ctx, url, "go_memstats_alloc_bytes")
}

func metricValue(ctx context.Context, url, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

// collectGarbage asks a server that serves Go profiles next to its metrics
// (sluice's admin API, the baseline) to run garbage collections first, so
// the heap figure counts live memory only. It asks twice: pooled objects
// (sync.Pool, which gRPC's send buffers come from) survive one collection
// in the pool's victim cache, and the buffers of a 1,000-proxy sync would
// otherwise be counted as if each proxy kept them. Servers without
// profiles are measured as they are.
func collectGarbage(ctx context.Context, metricsURL string) {
	base, ok := strings.CutSuffix(metricsURL, "/metrics")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}
