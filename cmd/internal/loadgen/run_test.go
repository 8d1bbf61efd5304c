package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// TestRunAgainstBaseline: every simulated proxy syncs, the change reaches all
// of them, and the server's memory is sampled — over SotW and delta.
func TestRunAgainstBaseline(t *testing.T) {
	m := Mesh{Services: 20, Endpoints: 3}
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprint("delta=", delta), func(t *testing.T) {
			// A fresh server per run: the change is made once.
			b := &Baseline{Mesh: m, XDSAddr: freeAddr(t), AdminAddr: freeAddr(t)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = b.Serve(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := http.Get("http://" + b.AdminAddr + "/readyz")
				if err == nil {
					_ = resp.Body.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("baseline did not start: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			change := func(ctx context.Context) error {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.AdminAddr+"/change", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				return resp.Body.Close()
			}
			res, err := Run(ctx, Config{
				Target: b.XDSAddr, Proxies: 10, Delta: delta, NodePrefix: "t", Watch: m.Watch(),
				SyncTimeout: 20 * time.Second, ChangeTimeout: 20 * time.Second,
				MetricsURL: "http://" + b.AdminAddr + "/metrics",
			}, change)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Errors) > 0 {
				t.Fatalf("errors: %v", res.Errors)
			}
			if res.InitialSync.Count != 10 || res.Convergence == nil || res.Convergence.Count != 10 {
				t.Fatalf("result %+v", res)
			}
			if res.Memory == nil || res.Memory.AfterSyncMiB <= 0 {
				t.Fatalf("no memory sample: %+v", res.Memory)
			}
		})
	}
}

// TestStringField reads a field without decoding the message.
func TestStringField(t *testing.T) {
	// field 1 (bytes) "abc", preceded by field 2 varint 7.
	b := []byte{0x10, 0x07, 0x0a, 0x03, 'a', 'b', 'c'}
	if s, err := stringField(b, 1); err != nil || s != "abc" {
		t.Fatalf("got %q %v", s, err)
	}
	if _, err := stringField([]byte{0x10, 0x07}, 1); err == nil {
		t.Fatal("missing field: no error")
	}
}
