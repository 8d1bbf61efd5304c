package translator_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	// The golden files render the Any-typed filter configs, so protojson must
	// be able to resolve their types. The envoy package links them already;
	// importing them here keeps the tests independent of that.
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out and delete the ones no input produces")

const (
	inDir  = "testdata/in"
	outDir = "testdata/out"
)

// goldenTypes are the resource types Translate emits, with the file suffix of
// their golden files.
var goldenTypes = func() []struct {
	typ  resource.Type
	name string
} {
	var out []struct {
		typ  resource.Type
		name string
	}
	for _, k := range envoy.Kinds {
		out = append(out, struct {
			typ  resource.Type
			name string
		}{k.Type, k.Files})
	}
	return out
}()

// goldenInput is the format of testdata/in/<case>.yaml.
type goldenInput struct {
	Proxy   translator.Proxy `json:"proxy"`
	Catalog sources.Catalog  `json:"catalog"`
	// Policies is the content of one policy file (YAML documents separated
	// by "---"), loaded with policy.Load as <case>.yaml#policies; empty
	// means no policy set (built-in defaults).
	Policies string `json:"policies,omitempty"`
}

type goldenCase struct {
	name  string
	path  string
	input translator.Input
}

// loadCases reads every input; each call decodes afresh, so callers may use
// two calls as two independent deep copies.
func loadCases(t *testing.T) []goldenCase {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(inDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no inputs in %s", inDir)
	}
	sort.Strings(paths)
	cases := make([]goldenCase, 0, len(paths))
	for _, p := range paths {
		cases = append(cases, goldenCase{
			name:  strings.TrimSuffix(filepath.Base(p), ".yaml"),
			path:  p,
			input: loadInput(t, p),
		})
	}
	return cases
}

func loadInput(t *testing.T, path string) translator.Input {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in goldenInput
	if err := yaml.UnmarshalStrict(data, &in); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if in.Proxy.Kind != translator.KindEnvoy && in.Proxy.Kind != translator.KindGRPC {
		t.Fatalf("%s: proxy.kind is %q, want envoy or grpc", path, in.Proxy.Kind)
	}
	var set *policy.Set
	if in.Policies != "" {
		var diags []sources.Diagnostic
		set, diags = policy.Load([]policy.File{{Name: path + "#policies", Data: []byte(in.Policies)}})
		if set == nil {
			t.Fatalf("%s: policies rejected: %v", path, diags)
		}
	}
	return translator.Input{Catalog: in.Catalog, Proxy: in.Proxy, Policy: set}
}

func translate(t *testing.T, in translator.Input) *translator.Result {
	t.Helper()
	res, err := translator.New().Translate(in)
	if err != nil {
		t.Fatalf("Translate() error: %v", err)
	}
	if res == nil || res.Resources == nil {
		t.Fatalf("Translate() returned no resources")
	}
	for typ := range res.Resources {
		known := false
		for _, g := range goldenTypes {
			known = known || g.typ == typ
		}
		if !known {
			t.Errorf("Translate() emitted unexpected resource type %s", typ)
		}
	}
	return res
}

// render serialises resources as a YAML list: protojson for fidelity to the
// xDS JSON form, then JSON→YAML, which also normalises protojson's
// deliberately unstable whitespace.
func render(t *testing.T, rs []types.Resource) []byte {
	t.Helper()
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		b, err := protojson.MarshalOptions{Multiline: false}.Marshal(r)
		if err != nil {
			t.Fatalf("protojson: %v", err)
		}
		parts = append(parts, string(b))
	}
	y, err := yaml.JSONToYAML([]byte("[" + strings.Join(parts, ",") + "]"))
	if err != nil {
		t.Fatalf("JSONToYAML: %v", err)
	}
	return y
}

func TestTranslateGolden(t *testing.T) {
	cases := loadCases(t)
	produced := map[string]bool{}
	ran := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ran++
			res := translate(t, c.input)
			for _, g := range goldenTypes {
				path := filepath.Join(outDir, c.name+"."+g.name+".yaml")
				produced[filepath.Base(path)] = true
				got := render(t, res.Resources[g.typ])
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("%v (run go test ./translator/ -run TestTranslateGolden -update)", err)
					continue
				}
				if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")); diff != "" {
					t.Errorf("%s mismatch (-golden +got); run with -update if intended:\n%s", path, diff)
				}
			}
		})
	}
	// Only a full run knows which golden files are stale.
	if ran != len(cases) {
		return
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if produced[e.Name()] {
			continue
		}
		path := filepath.Join(outDir, e.Name())
		if *update {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			t.Logf("removed stale golden file %s", path)
		} else {
			t.Errorf("stale golden file %s: no input produces it (run with -update to delete it)", path)
		}
	}
}

