package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/xds"
)

// fakes stand in for the snapshot loop, the xDS tracker and the cache: a
// loop that is not ready (nothing synced), no proxies, no snapshots.
type fakeLoop struct {
	status snapshot.Status
	policy *policy.Set
}

func (l fakeLoop) Status() snapshot.Status  { return l.status }
func (l fakeLoop) Catalog() sources.Catalog { return sources.Catalog{} }
func (l fakeLoop) Policy() *policy.Set      { return l.policy }

type noProxies struct{}

func (noProxies) Proxies() []xds.ProxyStatus    { return nil }
func (noProxies) Node(string) []xds.ProxyStatus { return nil }

type noSnapshots struct{}

func (noSnapshots) GetSnapshot(group string) (cache.ResourceSnapshot, error) {
	return nil, errors.New("no snapshot for group " + group)
}

func testHandler(guard Guard) http.Handler {
	return NewHandler(Config{
		Metrics: prometheus.NewRegistry(), Loop: fakeLoop{}, Proxies: noProxies{}, Snapshots: noSnapshots{}, Guard: guard,
	})
}

// TestGuard: health, readiness and metrics are always served; the debug
// views and profiles are served on loopback, refused beyond it without a
// token, and need the token when one is set (read on each request, so a
// rotated token works at once).
func TestGuard(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(guard Guard, path, token string) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		testHandler(guard).ServeHTTP(rec, req)
		return rec.Code
	}
	local, exposed, withToken := Guard{Loopback: true}, Guard{}, Guard{TokenFile: tokenFile}
	for _, c := range []struct {
		name  string
		guard Guard
		path  string
		token string
		want  int
	}{
		{"metrics beyond loopback", exposed, "/metrics", "", http.StatusOK},
		{"healthz beyond loopback", exposed, "/healthz", "", http.StatusOK},
		{"readyz with a token set", withToken, "/readyz", "", http.StatusServiceUnavailable}, // not ready: nothing synced, but served
		{"debug on loopback", local, "/debug/snapshots", "", http.StatusOK},
		{"debug beyond loopback", exposed, "/debug/snapshots", "", http.StatusForbidden},
		{"policy beyond loopback", exposed, "/debug/policy", "", http.StatusForbidden},
		{"policy without the token", withToken, "/debug/policy", "", http.StatusUnauthorized},
		{"policy with the token", withToken, "/debug/policy", "s3cret", http.StatusOK},
		{"pprof beyond loopback", exposed, "/debug/pprof/", "", http.StatusForbidden},
		{"debug without the token", withToken, "/debug/catalog", "", http.StatusUnauthorized},
		{"debug with a wrong token", withToken, "/debug/catalog", "guess", http.StatusUnauthorized},
		{"debug with the token", withToken, "/debug/catalog", "s3cret", http.StatusOK},
		{"pprof with the token", withToken, "/debug/pprof/", "s3cret", http.StatusOK},
	} {
		if got := get(c.guard, c.path, c.token); got != c.want {
			t.Errorf("%s: GET %s = %d, want %d", c.name, c.path, got, c.want)
		}
	}
	if err := os.WriteFile(tokenFile, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := get(withToken, "/debug/catalog", "s3cret"); got != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %d, want 401", got)
	}
	if got := get(withToken, "/debug/catalog", "rotated"); got != http.StatusOK {
		t.Errorf("new token after rotation: %d, want 200", got)
	}
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	if got := get(withToken, "/debug/catalog", "rotated"); got != http.StatusServiceUnavailable {
		t.Errorf("token file gone: %d, want 503", got)
	}
}
