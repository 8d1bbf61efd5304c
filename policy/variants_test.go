package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// variantLine summarizes a variant: name, match, extra conditions, retry.
func variantLine(v RouteVariant) string {
	methods := "*"
	if len(v.Match.Methods) > 0 {
		methods = strings.Join(v.Match.Methods, ",")
	}
	s := fmt.Sprintf("%s %s%s %s", v.Name, v.Match.PathPrefix, v.Match.Path, methods)
	if v.GRPC {
		s += " grpc"
	}
	if v.RequireHeader != "" {
		s += " +" + v.RequireHeader
	}
	if !v.Retry.Enabled() {
		return s + " no-retry"
	}
	var on []string
	for _, c := range v.Retry.RetryOn {
		on = append(on, string(c))
	}
	return s + fmt.Sprintf(" retry=%d:%s", v.Retry.Attempts, strings.Join(on, ","))
}

func TestRouteVariants(t *testing.T) {
	tests := []struct {
		name string
		spec []string
		want []string
	}{
		{
			name: "no policy: one catch-all route without retries",
			want: []string{"default/no-retry / * no-retry"},
		},
		{
			name: "retries without an idempotency header",
			spec: []string{"  retry: {attempts: 2, retryOn: [5xx, unavailable]}"},
			want: []string{
				"default/grpc / * grpc retry=2:unavailable",
				"default/idempotent / DELETE,GET,HEAD,OPTIONS,PUT retry=2:5xx,unavailable",
				"default/no-retry / * no-retry",
			},
		},
		{
			name: "resilience example",
			spec: []string{
				"  retry:",
				"    attempts: 3",
				"    retryOn: [5xx, reset, connect-failure, unavailable]",
				"    idempotencyHeader: x-idempotency-key",
				"  routes:",
				"    - match: {pathPrefix: /orders, methods: [POST]}",
				"      retry: {attempts: 0}",
			},
			want: []string{
				"routes[0]/no-retry /orders POST no-retry",
				"default/grpc / * grpc retry=3:connect-failure,unavailable",
				"default/idempotent / DELETE,GET,HEAD,OPTIONS,PUT retry=3:5xx,reset,connect-failure,unavailable",
				"default/idempotency-header / * +x-idempotency-key retry=3:5xx,reset,connect-failure,unavailable",
				"default/no-retry / * no-retry",
			},
		},
		{
			name: "route with idempotent and other methods",
			spec: []string{
				"  retry: {attempts: 1, retryOn: [5xx], idempotencyHeader: x-key}",
				"  routes:",
				"    - match: {pathPrefix: /cart, methods: [PATCH, GET, POST]}",
				"      retry: {attempts: 4}",
			},
			want: []string{
				"routes[0]/grpc /cart POST grpc no-retry",
				"routes[0]/idempotent /cart GET retry=4:5xx",
				"routes[0]/idempotency-header /cart PATCH,POST +x-key retry=4:5xx",
				"routes[0]/no-retry /cart PATCH,POST no-retry",
				"default/grpc / * grpc no-retry",
				"default/idempotent / DELETE,GET,HEAD,OPTIONS,PUT retry=1:5xx",
				"default/idempotency-header / * +x-key retry=1:5xx",
				"default/no-retry / * no-retry",
			},
		},
		{
			name: "route with only idempotent methods needs no split",
			spec: []string{
				"  routes:",
				"    - match: {path: /items, methods: [GET, HEAD]}",
				"      retry: {attempts: 2}",
			},
			want: []string{
				"routes[0]/idempotent /items GET,HEAD retry=2:connect-failure,refused-stream,cancelled,unavailable",
				"default/no-retry / * no-retry",
			},
		},
		{
			name: "route that matches everything replaces the catch-all",
			spec: []string{
				"  routes:",
				"    - match: {pathPrefix: /}",
				"      timeout: 3s",
			},
			want: []string{"routes[0]/no-retry / * no-retry"},
		},
		{
			name: "route with methods and no retries keeps its methods",
			spec: []string{
				"  retry: {attempts: 2}",
				"  routes:",
				"    - match: {pathPrefix: /upload, methods: [PUT]}",
				"      retry: {attempts: 0}",
			},
			want: []string{
				"routes[0]/no-retry /upload PUT no-retry",
				"default/grpc / * grpc retry=2:connect-failure,refused-stream,cancelled,unavailable",
				"default/idempotent / DELETE,GET,HEAD,OPTIONS,PUT retry=2:connect-failure,refused-stream,cancelled,unavailable",
				"default/no-retry / * no-retry",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustLoad(t, "p.yaml", svc(append([]string{"  timeout: 2s"}, tt.spec...)...))
			var got []string
			for _, v := range set.RouteVariants("web") {
				got = append(got, variantLine(v))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("RouteVariants() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRouteVariantsCarrySettings checks the non-retry settings and that
// names are unique.
func TestRouteVariantsCarrySettings(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  timeout: 2s",
		"  rateLimit: {requestsPerSecond: 50}",
		"  retry: {attempts: 2, idempotencyHeader: x-key}",
		"  routes:",
		"    - match: {pathPrefix: /search, headers: {x-tenant: acme}}",
		"      timeout: 9s",
		"      rateLimit: {requestsPerSecond: 5, burst: 10}",
	))
	names := map[string]bool{}
	for _, v := range set.RouteVariants("web") {
		if names[v.Name] {
			t.Errorf("variant name %q is not unique", v.Name)
		}
		names[v.Name] = true
		if !strings.HasPrefix(v.Name, v.Route+"/"+string(v.Kind)) {
			t.Errorf("variant %q: route %q, kind %q", v.Name, v.Route, v.Kind)
		}
		switch v.Route {
		case "routes[0]":
			if v.Timeout != 9e9 || v.RateLimit != (RateLimit{Enabled: true, RequestsPerSecond: 5, Burst: 10}) || !v.OwnRateLimit {
				t.Errorf("%s: timeout %v, rate limit %+v own %v; want the route's", v.Name, v.Timeout, v.RateLimit, v.OwnRateLimit)
			}
			if diff := cmp.Diff([]HeaderMatch{{Name: "x-tenant", Exact: "acme"}}, v.Match.Headers); diff != "" {
				t.Errorf("%s: headers (-want +got):\n%s", v.Name, diff)
			}
		case DefaultRouteName:
			if v.Timeout != 2e9 || v.RateLimit != (RateLimit{Enabled: true, RequestsPerSecond: 50, Burst: 50}) || v.OwnRateLimit {
				t.Errorf("%s: timeout %v, rate limit %+v own %v; want the service's", v.Name, v.Timeout, v.RateLimit, v.OwnRateLimit)
			}
		default:
			t.Errorf("unexpected route %q", v.Route)
		}
	}
	if len(names) != 8 {
		t.Errorf("got %d variants, want 8 (4 per route)", len(names))
	}
}

// TestRouteVariantsCarryRelease: every variant of a route carries the
// route's split, mirror and fault; those of the catch-all route the
// service's.
func TestRouteVariantsCarryRelease(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  subsets: {v1: {version: v1}, v2: {version: v2}}",
		"  split: [{subset: v1, weight: 80}, {subset: v2, weight: 20}]",
		"  mirror: {subset: v2, percent: 50}",
		"  retry: {attempts: 2, idempotencyHeader: x-key}",
		"  routes:",
		"    - match: {pathPrefix: /beta, queryParams: {beta: '1'}}",
		"      subset: v2",
		"      fault: {abort: {percent: 10, grpcStatus: 14}}",
	))
	svcSplit := []WeightedSubset{{"v1", 80}, {"v2", 20}}
	svcMirror := &Mirror{Subset: "v2", Percent: 50}
	perRoute := map[string]int{}
	for _, v := range set.RouteVariants("web") {
		perRoute[v.Route]++
		want := RouteVariant{Split: svcSplit, Mirror: svcMirror}
		if v.Route == "routes[0]" {
			want = RouteVariant{Split: []WeightedSubset{{"v2", 100}}, Mirror: svcMirror, Fault: &Fault{Abort: &FaultAbort{Percent: 10, GRPCStatus: 14}}}
			if diff := cmp.Diff([]HeaderMatch{{Name: "beta", Exact: "1"}}, v.Match.QueryParams); diff != "" {
				t.Errorf("%s: query params (-want +got):\n%s", v.Name, diff)
			}
		}
		got := RouteVariant{Split: v.Split, Mirror: v.Mirror, Fault: v.Fault}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: release settings (-want +got):\n%s", v.Name, diff)
		}
	}
	if want := map[string]int{"routes[0]": 4, DefaultRouteName: 4}; !cmp.Equal(want, perRoute) {
		t.Errorf("variants per route = %v, want %v", perRoute, want)
	}
}

// TestRouteVariantsQueryParamsKeepCatchAll: a route on "/" with query
// parameter matches does not match everything, so the catch-all stays.
func TestRouteVariantsQueryParamsKeepCatchAll(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc("  routes: [{match: {pathPrefix: /, queryParams: {debug: {present: true}}}}]"))
	var routes []string
	for _, v := range set.RouteVariants("web") {
		routes = append(routes, v.Route)
	}
	if diff := cmp.Diff([]string{"routes[0]", DefaultRouteName}, routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}
