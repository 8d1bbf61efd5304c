package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// Build turns translated resources into a go-control-plane snapshot whose
// version for each type is a content hash of that type's resources. Equal
// resources give equal versions on every replica and after every restart, and
// a type whose resources did not change keeps its version, so it is not pushed.
func Build(resources map[resource.Type][]types.Resource) (*cache.Snapshot, error) {
	snap := &cache.Snapshot{}
	for typ, items := range resources {
		idx := cache.GetResponseType(typ)
		if idx == types.UnknownType {
			return nil, fmt.Errorf("building snapshot: unknown resource type %q", typ)
		}
		version, err := contentVersion(items)
		if err != nil {
			return nil, fmt.Errorf("building snapshot: hashing %s: %w", typ, err)
		}
		snap.Resources[idx] = cache.NewResources(version, items)
	}
	if err := CheckReferences(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// contentVersion hashes the resources in name order; each is length-prefixed
// so that different splits of the same bytes cannot collide.
func contentVersion(items []types.Resource) (string, error) {
	type named struct {
		name string
		res  types.Resource
	}
	sorted := make([]named, len(items))
	for i, r := range items {
		sorted[i] = named{cache.GetResourceName(r), r}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	h := sha256.New()
	var lenbuf [8]byte
	for _, n := range sorted {
		b, err := deterministic.Marshal(n.res)
		if err != nil {
			return "", fmt.Errorf("marshalling %q: %w", n.name, err)
		}
		for _, chunk := range [][]byte{[]byte(n.name), b} {
			putLen(lenbuf[:], len(chunk))
			h.Write(lenbuf[:])
			h.Write(chunk)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func putLen(b []byte, n int) {
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
}

// CheckReferences verifies that every cluster's EDS name and every listener's
// route configuration (including gRPC's API listeners, which go-control-plane's
// Consistent() does not follow) exist in the snapshot, and that there are no
// endpoints or routes nothing refers to. A client that got a dangling
// reference would wait forever for the missing resource.
func CheckReferences(snap *cache.Snapshot) error {
	want := map[resource.Type]map[string]bool{resource.EndpointType: {}, resource.RouteType: {}}
	for name, r := range snap.GetResources(resource.ClusterType) {
		c := r.(*clusterv3.Cluster)
		if c.GetType() == clusterv3.Cluster_EDS {
			eds := c.GetEdsClusterConfig().GetServiceName()
			if eds == "" {
				eds = name
			}
			want[resource.EndpointType][eds] = true
		}
	}
	for name, r := range snap.GetResources(resource.ListenerType) {
		routes, err := listenerRoutes(r.(*listenerv3.Listener))
		if err != nil {
			return fmt.Errorf("listener %q: %w", name, err)
		}
		for _, rn := range routes {
			want[resource.RouteType][rn] = true
		}
	}
	for typ, names := range want {
		have := snap.GetResources(typ)
		for n := range names {
			if _, ok := have[n]; !ok {
				return fmt.Errorf("inconsistent snapshot: %s %q is referenced but missing", shortType(typ), n)
			}
		}
		for n := range have {
			if !names[n] {
				return fmt.Errorf("inconsistent snapshot: %s %q is not referenced by anything", shortType(typ), n)
			}
		}
	}
	return nil
}

func listenerRoutes(l *listenerv3.Listener) ([]string, error) {
	var out []string
	addHCM := func(hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil {
			out = append(out, rds.GetRouteConfigName())
		}
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		hcm := &hcmv3.HttpConnectionManager{}
		if err := api.UnmarshalTo(hcm); err != nil {
			return nil, fmt.Errorf("api listener: %w", err)
		}
		addHCM(hcm)
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || !tc.MessageIs(&hcmv3.HttpConnectionManager{}) {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(hcm); err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			addHCM(hcm)
		}
	}
	return out, nil
}

func shortType(typ resource.Type) string {
	switch typ {
	case resource.EndpointType:
		return "ClusterLoadAssignment"
	case resource.RouteType:
		return "RouteConfiguration"
	}
	return typ
}

// Versions reports the version of each resource type in snap, for the admin
// API and for change detection.
func Versions(snap *cache.Snapshot) map[resource.Type]string {
	out := map[resource.Type]string{}
	for i := types.ResponseType(0); i < types.UnknownType; i++ {
		if snap.Resources[i].Version == "" {
			continue
		}
		url, err := cache.GetResponseTypeURL(i)
		if err != nil {
			continue
		}
		out[url] = snap.Resources[i].Version
	}
	return out
}
