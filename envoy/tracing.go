package envoy

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// OpenTelemetryTracerName is Envoy's OpenTelemetry tracer.
const OpenTelemetryTracerName = "envoy.tracers.opentelemetry"

// Tracing describes what a connection manager traces and where it sends
// the spans.
type Tracing struct {
	// CollectorCluster is the cluster of the OTLP/gRPC collector.
	CollectorCluster string
	// ServiceName is the resource service.name of the spans.
	ServiceName string
	// SamplingPercent is the share of requests without a sampling
	// decision that are traced (0-100).
	SamplingPercent float64
	// Tags are literal custom tags added to every span.
	Tags []HeaderValue
}

// HCMTracing is a connection manager's tracing: the OpenTelemetry tracer
// exporting over OTLP/gRPC to the collector cluster.
func HCMTracing(t Tracing) *hcmv3.HttpConnectionManager_Tracing {
	otel := &tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: t.CollectorCluster},
		}},
		ServiceName: t.ServiceName,
	}
	tr := &hcmv3.HttpConnectionManager_Tracing{
		Provider: &tracev3.Tracing_Http{
			Name:       OpenTelemetryTracerName,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: MustAny(otel)},
		},
		RandomSampling: &typev3.Percent{Value: t.SamplingPercent},
	}
	for _, tag := range t.Tags {
		tr.CustomTags = append(tr.CustomTags, &tracingtypev3.CustomTag{
			Tag:  tag.Name,
			Type: &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: tag.Value}},
		})
	}
	return tr
}
