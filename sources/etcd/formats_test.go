package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
)

// The framework layouts below are written the way the frameworks' own code
// writes them, checked against their sources:
//
// go-kratos (github.com/go-kratos/kratos):
//   - contrib/registry/etcd/registry.go: New defaults the namespace to
//     "/microservices"; registerKey is
//     fmt.Sprintf("%s/%s/%s", namespace, service.Name, service.ID);
//     registerWithKV Grants a lease of the TTL (default 15s) and Puts the
//     value with clientv3.WithLease; heartBeat keeps it alive.
//   - contrib/registry/etcd/service.go: the value is json.Marshal of the
//     *registry.ServiceInstance.
//   - registry/registry.go: ServiceInstance is {ID `json:"id"`, Name
//     `json:"name"`, Version `json:"version"`, Metadata map[string]string
//     `json:"metadata"`, Endpoints []string `json:"endpoints"`}, endpoints
//     like "http://127.0.0.1:8000?isSecure=false", "grpc://127.0.0.1:9000".
//   - app.go: buildInstance fills Endpoints with each server's Endpoint()
//     URL .String() (an empty slice when there is none; Metadata may be nil);
//     the ID defaults to uuid.NewUUID().
//   - transport/grpc/server.go: Endpoint() is url.URL{Scheme: "grpc", Host:
//     addr}; newer versions build it with internal/endpoint.NewEndpoint,
//     which marks TLS as the query "isSecure=true" (internal/endpoint/endpoint.go).
//   - selector/default_node.go: the client-side selector takes an
//     instance's initial weight from Metadata["weight"].
//   - contrib/registry/etcd/watcher.go: discovery lists
//     "<namespace>/<name>" with WithPrefix and keeps only instances whose
//     JSON name equals the watched name.
//
// go-zero (github.com/zeromicro/go-zero):
//   - core/discov/publisher.go: register Grants a lease of TimeToLive (10s)
//     and Puts makeEtcdKey(key, id) with the lease, id being the lease id
//     unless WithId gave one; keepAliveAsync keeps the lease alive.
//   - core/discov/clients.go: makeEtcdKey is fmt.Sprintf("%s%c%d", key,
//     internal.Delimiter, id), Delimiter being '/' (core/discov/internal/vars.go).
//   - zrpc/internal/rpcpubserver.go: the value is figureOutListenOn(ListenOn):
//     "host:port", the host replaced by $POD_IP or the internal IP when
//     ListenOn's is empty or 0.0.0.0 (and left as it was when neither is found).
//   - core/discov/internal/registry.go: subscribers Get makeKeyPrefix(key)
//     (key + "/") WithPrefix and Watch it from the listed revision + 1 with
//     WithRequireLeader, re-listing on ErrCompacted.

// kratosServiceInstance is go-kratos' registry.ServiceInstance, field for
// field with its JSON tags.
type kratosServiceInstance struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	Metadata  map[string]string `json:"metadata"`
	Endpoints []string          `json:"endpoints"`
}

// kratosRegister writes si the way kratos' etcd Registry.Register does.
func kratosRegister(t *testing.T, cli *clientv3.Client, namespace string, si *kratosServiceInstance) string {
	t.Helper()
	key := fmt.Sprintf("%s/%s/%s", namespace, si.Name, si.ID)
	data, err := json.Marshal(si)
	if err != nil {
		t.Fatal(err)
	}
	grant, err := cli.Grant(context.Background(), 15)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, key, string(data), clientv3.WithLease(grant.ID))
	return key
}