// TestTranslateValid checks that every emitted resource, and every Any-typed
// config nested in it, passes Envoy's proto validation, that each type is
// sorted by name, and that the result builds into a consistent snapshot.
func TestTranslateValid(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			for _, g := range goldenTypes {
				rs, ok := res.Resources[g.typ]
				if !ok {
					t.Errorf("result has no entry for %s", g.name)
				}
				var names []string
				for _, r := range rs {
					name := cache.GetResourceName(r)
					if name == "" {
						t.Errorf("%s: resource without a name: %v", g.name, r)
					}
					names = append(names, name)
					validateDeep(t, g.name+"/"+name, r)
				}
				if !sort.StringsAreSorted(names) {
					t.Errorf("%s not sorted by name: %v", g.name, names)
				}
				for i := 1; i < len(names); i++ {
					if names[i] == names[i-1] {
						t.Errorf("%s: name %q emitted twice", g.name, names[i])
					}
				}
			}
			snap, err := snapshot.Build(res.Resources)
			if err != nil {
				t.Fatalf("snapshot.Build() error: %v", err)
			}
			// go-control-plane's own check does not follow API listeners,
			// so it only applies to Envoy results.
			if c.input.Proxy.Kind == translator.KindEnvoy {
				if err := snap.Consistent(); err != nil {
					t.Errorf("snapshot not consistent: %v", err)
				}
			}
			versions := snapshot.Versions(snap)
			for _, g := range goldenTypes {
				if versions[g.typ] == "" {
					t.Errorf("snapshot has no version for %s", g.name)
				}
			}
		})
	}
}

type validator interface{ ValidateAll() error }

// validateDeep runs ValidateAll on m and on every message packed in an Any
// inside it, recursively.
func validateDeep(t *testing.T, where string, m proto.Message) {
	t.Helper()
	v, ok := m.(validator)
	if !ok {
		t.Errorf("%s: %T has no ValidateAll", where, m)
		return
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	forEachAny(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("%s: cannot unpack %s: %v", where, a.GetTypeUrl(), err)
			return
		}
		validateDeep(t, where+"/"+string(inner.ProtoReflect().Descriptor().Name()), inner)
	})
}

func forEachAny(m protoreflect.Message, visit func(*anypb.Any)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		visit(a)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				forEachAny(v.List().Get(i).Message(), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				forEachAny(mv.Message(), visit)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			forEachAny(v.Message(), visit)
		}
		return true
	})
}

// TestTranslateEndpoints checks the load assignment rules on every case
// independently of the goldens: one assignment per cluster, localities sorted
// by region then zone, each weighted by the sum of its endpoints' weights, and
// each endpoint's health mapped from the catalog.
func TestTranslateEndpoints(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			// The clusters of services; an Envoy also has the local
			// application's and the tracing collector's. Subsets'
			// clusters are checked in TestTranslateSubsets.
			var clusters []types.Resource
			for _, r := range res.Resources[resource.ClusterType] {
				if name := cache.GetResourceName(r); name != translator.TracingClusterName && !strings.HasPrefix(name, "inbound|") && !strings.Contains(name, "|") {
					clusters = append(clusters, r)
				}
			}
			var endpoints []types.Resource
			for _, r := range res.Resources[resource.EndpointType] {
				if !strings.Contains(cache.GetResourceName(r), "|") {
					endpoints = append(endpoints, r)
				}
			}
			if len(clusters) != len(c.input.Catalog.Services) || len(endpoints) != len(clusters) {
				t.Fatalf("%d clusters and %d assignments for %d services", len(clusters), len(endpoints), len(c.input.Catalog.Services))
			}
			byName := map[string]sources.CatalogService{}
			for _, s := range c.input.Catalog.Services {
				byName[s.Name] = s
			}
			for i, r := range endpoints {
				cla := r.(*endpointv3.ClusterLoadAssignment)
				cl := clusters[i].(*clusterv3.Cluster)
				if cl.GetEdsClusterConfig().GetServiceName() != cla.GetClusterName() {
					t.Errorf("cluster %q points at %q, assignment is %q", cl.GetName(), cl.GetEdsClusterConfig().GetServiceName(), cla.GetClusterName())
				}
				svc, ok := byName[cla.GetClusterName()]
				if !ok {
					t.Fatalf("assignment %q for no service", cla.GetClusterName())
				}
				n := 0
				var prev [2]string
				for j, lle := range cla.GetEndpoints() {
					key := [2]string{lle.GetLocality().GetRegion(), lle.GetLocality().GetZone()}
					if j > 0 && (key[0] < prev[0] || key[0] == prev[0] && key[1] <= prev[1]) {
						t.Errorf("%s: localities not sorted/unique: %v after %v", svc.Name, key, prev)
					}
					prev = key
					var sum uint32
					for _, lbe := range lle.GetLbEndpoints() {
						if h := lbe.GetHealthStatus(); h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN {
							sum += lbe.GetLoadBalancingWeight().GetValue()
						}
						sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
						var ep *sources.Endpoint
						for k := range svc.Endpoints {
							if svc.Endpoints[k].Address == sa.GetAddress() && svc.Endpoints[k].Port == sa.GetPortValue() {
								ep = &svc.Endpoints[k]
							}
						}
						if ep == nil {
							t.Errorf("%s: endpoint %s:%d not in the catalog", svc.Name, sa.GetAddress(), sa.GetPortValue())
							continue
						}
						n++
						if ep.Region != key[0] || ep.Zone != key[1] {
							t.Errorf("%s: endpoint %s in locality %v, want %s/%s", svc.Name, ep.Key(), key, ep.Region, ep.Zone)
						}
						wantW := ep.Weight
						if wantW == 0 {
							wantW = 1
						}
						if got := lbe.GetLoadBalancingWeight().GetValue(); got != wantW {
							t.Errorf("%s: endpoint %s weight %d, want %d", svc.Name, ep.Key(), got, wantW)
						}
						if got, want := lbe.GetHealthStatus().String(), strings.ToUpper(ep.Health.String()); got != want {
							t.Errorf("%s: endpoint %s health %s, want %s", svc.Name, ep.Key(), got, want)
						}
					}
					sum = max(sum, 1)
					// Distributing localities weighs them by policy
					// (TestDistributeWeights).
					lp := c.input.Policy.Resolve(svc.Name).Locality
					distributed := lp != nil && lp.Mode == policy.LocalityDistribute && c.input.Proxy.Locality.Known()
					if got := lle.GetLoadBalancingWeight().GetValue(); got != sum && !distributed {
						t.Errorf("%s: locality %v weight %d, want the sum of its serving endpoints' weights (min 1) %d", svc.Name, key, got, sum)
					}
				}
				if n != len(svc.Endpoints) {
					t.Errorf("%s: %d endpoints emitted, catalog has %d", svc.Name, n, len(svc.Endpoints))
				}
			}
		})
	}
}

