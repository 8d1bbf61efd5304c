package loadgen

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/translator"
)

// InboundPort is the application port every simulated sidecar declares
// (node metadata inbound_port), so that each gets an inbound listener.
const InboundPort = 8080

// Topology says who the simulated proxies are and what each may see.
//
// With Groups 0 every proxy is in one group, as a plain Envoy is: node
// cluster "load", no metadata, the whole mesh.
//
// With Groups G, proxy i is a sidecar of service i mod G: its node.cluster
// is that service's name and its metadata says role sidecar and
// inbound_port InboundPort. Each service then is one proxy group.
//
// With Dependencies D as well, service s depends on the D services before
// it, wrapping around: s-1, s-2, ..., s-D modulo Services. Its sidecars see
// only those (the server learns this from the policy files WritePolicies
// writes). The changed service, svc-0000, is thus a dependency of svc-0001
// ... svc-D, whose sidecars are the proxies that see the change.
type Topology struct {
	Mesh
	Groups, Dependencies int
}

// Validate checks the topology against its mesh.
func (t Topology) Validate() error {
	switch {
	case t.Groups < 0 || t.Groups > 0 && t.Groups > t.Services:
		return fmt.Errorf("groups: %d is not in 0-%d (the number of services)", t.Groups, t.Services)
	case t.Dependencies < 0 || t.Dependencies > 0 && t.Dependencies >= t.Services:
		return fmt.Errorf("dependencies: %d is not in 0-%d (a service cannot depend on itself)", t.Dependencies, max(t.Services-1, 0))
	case t.Dependencies > 0 && t.Groups == 0:
		return fmt.Errorf("dependencies: %d needs groups: only sidecars of a service have dependencies", t.Dependencies)
	}
	return nil
}

// Service is the index of the service proxy i is a sidecar of; false with
// Groups 0.
func (t Topology) Service(proxy int) (int, bool) {
	if t.Groups <= 0 {
		return 0, false
	}
	return proxy % t.Groups, true
}

// DependenciesOf lists the services service s depends on, in ascending
// order; nil when its sidecars see the whole mesh.
func (t Topology) DependenciesOf(s int) []int {
	if t.Dependencies <= 0 {
		return nil
	}
	out := make([]int, 0, t.Dependencies)
	for k := 1; k <= t.Dependencies; k++ {
		out = append(out, ((s-k)%t.Services+t.Services)%t.Services)
	}
	sort.Ints(out)
	return out
}

// Sees reports whether proxy i receives the config of service s.
func (t Topology) Sees(proxy, s int) bool {
	own, ok := t.Service(proxy)
	if !ok || t.Dependencies <= 0 {
		return true
	}
	// s depends on s-1 ... s-D: own sees s when own-s is in 1..D (mod Services).
	d := ((own-s)%t.Services + t.Services) % t.Services
	return d >= 1 && d <= t.Dependencies
}

// Affected reports whether proxy i sees the change Watch describes.
func (t Topology) Affected(proxy int) bool { return t.Sees(proxy, watchedService) }

// Node is the node proxy i sends, with id as its node.id.
func (t Topology) Node(id string, proxy int) *corev3.Node {
	s, ok := t.Service(proxy)
	if !ok {
		return &corev3.Node{Id: id, Cluster: "load", UserAgentName: "envoy"}
	}
	return &corev3.Node{
		Id: id, Cluster: t.ServiceName(s), UserAgentName: "envoy",
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			translator.MetaRole:        structpb.NewStringValue(translator.RoleSidecar),
			translator.MetaInboundPort: structpb.NewNumberValue(InboundPort),
		}},
	}
}

// PolicyFile is the ServicePolicy of service s, naming its dependencies.
func (t Topology) PolicyFile(s int) []byte {
	deps := t.DependenciesOf(s)
	names := make([]string, len(deps))
	for i, d := range deps {
		names[i] = t.ServiceName(d)
	}
	return fmt.Appendf(nil, "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  dependencies: [%s]\n",
		policy.APIVersion, policy.KindServicePolicy, t.ServiceName(s), strings.Join(names, ", "))
}

// WritePolicies writes one policy file per proxy group, dir/svc-NNNN.yaml,
// each a ServicePolicy with the service's dependencies. Each file is
// written to a hidden temporary name first and renamed, so a server
// watching dir never reads half a file.
func (t Topology) WritePolicies(dir string) error {
	if t.Groups <= 0 || t.Dependencies <= 0 {
		return fmt.Errorf("policy files need groups and dependencies (got %d and %d)", t.Groups, t.Dependencies)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for s := range t.Groups {
		name := t.ServiceName(s) + ".yaml"
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, t.PolicyFile(s), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}
