package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// otlpReceiver is an in-process OTLP/gRPC trace collector.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string]map[string]string // span name -> string attributes
	svc   map[string]bool              // resource service.name values
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				r.svc[a.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range s.GetAttributes() {
					attrs[a.GetKey()] = a.GetValue().GetStringValue()
				}
				r.spans[s.GetName()] = attrs
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) has(name string) (map[string]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.spans[name]
	return a, ok
}

// TestServeExportsTraces: with --otel-endpoint pointed at an in-process OTLP
// receiver, a source update and its translation produce spans.
func TestServeExportsTraces(t *testing.T) {
	rcv := &otlpReceiver{spans: map[string]map[string]string{}, svc: map[string]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, rcv)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	reg := filepath.Join(t.TempDir(), "registry.yaml")
	if err := os.WriteFile(reg, []byte("services:\n  - name: web\n    instances:\n      - {address: 10.0.0.1, port: 80}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &lockedBuffer{}
	go func() {
		done <- serve(ctx, slog.New(slog.NewTextHandler(logs, nil)), serveOptions{
			xdsAddr: "127.0.0.1:0", adminAddr: "127.0.0.1:0",
			registries: registryOptions{registryFile: reg},
			holdOff:    10 * time.Millisecond, maxDelay: 50 * time.Millisecond,
			outboundPort: 15001, outboundAddress: "127.0.0.1",
			otelEndpoint: lis.Addr().String(), otelInsecure: true, groupIdleTTL: time.Minute,
		})
	}()
	// The batcher exports on shutdown at the latest: stop sluice once the
	// catalog was translated, then look at what arrived.
	deadline := time.Now().Add(10 * time.Second)
	for !logs.contains("catalog translated; ready") {
		if time.Now().After(deadline) {
			t.Fatalf("sluice did not become ready; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	upd, ok := rcv.has("sluice.source.update")
	if !ok || upd["sluice.source"] != "file" {
		t.Errorf("no source update span for the file source: %v", rcv.spans)
	}
	tr, ok := rcv.has("sluice.translate")
	if !ok || tr["sluice.group"] == "" {
		t.Errorf("no translate span with its group: %v", rcv.spans)
	}
	if _, ok := rcv.has("sluice.snapshot.build"); !ok {
		t.Errorf("no build span: %v", rcv.spans)
	}
	if !rcv.svc["sluice"] {
		t.Errorf("resource service.name: %v, want sluice", rcv.svc)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }
