package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testServer() *server {
	s := newServer(config{Pod: "demo-7d9f-abcde", Service: "demo", Zone: "zone-a"})
	s.sleep = func(context.Context, time.Duration) {}
	return s
}

// do sends one request to h and returns the status code and body.
func do(t *testing.T, h http.Handler, method, target string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "demo"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header()
}

func TestOrdinaryRequestNamesThePod(t *testing.T) {
	h := testServer().routes()
	code, body, hdr := do(t, h, http.MethodGet, "/orders/42?x=1")
	if code != http.StatusOK {
		t.Fatalf("code = %d, body %s", code, body)
	}
	if got := hdr.Get("X-Demo-Pod"); got != "demo-7d9f-abcde" {
		t.Errorf("X-Demo-Pod = %q", got)
	}
	var a answer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	want := answer{Pod: "demo-7d9f-abcde", Service: "demo", Zone: "zone-a", Method: "GET", Host: "demo", Path: "/orders/42"}
	if a != want {
		t.Errorf("answer = %+v, want %+v", a, want)
	}
}

func TestFailToggles(t *testing.T) {
	h := testServer().routes()
	steps := []struct {
		method, target string
		wantCode       int
		wantBody       string
	}{
		{"GET", "/fail", 200, `"failing":false`},
		{"POST", "/fail", 200, `"failing":true`},
		{"GET", "/", 503, `failing: set by POST /fail`},
		{"GET", "/healthz", 200, "ok"}, // health stays up: outlier detection, not the registry, must find it
		{"POST", "/fail", 200, `"failing":false`},
		{"GET", "/", 200, `"pod":"demo-7d9f-abcde"`},
		{"POST", "/fail?on=true", 200, `"failing":true`},
		{"POST", "/fail?on=true", 200, `"failing":true`},
		{"GET", "/anything", 503, `"error"`},
		{"POST", "/fail?on=false", 200, `"failing":false`},
		{"POST", "/fail?on=maybe", 400, `on: "maybe" is not true or false`},
		{"PUT", "/fail", 200, `"method":"PUT"`}, // an ordinary request: only POST changes a knob
		{"GET", "/fail", 200, `"failing":false`},
	}
	for i, st := range steps {
		code, body, _ := do(t, h, st.method, st.target)
		if code != st.wantCode || !strings.Contains(body, st.wantBody) {
			t.Fatalf("step %d %s %s: code %d body %q; want %d containing %q", i, st.method, st.target, code, body, st.wantCode, st.wantBody)
		}
	}
}

func TestFlakyFailsAnEvenShare(t *testing.T) {
	h := testServer().routes()
	if code, body, _ := do(t, h, "POST", "/flaky?rate=0.5"); code != 200 || !strings.Contains(body, `"flaky_rate":0.5`) {
		t.Fatalf("POST /flaky: %d %s", code, body)
	}
	var got []int
	for range 6 {
		code, _, _ := do(t, h, "GET", "/")
		got = append(got, code)
	}
	want := []int{200, 503, 200, 503, 200, 503}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("codes = %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"rate=2", "rate=-0.1", "rate=NaN", "rate=x", ""} {
		if code, _, _ := do(t, h, "POST", "/flaky?"+bad); code != http.StatusBadRequest {
			t.Errorf("POST /flaky?%s: code %d, want 400", bad, code)
		}
	}
	do(t, h, "POST", "/reset")
	for range 4 {
		if code, _, _ := do(t, h, "GET", "/"); code != 200 {
			t.Fatalf("after /reset: code %d", code)
		}
	}
}

func TestFlakyFailsCounts(t *testing.T) {
	for _, rate := range []float64{0, 0.1, 0.25, 0.5, 1} {
		fails := 0
		for n := range uint64(100) {
			if flakyFails(rate, n) {
				fails++
			}
		}
		if want := int(100 * rate); fails != want {
			t.Errorf("rate %v: %d of 100 failed, want %d", rate, fails, want)
		}
	}
}

func TestSlowDelaysOrdinaryRequests(t *testing.T) {
	s := testServer()
	var slept []time.Duration
	s.sleep = func(_ context.Context, d time.Duration) { slept = append(slept, d) }
	h := s.routes()
	if code, body, _ := do(t, h, "POST", "/slow?delay=250ms"); code != 200 || !strings.Contains(body, `"delay":"250ms"`) {
		t.Fatalf("POST /slow: %d %s", code, body)
	}
	do(t, h, "GET", "/")
	do(t, h, "GET", "/healthz") // not delayed
	do(t, h, "GET", "/slow")    // not delayed
	if len(slept) != 1 || slept[0] != 250*time.Millisecond {
		t.Fatalf("slept %v, want [250ms]", slept)
	}
	for _, bad := range []string{"delay=soon", "delay=-1s", "delay=2m"} {
		if code, _, _ := do(t, h, "POST", "/slow?"+bad); code != http.StatusBadRequest {
			t.Errorf("POST /slow?%s: code %d, want 400", bad, code)
		}
	}
}

func TestHealthzFailsWhileDraining(t *testing.T) {
	s := testServer()
	h := s.routes()
	if code, _, _ := do(t, h, "GET", "/healthz"); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	s.draining.Store(true)
	if code, _, _ := do(t, h, "GET", "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz while draining = %d, want 503", code)
	}
	// Ordinary requests are still served while draining.
	if code, _, _ := do(t, h, "GET", "/"); code != 200 {
		t.Fatalf("request while draining = %d", code)
	}
}
