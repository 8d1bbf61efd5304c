package translator

import (
	"slices"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// localizes reports whether a service's load assignment depends on the
// caller's locality: it has a locality policy and the caller's locality
// is known (a caller of unknown locality gets no preference).
func localizes(lp *policy.Locality, caller Locality) bool {
	return lp != nil && caller.Known()
}

// localEndpoints is svc's load assignment, and its subsets', for a caller
// in caller under pol's locality policy (see localizes).
func localEndpoints(svc sources.CatalogService, pol policy.Resolved, caller Locality) (*endpointv3.ClusterLoadAssignment, []*endpointv3.ClusterLoadAssignment) {
	lp := pol.Locality
	main := envoy.LoadAssignment(ClusterName(svc.Name), localized(localities(svc.Endpoints), lp, caller))
	subsets := make([]*endpointv3.ClusterLoadAssignment, 0, len(pol.Subsets))
	for _, ss := range pol.Subsets {
		subsets = append(subsets, envoy.LoadAssignment(SubsetClusterName(svc.Name, ss.Name), localized(localities(subsetOf(svc.Endpoints, ss)), lp, caller)))
	}
	return main, subsets
}

// localized returns locs (the localities of a service, in order) with the
// priorities and weights lp gives a caller in caller; locs is not
// modified.
func localized(locs []envoy.Locality, lp *policy.Locality, caller Locality) []envoy.Locality {
	out := slices.Clone(locs)
	switch lp.Mode {
	case policy.LocalityFailover:
		failoverPriorities(out, lp.Failover, caller)
	case policy.LocalityDistribute:
		if rule := lp.Rule(caller.Region, caller.Zone); rule != nil {
			distributeWeights(out, rule)
		}
	}
	return out
}

// failoverPriorities ranks each locality for the caller: its own zone,
// then the rest of its region, then the regions its failover rules name
// (in the order written), then everything else. The ranks that have
// localities become priorities 0, 1, ...: clients require priorities
// without gaps (gRPC rejects an assignment with a gap).
func failoverPriorities(locs []envoy.Locality, rules []policy.FailoverRule, caller Locality) {
	var to []string // the regions the caller's region fails over to, in order
	for _, r := range rules {
		if r.From == caller.Region && caller.Region != "" && !slices.Contains(to, r.To) {
			to = append(to, r.To)
		}
	}
	last := uint32(2 + len(to))
	rank := func(l envoy.Locality) uint32 {
		sameRegion := caller.Region != "" && l.Region == caller.Region
		switch {
		// A zone without a region (on either side) is taken at its word:
		// registries often record the zone alone.
		case caller.Zone != "" && l.Zone == caller.Zone && (caller.Region == "" || l.Region == "" || sameRegion):
			return 0
		case sameRegion:
			return 1
		}
		if i := slices.Index(to, l.Region); i >= 0 {
			return 2 + uint32(i)
		}
		return last
	}
	used := make([]bool, last+1)
	for _, l := range locs {
		used[rank(l)] = true
	}
	// priority[r] is rank r's place among the ranks in use.
	priority := make([]uint32, last+1)
	next := uint32(0)
	for r, u := range used {
		priority[r] = next
		if u {
			next++
		}
	}
	for i := range locs {
		locs[i].Priority = priority[rank(locs[i])]
	}
}

// localityWeightScale spreads a rule's percentages over a pattern's
// localities in whole numbers: a locality's weight is its share of the
// pattern's percent, in thousandths.
const localityWeightScale = 1000

// distributeWeights gives the localities each pattern of rule names
// (the most specific pattern that names a locality claims it) the
// pattern's percent, split between them by their healthy weight. The
// localities no pattern names go to priority 1: they take traffic only
// when those the rule names have no healthy instance left.
func distributeWeights(locs []envoy.Locality, rule *policy.DistributeRule) {
	claim := make([]int, len(locs)) // index of the claiming pattern, -1 for none
	healthy := make([]uint64, len(rule.To))
	claimed := 0
	for i, l := range locs {
		claim[i] = -1
		for j, w := range rule.To {
			if w.Pattern.Matches(l.Region, l.Zone) && (claim[i] < 0 || w.Pattern.Specificity() > rule.To[claim[i]].Pattern.Specificity()) {
				claim[i] = j
			}
		}
		if claim[i] >= 0 {
			healthy[claim[i]] += uint64(l.HealthyWeight())
			claimed++
		}
	}
	if claimed == 0 {
		// Nothing the rule names has instances: no preference (and no
		// empty priority 0, which clients would refuse).
		return
	}
	for i, j := range claim {
		if j < 0 {
			continue
		}
		// A pattern whose localities have no healthy instance splits its
		// percent evenly: the weight is then moot (clients send nothing to
		// a locality without healthy instances), but must be at least 1.
		share, total := uint64(locs[i].HealthyWeight()), healthy[j]
		if total == 0 {
			share, total = 1, uint64(count(claim, j))
		}
		locs[i].Weight = uint32(max(1, uint64(rule.To[j].Weight)*localityWeightScale*share/total))
	}
	for i, j := range claim {
		if j < 0 {
			locs[i].Priority = 1
		}
	}
}

func count(xs []int, x int) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}