// TestTranslateDoesNotModifyInput translates every case (also with its
// services reversed, which makes Translate sort a copy) and compares the input
// with an independently decoded copy.
func TestTranslateDoesNotModifyInput(t *testing.T) {
	for _, c := range loadCases(t) {
		for _, reversed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reversed=%v", c.name, reversed), func(t *testing.T) {
				in, want := loadInput(t, c.path), loadInput(t, c.path)
				if reversed {
					reverse(in.Catalog.Services)
					reverse(want.Catalog.Services)
				}
				translate(t, in)
				if diff := cmp.Diff(want, in, comparePolicySets); diff != "" {
					t.Errorf("Translate modified its input (-before +after):\n%s", diff)
				}
			})
		}
	}
}

// comparePolicySets compares policy sets by their documents (a Set is
// immutable, and its fields are unexported).
var comparePolicySets = cmp.Comparer(func(a, b *policy.Set) bool {
	return cmp.Equal(a.Documents(), b.Documents(), cmpopts.IgnoreUnexported(policy.Document{}))
})

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

func TestTranslateDuplicateService(t *testing.T) {
	dup := []sources.CatalogService{
		{Name: "a"}, {Name: "b", Endpoints: []sources.Endpoint{{Instance: sources.Instance{Address: "10.0.0.1", Port: 80, Weight: 1}}}}, {Name: "a"},
	}
	for _, kind := range []translator.ProxyKind{translator.KindEnvoy, translator.KindGRPC} {
		res, err := translator.New().Translate(translator.Input{
			Catalog: sources.Catalog{Services: dup},
			Proxy:   translator.Proxy{Kind: kind},
		})
		if err == nil || !strings.Contains(err.Error(), `service "a" listed twice`) {
			t.Errorf("%s: Translate() = %v, %v; want a duplicate-service error", kind, res, err)
		}
	}
}

func TestTranslatorOptions(t *testing.T) {
	tr := &translator.Translator{OutboundAddress: "::", OutboundPort: 10000, ConnectTimeout: 250 * time.Millisecond}
	in := loadInput(t, filepath.Join(inDir, "envoy-sidecar-readme.yaml"))
	res, err := tr.Translate(in)
	if err != nil {
		t.Fatal(err)
	}
	sa := res.Resources[resource.ListenerType][0].(*listenerv3.Listener).GetAddress().GetSocketAddress()
	if sa.GetAddress() != "::" || sa.GetPortValue() != 10000 {
		t.Errorf("listener address = %s:%d, want [::]:10000", sa.GetAddress(), sa.GetPortValue())
	}
	if got := res.Resources[resource.ClusterType][0].(*clusterv3.Cluster).GetConnectTimeout().AsDuration(); got != 250*time.Millisecond {
		t.Errorf("connect timeout = %v, want 250ms", got)
	}
	// The proxy's own outbound settings win over the translator's.
	in.Proxy.OutboundAddress, in.Proxy.OutboundPort = "127.0.0.2", 20000
	res, err = tr.Translate(in)
	if err != nil {
		t.Fatal(err)
	}
	sa = res.Resources[resource.ListenerType][0].(*listenerv3.Listener).GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.2" || sa.GetPortValue() != 20000 {
		t.Errorf("listener address = %s:%d, want 127.0.0.2:20000", sa.GetAddress(), sa.GetPortValue())
	}
}
