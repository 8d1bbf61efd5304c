package translator

import (
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// TracingClusterName is the cluster of the OpenTelemetry collector. "|"
// cannot occur in a service name, so it never clashes with a service's
// cluster.
const TracingClusterName = "sluice|otel-collector"

// UnknownServiceName is the spans' service.name for a proxy that names no
// service (OpenTelemetry's convention for an unknown service).
const UnknownServiceName = "unknown_service:envoy"

// tracing returns the tracing of an Envoy's connection managers and the
// cluster of the collector, or nils when tracing is off or the collector
// cannot be reached (a catalog service named without a port that is not in
// the catalog; the policy set warns about it). pol is the resolved policy
// of the proxy's own service: a ServicePolicy may set the sampling of its
// service's proxies.
func (t *Translator) tracing(services []sources.CatalogService, p Proxy, pol policy.Resolved) (*hcmv3.HttpConnectionManager_Tracing, *clusterv3.Cluster) {
	tr := pol.Tracing
	if !tr.Enabled {
		return nil, nil
	}
	cluster := t.collectorCluster(services, tr)
	if cluster == nil {
		return nil, nil
	}
	name := p.Service
	if name == "" {
		name = UnknownServiceName
	}
	var tags []envoy.HeaderValue
	for _, tag := range tr.Tags {
		tags = append(tags, envoy.HeaderValue{Name: tag.Name, Value: tag.Value})
	}
	return envoy.HCMTracing(envoy.Tracing{
		CollectorCluster: TracingClusterName,
		ServiceName:      name,
		SamplingPercent:  tr.SamplingPercent,
		Tags:             tags,
	}), cluster
}

// collectorCluster is an HTTP/2 cluster for the collector: for a catalog
// service named without a port, an EDS cluster fed by the service's own
// endpoints; for a catalog service with a port, its instances' addresses
// on that port; otherwise the host and port as written (STATIC for an IP
// address, STRICT_DNS for a name).
func (t *Translator) collectorCluster(services []sources.CatalogService, tr policy.Tracing) *clusterv3.Cluster {
	var svc *sources.CatalogService
	for i := range services {
		if services[i].Name == tr.CollectorHost {
			svc = &services[i]
			break
		}
	}
	switch {
	case svc != nil && tr.CollectorPort == 0:
		c := envoy.EDSCluster(TracingClusterName, t.ConnectTimeout)
		c.EdsClusterConfig.ServiceName = ClusterName(svc.Name)
		return envoy.WithUpstream(c, envoy.UpstreamHTTP2)
	case svc != nil:
		var eps []envoy.Endpoint
		for _, l := range localities(svc.Endpoints) {
			for _, ep := range l.Endpoints {
				ep.Port = tr.CollectorPort
				eps = append(eps, ep)
			}
		}
		return envoy.AddressCluster(TracingClusterName, t.ConnectTimeout, discoveryType(eps), eps, envoy.UpstreamHTTP2)
	case tr.CollectorPort == 0:
		return nil
	}
	eps := []envoy.Endpoint{{Address: tr.CollectorHost, Port: tr.CollectorPort}}
	return envoy.AddressCluster(TracingClusterName, t.ConnectTimeout, discoveryType(eps), eps, envoy.UpstreamHTTP2)
}

// discoveryType is STATIC when every address is an IP address, else
// STRICT_DNS (Envoy resolves the names).
func discoveryType(eps []envoy.Endpoint) clusterv3.Cluster_DiscoveryType {
	for _, ep := range eps {
		if _, err := netip.ParseAddr(ep.Address); err != nil {
			return clusterv3.Cluster_STRICT_DNS
		}
	}
	return clusterv3.Cluster_STATIC
}
