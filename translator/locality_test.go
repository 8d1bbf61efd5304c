package translator

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
)

// locs builds localities from "region/zone:n" (n healthy endpoints of
// weight 1; "region/zone:n-" has them unhealthy).
func locs(specs ...string) []envoy.Locality {
	var out []envoy.Locality
	for _, s := range specs {
		name, count, _ := strings.Cut(s, ":")
		region, zone, _ := strings.Cut(name, "/")
		health := corev3.HealthStatus_HEALTHY
		if strings.HasSuffix(count, "-") {
			health, count = corev3.HealthStatus_UNHEALTHY, strings.TrimSuffix(count, "-")
		}
		n, err := strconv.Atoi(count)
		if err != nil {
			panic(fmt.Sprintf("locs(%q): %v", s, err))
		}
		l := envoy.Locality{Region: region, Zone: zone}
		for i := range n {
			l.Endpoints = append(l.Endpoints, envoy.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i), Port: 80, Health: health, Weight: 1})
		}
		out = append(out, l)
	}
	return out
}

// layout is "region/zone=priority" (or "=priority/weight" for weights)
// for each locality, in order.
func layout(ls []envoy.Locality, weights bool) string {
	var parts []string
	for _, l := range ls {
		s := fmt.Sprintf("%s/%s=%d", l.Region, l.Zone, l.Priority)
		if weights {
			s += fmt.Sprintf("/%d", l.Weight)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestFailoverPriorities(t *testing.T) {
	three := locs("r1/a:2", "r1/b:2", "r2/c:2", "r3/d:1", "/:1")
	rules := []policy.FailoverRule{{From: "r1", To: "r3"}, {From: "r1", To: "r2"}, {From: "r2", To: "r1"}}
	for _, tc := range []struct {
		name   string
		locs   []envoy.Locality
		rules  []policy.FailoverRule
		caller Locality
		want   string
	}{
		{"zone, region, then the rest", three, nil, Locality{"r1", "a"}, "r1/a=0 r1/b=1 r2/c=2 r3/d=2 /=2"},
		{"failover rules order regions", three, rules, Locality{"r1", "a"}, "r1/a=0 r1/b=1 r2/c=3 r3/d=2 /=4"},
		{"another caller's rules", three, rules, Locality{"r2", "c"}, "r1/a=1 r1/b=1 r2/c=0 r3/d=2 /=2"},
		{"no instance in the caller's zone: no gap", three, nil, Locality{"r1", "x"}, "r1/a=0 r1/b=0 r2/c=1 r3/d=1 /=1"},
		{"a region unknown to the mesh", three, rules, Locality{"r9", "z"}, "r1/a=0 r1/b=0 r2/c=0 r3/d=0 /=0"},
		{"zone only", three, rules, Locality{"", "b"}, "r1/a=1 r1/b=0 r2/c=1 r3/d=1 /=1"},
		{"region only", three, rules, Locality{"r1", ""}, "r1/a=0 r1/b=0 r2/c=2 r3/d=1 /=3"},
		{"a zone name in another region is not the caller's zone", locs("r1/a:1", "r2/a:1"), nil, Locality{"r1", "a"}, "r1/a=0 r2/a=1"},
		{"instances with a zone and no region", locs("/a:2", "/b:2"), nil, Locality{"r1", "a"}, "/a=0 /b=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := localized(tc.locs, &policy.Locality{Mode: policy.LocalityFailover, Failover: tc.rules}, tc.caller)
			if s := layout(got, false); s != tc.want {
				t.Errorf("priorities = %s\nwant         %s", s, tc.want)
			}
			for i := range tc.locs {
				if tc.locs[i].Priority != 0 {
					t.Fatal("localized modified its input")
				}
			}
		})
	}
}

func TestDistributeWeights(t *testing.T) {
	lp := &policy.Locality{Mode: policy.LocalityDistribute, Distribute: []policy.DistributeRule{
		{From: policy.LocalityPattern{Region: "r1", Zone: "a"}, To: []policy.LocalityWeight{
			{Pattern: policy.LocalityPattern{Region: "r1", Zone: "a"}, Weight: 80},
			{Pattern: policy.LocalityPattern{Region: "r1", Zone: "*"}, Weight: 20},
		}},
		{From: policy.LocalityPattern{Region: "r2", Zone: "*"}, To: []policy.LocalityWeight{
			{Pattern: policy.LocalityPattern{Region: "r9", Zone: "*"}, Weight: 100},
		}},
	}}
	for _, tc := range []struct {
		name   string
		locs   []envoy.Locality
		caller Locality
		want   string
	}{
		// r1/* claims r1/b and r1/c (r1/a has a more specific pattern),
		// split by healthy weight 3:1; r2 is named by nothing: priority 1.
		{"weights by pattern, split by health", locs("r1/a:2", "r1/b:3", "r1/c:1", "r2/d:1"), Locality{"r1", "a"}, "r1/a=0/80000 r1/b=0/15000 r1/c=0/5000 r2/d=1/0"},
		{"a pattern with nothing healthy splits evenly", locs("r1/a:2", "r1/b:1-", "r1/c:1-"), Locality{"r1", "a"}, "r1/a=0/80000 r1/b=0/10000 r1/c=0/10000"},
		{"no rule for the caller: no preference", locs("r1/a:2", "r2/d:1"), Locality{"r3", "x"}, "r1/a=0/0 r2/d=0/0"},
		{"nothing the rule names exists: no preference", locs("r1/a:2", "r2/d:1"), Locality{"r2", "d"}, "r1/a=0/0 r2/d=0/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s := layout(localized(tc.locs, lp, tc.caller), true); s != tc.want {
				t.Errorf("layout = %s\nwant     %s", s, tc.want)
			}
		})
	}
}
