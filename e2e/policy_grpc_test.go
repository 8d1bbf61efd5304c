package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// registryOf renders a registry file with one service at addrs.
func registryOf(service string, addrs []string) string {
	var ins []string
	for _, a := range addrs {
		ins = append(ins, instance(a, ""))
	}
	return registry(service, ins...)
}

// TestPolicyGRPCRetryHidesFailingInstance: five real gRPC backends, one of
// which fails every call with UNAVAILABLE. With a retry policy (retryOn
// [unavailable], 2 retries) sluice gives gRPC's xDS client a route retry
// policy, so no call fails even though the failing backend keeps getting
// (and failing) first attempts.
func TestPolicyGRPCRetryHidesFailingInstance(t *testing.T) {
	requireE2E(t)
	addrs, bad := startMixedGRPCBackends(t, 5, 2)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("user-service", addrs))
	pol := policyDir(t, servicePolicy("user-service", "  retry: {attempts: 2, retryOn: [unavailable], backoff: {base: 5ms, max: 50ms}}"))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	client := dialXDS(t, s.XDSAddr, "user-service")

	// Every good backend takes traffic, and not a single call fails.
	waitOnly(t, client, "backend-0", "backend-1", "backend-2", "backend-3")
	before := bad.calls.Load()
	const calls = 200
	seen := map[string]int{}
	for i := range calls {
		name, err := callOnce(client)
		if err != nil {
			t.Fatalf("call %d failed despite the retry policy: %v", i, err)
		}
		seen[name]++
	}
	// Round robin puts about one first attempt in five on the failing
	// backend; the retries hid every one of them.
	if got := bad.calls.Load() - before; got < calls/10 {
		t.Fatalf("the failing backend got %d of %d first attempts; the test did not exercise retries (seen %v)", got, calls, seen)
	}
	s.noNACKs(t, 1)
}

// TestPolicyGRPCOutlierDetectionEjectsFailingInstance: the same five
// backends, no retries, and outlier detection in the failure-percentage
// form (errorPercent, small minRequests/minHosts, a 1s interval). Calls
// fail while the failing backend is in rotation; once gRPC's outlier
// detection ejects it, calls stop failing.
func TestPolicyGRPCOutlierDetectionEjectsFailingInstance(t *testing.T) {
	requireE2E(t)
	addrs, bad := startMixedGRPCBackends(t, 5, 4)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("user-service", addrs))
	pol := policyDir(t, servicePolicy("user-service",
		"  outlierDetection: {consecutiveErrors: 0, errorPercent: 50, minRequests: 5, minHosts: 3, interval: 1s, baseEjectionTime: 10m, maxEjectionPercent: 20}"))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	client := dialXDS(t, s.XDSAddr, "user-service")

	failures := 0
	eventually(t, 30*time.Second, "the failing backend to be ejected", func() error {
		// A run of 50 calls without a failure: with the failing backend in
		// round-robin rotation, about 10 of them would fail.
		for i := range 50 {
			if _, err := callOnce(client); err != nil {
				failures++
				return fmt.Errorf("call %d failed: %w", i, err)
			}
		}
		return nil
	})
	if failures == 0 || bad.calls.Load() == 0 {
		t.Fatalf("calls never failed (%d failures, %d calls to the failing backend): the test did not exercise ejection", failures, bad.calls.Load())
	}
	// Ejected for 10 minutes: the next calls all succeed and never reach it.
	ejectedAt := bad.calls.Load()
	for i := range 100 {
		if _, err := callOnce(client); err != nil {
			t.Fatalf("call %d after ejection failed: %v", i, err)
		}
	}
	if n := bad.calls.Load() - ejectedAt; n != 0 {
		t.Fatalf("the ejected backend still got %d calls", n)
	}
	s.noNACKs(t, 1)
}
