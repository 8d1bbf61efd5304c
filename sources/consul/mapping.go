package consul

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// The mapping is documented in the package documentation (source.go).

// Locality metadata keys, in order of precedence.
var (
	zoneKeys   = []string{"zone", "topology.kubernetes.io/zone"}
	regionKeys = []string{"region", "topology.kubernetes.io/region"}
)

// TagKeyPrefix prefixes the metadata key of each Consul tag.
const TagKeyPrefix = "tag."

// mapped is one service's instances as read from Consul, plus the problems.
type mapped struct {
	instances []sources.Instance
	diags     []sources.Diagnostic
	// nodes are the nodes the service has instances on, so a change of a
	// node (or its node-level checks) re-reads the service.
	nodes map[string]bool
}

// location is the registry key of one Consul service instance.
func location(service, id string) string {
	if id == "" {
		return "consul:service/" + service
	}
	return "consul:service/" + service + "/" + id
}

func diag(sev sources.Severity, service, id, format string, args ...any) sources.Diagnostic {
	return sources.Diagnostic{
		Severity: sev,
		Source:   SourceName,
		Location: location(service, id),
		Message:  fmt.Sprintf(format, args...),
	}
}

// invalidName is the diagnostic for a service sluice cannot serve at all.
func invalidName(service string) sources.Diagnostic {
	return diag(sources.SeverityError, service, "",
		"service name %q is not a valid sluice service name (lower-case letters, digits, '.', '-', '_'; up to 253 characters); its instances are skipped", service)
}

// mapEntries maps the health entries of one service. entries may come in
// any order; the result does not depend on it.
func mapEntries(service string, entries []*api.ServiceEntry, warningIsHealthy bool) mapped {
	m := mapped{nodes: map[string]bool{}}
	sorted := make([]*api.ServiceEntry, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil {
			continue
		}
		m.nodes[e.Node.Node] = true
		if e.Service.Kind != api.ServiceKindTypical {
			continue
		}
		sorted = append(sorted, e)
	}
	sort.Slice(sorted, func(a, b int) bool {
		if sorted[a].Node.Node != sorted[b].Node.Node {
			return sorted[a].Node.Node < sorted[b].Node.Node
		}
		return sorted[a].Service.ID < sorted[b].Service.ID
	})
	byKey := map[string]int{}
	keptID := map[string]string{}
	for _, e := range sorted {
		in, d, ok := mapEntry(service, e, warningIsHealthy)
		if !ok {
			m.diags = append(m.diags, d)
			continue
		}
		k := in.Key()
		if i, dup := byKey[k]; dup {
			if in.Health > m.instances[i].Health {
				m.instances[i].Health = in.Health
			}
			m.diags = append(m.diags, diag(sources.SeverityWarning, service, e.Service.ID,
				"instance on node %q has the same address %s as instance %s; serving one endpoint with the worse health of the two",
				e.Node.Node, k, keptID[k]))
			continue
		}
		byKey[k] = len(m.instances)
		keptID[k] = e.Service.ID
		m.instances = append(m.instances, in)
	}
	return m
}

// mapEntry maps one health entry, or says why it cannot be served.
func mapEntry(service string, e *api.ServiceEntry, warningIsHealthy bool) (sources.Instance, sources.Diagnostic, bool) {
	svc, node := e.Service, e.Node
	addr := svc.Address
	field := "Service.Address"
	if addr == "" {
		addr, field = node.Address, "Node.Address"
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return sources.Instance{}, diag(sources.SeverityError, service, svc.ID,
			"instance on node %q: %s %q is not an IP address (sluice does not resolve host names); skipped", node.Node, field, addr), false
	}
	if err := sources.CheckEndpointAddress(ip); err != nil {
		return sources.Instance{}, diag(sources.SeverityError, service, svc.ID,
			"instance on node %q: %s %q: %v; skipped", node.Node, field, addr, err), false
	}
	if svc.Port < 1 || svc.Port > 65535 {
		return sources.Instance{}, diag(sources.SeverityError, service, svc.ID,
			"instance on node %q: port %d is not in 1-65535; skipped", node.Node, svc.Port), false
	}

	health, weight := healthAndWeight(e.Checks.AggregatedStatus(), svc.Weights, warningIsHealthy)
	in := sources.Instance{
		Address: ip.String(),
		Port:    uint32(svc.Port),
		Health:  health,
		Weight:  weight,
		Origin:  location(service, svc.ID),
	}
	in.Zone = firstOf(svc.Meta, zoneKeys, localityZone(svc.Locality), node.Meta, localityZone(node.Locality))
	in.Region = firstOf(svc.Meta, regionKeys, localityRegion(svc.Locality), node.Meta, localityRegion(node.Locality))
	if n := len(svc.Meta) + len(svc.Tags); n > 0 {
		in.Metadata = make(map[string]string, n)
		for k, v := range svc.Meta {
			in.Metadata[k] = v
		}
		for _, t := range svc.Tags {
			in.Metadata[TagKeyPrefix+t] = "true"
		}
	}
	return in, sources.Diagnostic{}, true
}

// healthAndWeight maps an aggregated check status and the service's weights.
func healthAndWeight(status string, w api.AgentWeights, warningIsHealthy bool) (sources.Health, uint32) {
	passing, warning := w.Passing, w.Warning
	if passing <= 0 && warning <= 0 { // no weights registered
		passing, warning = sources.DefaultWeight, sources.DefaultWeight
	}
	switch status {
	case api.HealthPassing:
		return sources.HealthHealthy, clampWeight(passing)
	case api.HealthWarning:
		if !warningIsHealthy || warning <= 0 {
			return sources.HealthUnhealthy, clampWeight(passing)
		}
		return sources.HealthHealthy, clampWeight(warning)
	default: // critical, maintenance, or a status this version does not know
		return sources.HealthUnhealthy, clampWeight(passing)
	}
}

func clampWeight(w int) uint32 {
	switch {
	case w < 1:
		return sources.DefaultWeight
	case w > sources.MaxWeight:
		return sources.MaxWeight
	}
	return uint32(w)
}

// firstOf returns the first non-empty value among: svcMeta[keys...],
// svcLocality, nodeMeta[keys...], nodeLocality. keys is shared by both maps.
func firstOf(svcMeta map[string]string, keys []string, svcLocality string, nodeMeta map[string]string, nodeLocality string) string {
	for _, k := range keys {
		if v := svcMeta[k]; v != "" {
			return v
		}
	}
	if svcLocality != "" {
		return svcLocality
	}
	for _, k := range keys {
		if v := nodeMeta[k]; v != "" {
			return v
		}
	}
	return nodeLocality
}

func localityZone(l *api.Locality) string {
	if l == nil {
		return ""
	}
	return l.Zone
}

func localityRegion(l *api.Locality) string {
	if l == nil {
		return ""
	}
	return l.Region
}
