package translator

import (
	"fmt"
	"slices"
	"strings"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// SubsetClusterName is the cluster (and EDS service) name of a service's
// subset. "|" is not allowed in service names, so it never names a
// service.
func SubsetClusterName(service, subset string) string { return service + "|" + subset }

// emptySubsets lists the subsets no instance of svc is in (sorted), nil
// when there are none: routes send nothing to them (see routeTarget).
func emptySubsets(svc sources.CatalogService, subsets []policy.Subset) []string {
	var out []string
	for _, ss := range subsets {
		if !slices.ContainsFunc(svc.Endpoints, func(ep sources.Endpoint) bool { return ss.Matches(ep.Metadata) }) {
			out = append(out, ss.Name)
		}
	}
	return out
}

// subsetEndpoints returns the load assignments of svc's subsets, in
// subset order: the instances each subset selects.
func subsetEndpoints(svc sources.CatalogService, subsets []policy.Subset) []*endpointv3.ClusterLoadAssignment {
	out := make([]*endpointv3.ClusterLoadAssignment, 0, len(subsets))
	for _, ss := range subsets {
		out = append(out, envoy.LoadAssignment(SubsetClusterName(svc.Name, ss.Name), localities(subsetOf(svc.Endpoints, ss))))
	}
	return out
}

// subsetOf is the endpoints in ss.
func subsetOf(eps []sources.Endpoint, ss policy.Subset) []sources.Endpoint {
	var out []sources.Endpoint
	for _, ep := range eps {
		if ss.Matches(ep.Metadata) {
			out = append(out, ep)
		}
	}
	return out
}

// routeTarget is where a route sends its requests: a split over the
// subsets that have instances, with their weights, or the whole service
// (one cluster) when no split applies. A subset without instances is left
// out of the split and its share goes to the others in proportion to
// their weights (a route never sends requests where nothing answers
// them); when every subset of the split is empty, or every one with
// instances has weight 0, the requests go to every instance of the
// service.
func routeTarget(service string, split []policy.WeightedSubset, empty []string) (cluster string, weighted []envoy.WeightedCluster) {
	for _, ws := range split {
		if ws.Weight == 0 || slices.Contains(empty, ws.Subset) {
			continue
		}
		weighted = append(weighted, envoy.WeightedCluster{Name: SubsetClusterName(service, ws.Subset), Weight: ws.Weight})
	}
	switch len(weighted) {
	case 0:
		return ClusterName(service), nil
	case 1:
		return weighted[0].Name, nil
	}
	return "", weighted
}

// routeMirrors is Envoy's mirror of a route that sends to cluster: none
// when the subset has no instances, or is where the route sends every
// request anyway (a service-wide mirror on a canary route).
func routeMirrors(service string, m *policy.Mirror, empty []string, cluster string) []envoy.Mirror {
	if m == nil || slices.Contains(empty, m.Subset) || SubsetClusterName(service, m.Subset) == cluster {
		return nil
	}
	return []envoy.Mirror{{Cluster: SubsetClusterName(service, m.Subset), Percent: m.Percent}}
}

// faultConfig is a route's fault filter configuration, nil without faults.
func faultConfig(f *policy.Fault) *anypb.Any {
	if f == nil {
		return nil
	}
	var ef envoy.Fault
	if d := f.Delay; d != nil {
		ef.DelayPercent, ef.Delay = d.Percent, d.Duration
	}
	if a := f.Abort; a != nil {
		ef.AbortPercent, ef.HTTPStatus, ef.GRPCStatus = a.Percent, a.HTTPStatus, a.GRPCStatus
	}
	return envoy.FaultConfig(ef)
}

// hasFaults reports whether any route of pol injects faults: the
// connection managers that route to the service then need the fault
// filter.
func hasFaults(pol policy.Resolved) bool {
	if pol.Fault != nil {
		return true
	}
	return slices.ContainsFunc(pol.Routes, func(r policy.ResolvedRoute) bool { return r.Fault != nil })
}

// subsetWarnings are the warnings about a service's subsets that select
// no instance: what routes and mirrors do instead (see routeTarget).
func subsetWarnings(svc string, empty []string, pol policy.Resolved) []sources.Diagnostic {
	if len(empty) == 0 {
		return nil
	}
	return []sources.Diagnostic{{
		Severity: sources.SeverityWarning, Source: DiagnosticSource, Location: origins(pol), Field: "spec.subsets",
		Message: fmt.Sprintf("service %s: no instance is in subset %s: splits send their share of it to the split's other subsets (or to every instance when none has instances), and mirrors to it are off, until one registers",
			svc, strings.Join(empty, ", ")),
	}}
}
