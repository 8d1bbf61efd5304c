package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:18080": true, "[::1]:18080": true, "localhost:18080": true, "127.1.2.3:80": true,
		"0.0.0.0:18080": false, ":18080": false, "[::]:18080": false, "10.0.0.1:18080": false, "nonsense": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestAdminGuard: health, readiness and metrics are always served; the
// debug views and profiles are served on loopback, refused beyond it
// without a token, and need the token when one is set (read on each
// request, so a rotated token works at once).
func TestAdminGuard(t *testing.T) {
	ctx := context.Background()
	cache := xds.NewCache(nil)
	loop := snapshot.NewLoop(snapshot.Config{Translator: translator.New(), Publisher: cache})
	srv := xds.NewServer(ctx, xds.Config{Cache: cache, Groups: loop})
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(guard adminGuard, path, token string) int {
		t.Helper()
		h := newAdminHandler(prometheus.NewRegistry(), loop, srv, cache, guard)
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	local, exposed, withToken := adminGuard{loopback: true}, adminGuard{}, adminGuard{tokenFile: tokenFile}
	for _, c := range []struct {
		name  string
		guard adminGuard
		path  string
		token string
		want  int
	}{
		{"metrics beyond loopback", exposed, "/metrics", "", http.StatusOK},
		{"healthz beyond loopback", exposed, "/healthz", "", http.StatusOK},
		{"readyz with a token set", withToken, "/readyz", "", http.StatusServiceUnavailable}, // not ready: nothing synced, but served
		{"debug on loopback", local, "/debug/snapshots", "", http.StatusOK},
		{"debug beyond loopback", exposed, "/debug/snapshots", "", http.StatusForbidden},
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
