package loadgen

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// The simulated proxies read the few fields of a resource that decide what
// they request next, straight from its encoding: a full decode of every
// resource would cost the machine more than the server under test.

// hcmTypeURL is the type of the HTTP connection manager's typed_config.
const hcmTypeURL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

// stringField reads string field num of an encoded message, stopping at
// the first occurrence.
func stringField(b []byte, num protowire.Number) (string, error) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "", protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return "", protowire.ParseError(l)
			}
			return string(v), nil
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return "", protowire.ParseError(l)
		}
		b = b[l:]
	}
	return "", fmt.Errorf("field %d missing", num)
}

// clusterEDS reads a Cluster's name (1) and, when its type (2) is EDS, the
// name Envoy requests its endpoints by: eds_cluster_config (3)
// service_name (2), or else the cluster's name. eds is empty for clusters
// of other types (a sidecar's static local cluster), which Envoy requests
// no endpoints for.
func clusterEDS(b []byte) (name, eds string, err error) {
	isEDS := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", "", protowire.ParseError(n)
			}
			isEDS = v == uint64(clusterv3.Cluster_EDS)
			b = b[n:]
			continue
		case (num == 1 || num == 3) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", "", protowire.ParseError(n)
			}
			if num == 1 {
				name = string(v)
			} else if s, err := stringField(v, 2); err == nil {
				eds = s
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	if name == "" {
		return "", "", fmt.Errorf("field 1 missing")
	}
	if !isEDS {
		return name, "", nil
	}
	if eds == "" {
		eds = name
	}
	return name, eds, nil
}

// listenerRoutes reads a Listener's name (1) and the route configuration
// names its HTTP connection managers fetch over RDS: filter_chains (3) and
// default_filter_chain (25) → filters (3) → typed_config (4) of the HCM
// type → rds (3) → route_config_name (2).
func listenerRoutes(b []byte) (name string, routes []string, err error) {
	hcmRoutes := func(v []byte) error { // an HttpConnectionManager
		return fields(v, func(num protowire.Number, v []byte) error {
			if num != 3 {
				return nil
			}
			rc, err := stringField(v, 2)
			if err != nil {
				return fmt.Errorf("rds: %w", err)
			}
			routes = append(routes, rc)
			return nil
		})
	}
	filter := func(v []byte) error { // a Filter
		return fields(v, func(num protowire.Number, v []byte) error {
			if num != 4 {
				return nil
			}
			var typeURL string
			var value []byte
			if err := fields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					typeURL = string(v)
				case 2:
					value = v
				}
				return nil
			}); err != nil {
				return err
			}
			if typeURL != hcmTypeURL {
				return nil
			}
			return hcmRoutes(value)
		})
	}
	err = fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			name = string(v)
		case 3, 25:
			return fields(v, func(num protowire.Number, v []byte) error {
				if num == 3 {
					return filter(v)
				}
				return nil
			})
		}
		return nil
	})
	if err == nil && name == "" {
		err = fmt.Errorf("field 1 missing")
	}
	return name, routes, err
}