// goZeroPublish writes a registration the way go-zero's discov.Publisher
// does, returning the key. id 0 means the lease id (the default).
func goZeroPublish(t *testing.T, cli *clientv3.Client, key, listenOn string, id int64) string {
	t.Helper()
	grant, err := cli.Grant(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if id == 0 {
		id = int64(grant.ID)
	}
	fullKey := fmt.Sprintf("%s%c%d", key, '/', id)
	put(t, cli, fullKey, listenOn, clientv3.WithLease(grant.ID))
	return fullKey
}

func kratosEndpointURL(scheme, host string, secure bool) string {
	u := &url.URL{Scheme: scheme, Host: host}
	if secure {
		u.RawQuery = "isSecure=true"
	}
	return u.String()
}

// TestFrameworkLayouts runs one source per layout (and per prefix) against
// keys written exactly as go-kratos and go-zero write them.
func TestFrameworkLayouts(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())

	// go-kratos, default namespace.
	hello1 := kratosRegister(t, cli, "/microservices", &kratosServiceInstance{
		ID: "6ba7b810-9dad-11d1-80b4-00c04fd430c8", Name: "helloworld", Version: "v1.2.0",
		// Metadata nil, as with an App without kratos.Metadata.
		Endpoints: []string{kratosEndpointURL("http", "10.0.0.1:8000", false), kratosEndpointURL("grpc", "10.0.0.1:9000", false)},
	})
	hello2 := kratosRegister(t, cli, "/microservices", &kratosServiceInstance{
		ID: "6ba7b811-9dad-11d1-80b4-00c04fd430c8", Name: "helloworld", Version: "v1.2.0",
		Metadata:  map[string]string{"weight": "30", "env": "prod"},
		Endpoints: []string{kratosEndpointURL("grpc", "10.0.0.2:9000", true)},
	})
	gateway := kratosRegister(t, cli, "/microservices", &kratosServiceInstance{
		ID: "gw-1", Name: "gateway", Version: "",
		Metadata:  map[string]string{},
		Endpoints: []string{kratosEndpointURL("http", "10.0.0.3:8000", false)},
	})
	noEndpoints := kratosRegister(t, cli, "/microservices", &kratosServiceInstance{
		ID: "worker-1", Name: "worker", Endpoints: []string{},
	})
	// go-kratos with its Namespace option.
	custom := kratosRegister(t, cli, "/prod/kratos", &kratosServiceInstance{
		ID: "a1", Name: "billing", Version: "v3",
		Endpoints: []string{kratosEndpointURL("grpc", "10.0.9.1:9000", false)},
	})

	// go-zero at the keyspace root, as zrpc servers with Etcd.Key publish.
	user1 := goZeroPublish(t, cli, "user.rpc", "10.0.1.1:8080", 0)
	user2 := goZeroPublish(t, cli, "user.rpc", "10.0.1.2:8080", 7) // Etcd.ID set
	// The same process re-registered before its old lease expired.
	userDup := goZeroPublish(t, cli, "user.rpc", "10.0.1.1:8080", 0)
	order := goZeroPublish(t, cli, "order.rpc", "10.0.1.3:9090", 0)
	// figureOutListenOn found no IP and left ListenOn as it was.
	noIP := goZeroPublish(t, cli, "pay.rpc", "0.0.0.0:8080", 0)
	// go-zero with its key under a path.
	zeroCustom := goZeroPublish(t, cli, "/gz/stock.rpc", "10.0.2.1:8080", 0)
	put(t, cli, "/gz/not-a-registration", "x")

	type run struct {
		name string
		cfg  Config
		want []string // service/host:port
		diag map[string]string
	}
	runs := []run{
		{
			name: "kratos",
			cfg:  Config{Format: FormatKratos},
			want: []string{"gateway/10.0.0.3:8000", "helloworld/10.0.0.1:9000", "helloworld/10.0.0.2:9000"},
			diag: map[string]string{noEndpoints: "no grpc:// or http:// endpoint"},
		},
		{
			name: "kratos-namespace",
			cfg:  Config{Format: FormatKratos, Prefix: "/prod/kratos"},
			want: []string{"billing/10.0.9.1:9000"},
		},
		{
			name: "gozero",
			cfg:  Config{Format: FormatGoZero},
			want: []string{"order.rpc/10.0.1.3:9090", "user.rpc/10.0.1.1:8080", "user.rpc/10.0.1.2:8080"},
			diag: map[string]string{
				noIP:       "unspecified address",
				userDup:    "already has an instance at 10.0.1.1:8080",
				zeroCustom: `set the prefix to "/gz"`,
			},
		},
		{
			name: "gozero-prefix",
			cfg:  Config{Format: FormatGoZero, Prefix: "/gz"},
			want: []string{"stock.rpc/10.0.2.1:8080"},
			diag: map[string]string{"/gz/not-a-registration": "does not match the layout"},
		},
	}
	states := map[string]*sources.State{}
	for _, r := range runs {
		r.cfg.Endpoints = e.Endpoints()
		rec := startSource(t, r.cfg, nil)
		_, st := rec.nextState(t, 0)
		states[r.name] = st
		if got := endpointsOf(st); !sameStrings(got, r.want) {
			t.Errorf("%s: endpoints = %v, want %v", r.name, got, r.want)
		}
		got := map[string]string{}
		for _, d := range st.Diagnostics {
			got[d.Location] = d.Message
		}
		for key, msg := range r.diag {
			if !strings.Contains(got[key], msg) {
				t.Errorf("%s: diagnostic for %s = %q, want one containing %q", r.name, key, got[key], msg)
			}
		}
		if len(got) != len(r.diag) {
			t.Errorf("%s: diagnostics %v, want exactly the keys of %v", r.name, st.Diagnostics, r.diag)
		}
	}

	kratos := states["kratos"]
	wantHello := []sources.Instance{
		{Address: "10.0.0.1", Port: 9000, Health: sources.HealthHealthy, Weight: 1,
			Metadata: map[string]string{"version": "v1.2.0"}, Source: "etcd", Origin: hello1},
		{Address: "10.0.0.2", Port: 9000, Health: sources.HealthHealthy, Weight: 30,
			Metadata: map[string]string{"version": "v1.2.0", "weight": "30", "env": "prod"}, Source: "etcd", Origin: hello2},
	}
	if diff := cmp.Diff(wantHello, kratos.Services[1].Instances); diff != "" {
		t.Errorf("kratos helloworld instances (-want +got):\n%s", diff)
	}
	if in := find(kratos, "gateway", "10.0.0.3:8000"); in.Origin != gateway || in.Metadata != nil {
		t.Errorf("kratos gateway = %+v", in)
	}
	if in := find(states["kratos-namespace"], "billing", "10.0.9.1:9000"); in.Origin != custom {
		t.Errorf("kratos billing origin = %q, want %q", in.Origin, custom)
	}
	gz := states["gozero"]
	if in := find(gz, "user.rpc", "10.0.1.1:8080"); in.Origin != min(user1, userDup) {
		t.Errorf("go-zero duplicate: served %s, want the first key %s", in.Origin, min(user1, userDup))
	}
	if in := find(gz, "user.rpc", "10.0.1.2:8080"); in.Origin != user2 || user2 != "user.rpc/7" {
		t.Errorf("go-zero WithId key %q, instance origin %q", user2, in.Origin)
	}
	if in := find(gz, "order.rpc", "10.0.1.3:9090"); in.Origin != order {
		t.Errorf("go-zero order.rpc origin = %q, want %q", in.Origin, order)
	}
	if in := find(states["gozero-prefix"], "stock.rpc", "10.0.2.1:8080"); in.Origin != zeroCustom {
		t.Errorf("go-zero prefixed origin = %q, want %q", in.Origin, zeroCustom)
	}
}
