package admin

import (
	"crypto/subtle"
	"net/http"
	"os"
	"strings"
)

// Guard decides who may read the admin API's debug views and profiles,
// which show the whole catalog and configuration. Health, readiness and
// metrics stay open for probes and Prometheus.
//
//   - With a TokenFile, a request must carry "Authorization: Bearer
//     <token>". The file is read on each request, so a rotated token
//     takes effect at once (debug requests are rare).
//   - Without one, the debug views are served when the API listens on
//     loopback only (Loopback); on any other address they are refused.
type Guard struct {
	// TokenFile holds the bearer token (surrounding space ignored).
	TokenFile string
	// Loopback says the API listens on a loopback address only.
	Loopback bool
}

func (g Guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.TokenFile == "" {
			if !g.Loopback {
				http.Error(w, "sluice: debug views are disabled on a non-loopback admin address without --admin-token-file", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		want, err := os.ReadFile(g.TokenFile)
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
