package translator_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// invalidCatalog has a service whose load assignment cannot be valid: an
// instance without an address (no registry source lets one through, so
// the catalog is built by hand), next to a valid one.
func invalidCatalog() sources.Catalog {
	return sources.Catalog{Services: []sources.CatalogService{
		{Name: "good", Endpoints: []sources.Endpoint{{Instance: sources.Instance{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy}}}},
		{Name: "hollow", Endpoints: []sources.Endpoint{{Instance: sources.Instance{Address: "", Port: 80, Health: sources.HealthHealthy}}}},
	}}
}

// TestInvalidServiceIsLeftOut: a service whose resources fail validation is
// left out whole (cluster, load assignment, virtual host, gRPC listeners)
// with an error diagnostic naming it; every other service is served, the
// output passes validation, and Incremental reports the same as Translate.
func TestInvalidServiceIsLeftOut(t *testing.T) {
	for _, p := range []translator.Proxy{
		{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080},
		{Kind: translator.KindGRPC},
	} {
		in := translator.Input{Catalog: invalidCatalog(), Proxy: p}
		res, err := translator.New().Translate(in)
		if err != nil {
			t.Fatal(err)
		}
		for typ, rs := range res.Resources {
			for _, r := range rs {
				if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
					t.Errorf("%s: emitted %s %s is invalid: %v", p.Key(), typ, cache.GetResourceName(r), err)
				}
				if strings.Contains(cache.GetResourceName(r), "hollow") {
					t.Errorf("%s: the invalid service's %s %s was emitted", p.Key(), typ, cache.GetResourceName(r))
				}
			}
		}
		if named(res, resource.ClusterType, "good") == nil {
			t.Errorf("%s: the valid service was left out too", p.Key())
		}
		if len(res.Diagnostics) != 1 {
			t.Fatalf("%s: diagnostics %v, want one", p.Key(), res.Diagnostics)
		}
		d := res.Diagnostics[0]
		if d.Severity != sources.SeverityError || d.Source != translator.DiagnosticSource || !strings.Contains(d.Message, "service hollow is not served") || d.Location != "built-in defaults" {
			t.Errorf("%s: diagnostic %+v", p.Key(), d)
		}

		inc := translator.New().NewShared().NewIncremental(p)
		got, err := inc.Translate(in.Catalog, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(marshalResult(t, got), marshalResult(t, res)) {
			t.Errorf("%s: Incremental differs from Translate:\n%s\n%s", p.Key(), marshalResult(t, got), marshalResult(t, res))
		}
	}
}

// TestMissingTracingCollectorIsReported: tracing whose collector is a
// service not in the catalog (and has no port to reach it by) is a
// warning naming the policy and the field, and the proxies are served
// without tracing meanwhile.
func TestMissingTracingCollectorIsReported(t *testing.T) {
	set, diags := policy.Load([]policy.File{{Name: "mesh.yaml", Data: []byte(
		"apiVersion: sluice.dev/v1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec:\n  tracing: {collector: otel}\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	cat := sources.Catalog{Services: invalidCatalog().Services[:1]}
	p := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "good", InboundPort: 8080}
	res, err := translator.New().Translate(translator.Input{Catalog: cat, Policy: set, Proxy: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diagnostics) != 1 {
		t.Fatalf("diagnostics %v, want one", res.Diagnostics)
	}
	d := res.Diagnostics[0]
	if d.Severity != sources.SeverityWarning || d.Field != "spec.tracing.collector" || !strings.HasPrefix(d.Location, "mesh.yaml:") || !strings.Contains(d.Message, `"otel"`) {
		t.Errorf("diagnostic %+v", d)
	}
	if named(res, resource.ClusterType, translator.TracingClusterName) != nil {
		t.Error("a collector cluster for a collector that is nowhere")
	}
	got, err := translator.New().NewShared().NewIncremental(p).Translate(cat, set)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(marshalResult(t, got), marshalResult(t, res)) {
		t.Errorf("Incremental differs from Translate")
	}
}
