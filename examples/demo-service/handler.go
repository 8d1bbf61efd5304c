package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// server answers every request with the name of its pod, unless one of its
// knobs tells it to misbehave. The knobs are per instance, so a test reaches
// one pod directly (kubectl port-forward) to set them, then sends traffic
// through Envoy:
//
//	POST /fail[?on=true|false]  toggle (or set) answering 503 to everything
//	POST /flaky?rate=R          answer 503 to a fraction R (0-1) of requests,
//	                            spread evenly: 0.5 fails every other request
//	POST /slow?delay=D          wait D (a Go duration) before answering
//	POST /reset                 clear every knob
//	GET  /fail, /flaky, /slow   show the knobs
//	GET  /healthz               200, or 503 once the instance is shutting down
//
// Every other path is an ordinary request: 200 with a JSON body naming the
// pod, and an X-Demo-Pod header.
type server struct {
	pod, service, zone string

	mu        sync.Mutex
	failing   bool
	flakyRate float64
	delay     time.Duration
	// requests counts ordinary requests; it drives /flaky.
	requests uint64

	draining atomic.Bool
	// sleep waits d or until ctx ends; replaced in tests.
	sleep func(ctx context.Context, d time.Duration)
}

func newServer(c config) *server {
	return &server{pod: c.Pod, service: c.Service, zone: c.Zone, sleep: sleepCtx}
}

// knobs is the state the knob endpoints report.
type knobs struct {
	Pod       string  `json:"pod"`
	Failing   bool    `json:"failing"`
	FlakyRate float64 `json:"flaky_rate"`
	Delay     string  `json:"delay"`
}

// answer is the body of an ordinary request.
type answer struct {
	Pod     string `json:"pod"`
	Service string `json:"service"`
	Zone    string `json:"zone,omitempty"`
	Method  string `json:"method"`
	Host    string `json:"host"`
	Path    string `json:"path"`
	Error   string `json:"error,omitempty"`
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		on, set, err := optionalBool(r, "on")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		if set {
			s.failing = on
		} else {
			s.failing = !s.failing
		}
		s.mu.Unlock()
		s.writeKnobs(w)
	})
	mux.HandleFunc("POST /flaky", func(w http.ResponseWriter, r *http.Request) {
		rate, err := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
		if err != nil || math.IsNaN(rate) || rate < 0 || rate > 1 {
			http.Error(w, "rate: want a number from 0 to 1", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.flakyRate, s.requests = rate, 0
		s.mu.Unlock()
		s.writeKnobs(w)
	})
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil || d < 0 || d > time.Minute {
			http.Error(w, "delay: want a duration from 0s to 1m, e.g. 500ms", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.delay = d
		s.mu.Unlock()
		s.writeKnobs(w)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.failing, s.flakyRate, s.delay, s.requests = false, 0, 0, 0
		s.mu.Unlock()
		s.writeKnobs(w)
	})
	for _, p := range []string{"/fail", "/flaky", "/slow"} {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) { s.writeKnobs(w) })
	}
	mux.HandleFunc("/", s.serveOrdinary)
	return mux
}

// serveOrdinary answers an ordinary request, misbehaving as the knobs say.
func (s *server) serveOrdinary(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay, failing, rate, n := s.delay, s.failing, s.flakyRate, s.requests
	s.requests++
	s.mu.Unlock()
	if delay > 0 {
		s.sleep(r.Context(), delay)
	}
	a := answer{Pod: s.pod, Service: s.service, Zone: s.zone, Method: r.Method, Host: r.Host, Path: r.URL.Path}
	code := http.StatusOK
	switch {
	case failing:
		code, a.Error = http.StatusServiceUnavailable, "failing: set by POST /fail"
	case flakyFails(rate, n):
		code, a.Error = http.StatusServiceUnavailable, "flaky: set by POST /flaky"
	}
	w.Header().Set("X-Demo-Pod", s.pod)
	writeJSON(w, code, a)
}

// flakyFails says whether request number n (from 0) fails at rate: exactly
// floor(n*rate) of the first n requests fail, spread evenly, so tests are
// deterministic (rate 0.5: every second request).
func flakyFails(rate float64, n uint64) bool {
	if rate <= 0 {
		return false
	}
	return math.Floor(float64(n+1)*rate) > math.Floor(float64(n)*rate)
}

func (s *server) writeKnobs(w http.ResponseWriter) {
	s.mu.Lock()
	k := knobs{Pod: s.pod, Failing: s.failing, FlakyRate: s.flakyRate, Delay: s.delay.String()}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, k)
}

// optionalBool reads query parameter name: set is false when it is absent.
func optionalBool(r *http.Request, name string) (value, set bool, err error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, false, nil
	}
	v, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, false, fmt.Errorf("%s: %q is not true or false", name, q.Get(name))
	}
	return v, true, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
