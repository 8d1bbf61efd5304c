package main

import (
	"crypto/subtle"
	"net"
	"net/http"
	"os"
	"strings"
)

// adminGuard decides who may read the admin API's debug views and
// profiles, which show the whole catalog and configuration. Health,
// readiness and metrics stay open for probes and Prometheus.
//
//   - With a token file, a request must carry "Authorization: Bearer
//     <token>". The file is read on each request, so a rotated token
//     takes effect at once (debug requests are rare).
//   - Without one, the debug views are served on a loopback address only;
//     on any other they are refused.
type adminGuard struct {
	tokenFile string
	loopback  bool
}

func (g adminGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.tokenFile == "" {
			if !g.loopback {
				http.Error(w, "sluice: debug views are disabled on a non-loopback admin address without --admin-token-file", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		want, err := os.ReadFile(g.tokenFile)
		token := strings.TrimSpace(string(want))
		if err != nil || token == "" {
			http.Error(w, "sluice: the admin token file cannot be read; debug views are refused", http.StatusServiceUnavailable)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
			http.Error(w, "sluice: a bearer token is required for the debug views", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopback reports whether a listen address (host:port) binds to a
// loopback address only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
