package snapshot

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// maxOrigins bounds each list of a provenance (resources, services, policy
// documents, settings, registry entries): the first maxOrigins, and how
// many there are.
const maxOrigins = 5

// ResourceOrigin says where one resource a group is served came from: the
// policy documents and registry entries it is made of. It is worked out
// on demand from the group's last build (its policy set and catalog), not
// kept per proxy.
type ResourceOrigin struct {
	Type string `json:"type"`
	Name string `json:"name"`
	// Scope is what the resource is made from (translator.OwnerOf):
	// "service", "dependencies", "own" or "tracing"; "" for a name
	// sluice does not make.
	Scope string `json:"scope,omitempty"`
	// Services are the services the resource is made from. For an
	// Envoy's outbound listener and route configuration (every service
	// the group depends on) they are only those the client's error points
	// at, by name or by quoting a value their policy writes; none when it
	// points at none (ServicesTotal is then the number of dependencies).
	Services      []string `json:"services,omitempty"`
	ServicesTotal int      `json:"services_total,omitempty"`
	// Policies are the documents that apply, the one the client's error
	// quotes first.
	Policies      []PolicyOrigin `json:"policies,omitempty"`
	PoliciesTotal int            `json:"policies_total,omitempty"`
	// Registry are the registry entries of the services' endpoints:
	// "file registry.yaml:12", "etcd /services/web/10.0.0.1:80",
	// "consul web-1".
	Registry      []string `json:"registry,omitempty"`
	RegistryTotal int      `json:"registry_total,omitempty"`
	// Summary is the whole on one line.
	Summary string `json:"summary"`
}

// PolicyOrigin is one policy document a resource is made of.
type PolicyOrigin struct {
	// Document is "ServicePolicy web" or "MeshPolicy mesh", Location its
	// file:line.
	Document string `json:"document"`
	Location string `json:"location"`
	// Settings are what it sets that differs from the built-in defaults,
	// with file:line: its routes first for listeners and route
	// configurations, the one the client's error quotes first of all.
	Settings      []string `json:"settings,omitempty"`
	SettingsTotal int      `json:"settings_total,omitempty"`
	// Quoted says the client's error quotes a value the document writes
	// (a route's header regex, say): Settings[0].
	Quoted bool `json:"quoted,omitempty"`
}

// NackReport is a group's last rejected response, explained: who rejected
// what, and where the rejected resources came from.
type NackReport struct {
	Node     string `json:"node"`
	Type     string `json:"type"`
	Version  string `json:"version"`
	Accepted string `json:"accepted,omitempty"`
	Error    string `json:"error"`
	// Resources are the first names the rejection concerns, of
	// ResourcesTotal; Origins, those of the first maxOrigins.
	Resources      []string         `json:"resources,omitempty"`
	ResourcesTotal int              `json:"resources_total,omitempty"`
	Origins        []ResourceOrigin `json:"origins,omitempty"`
	// LaterInputs says the origins are of the group's build after the
	// rejected version: the inputs changed since.
	LaterInputs bool      `json:"later_inputs,omitempty"`
	At          time.Time `json:"at"`
}

// maxReportResources bounds NackReport.Resources.
const maxReportResources = 20

// Nacked is told of every rejected response (xds.NackObserver): it
// explains the rejection, and rolls back the policy change behind it when
// there is one (rollback.go).
func (l *Loop) Nacked(n xds.NackEvent) {
	l.explainNack(n)
	if decision := l.considerRollback(n); decision != rolledBack {
		l.cfg.Log.Info("not rolling back a rejected config", "node_id", n.NodeID, "group", n.Group, "type", n.TypeURL, "why", string(decision))
	}
}

// explainNack works out where a rejection's resources came from, keeps it
// as the group's last NACK, and logs it once per group, type and version.
func (l *Loop) explainNack(n xds.NackEvent) {
	shown := n.Resources[:min(len(n.Resources), maxOrigins)]
	origins, later := l.provenance(n.Group, n.TypeURL, shown, n.Detail, n.Version)
	r := &NackReport{
		Node: n.NodeID, Type: typeName(n.TypeURL), Version: n.Version, Accepted: n.Accepted, Error: n.Detail,
		Resources: slices.Clone(n.Resources[:min(len(n.Resources), maxReportResources)]), ResourcesTotal: len(n.Resources),
		Origins: origins, LaterInputs: later, At: l.cfg.Now(),
	}
	l.mu.Lock()
	g := l.groups[n.Group]
	first := false
	if g != nil {
		g.lastNack = r
		if g.nackLogged == nil {
			g.nackLogged = map[string]string{}
		}
		first = g.nackLogged[n.TypeURL] != n.Version
		g.nackLogged[n.TypeURL] = n.Version
	}
	l.mu.Unlock()
	if g == nil || first {
		l.cfg.Log.Warn("where the rejected config came from", "node_id", n.NodeID, "group", n.Group, "type", r.Type, "version", n.Version,
			"resources", r.Resources, "explanation", r.String())
	}
}

// String is the report on one line: "frontend-1 rejected route
// configuration outbound_http: <error> — from <origins>".
func (r *NackReport) String() string {
	var b strings.Builder
	noun := nounOf(r.Type)
	fmt.Fprintf(&b, "%s rejected %s", r.Node, noun)
	if len(r.Resources) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(r.Resources[:min(len(r.Resources), maxOrigins)], ", "))
		if r.ResourcesTotal > maxOrigins {
			fmt.Fprintf(&b, " and %d more", r.ResourcesTotal-maxOrigins)
		}
	}
	fmt.Fprintf(&b, " (version %s): %s", r.Version, r.Error)
	if len(r.Origins) > 0 {
		b.WriteString(" — from ")
		for i, o := range r.Origins {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(o.Summary)
		}
		if r.LaterInputs {
			b.WriteString(" (as built since the rejected version)")
		}
	}
	return b.String()
}

// Provenance says where the resources of typeURL named names, as group is
// served them now, came from. Names it does not know get a bare origin.
func (l *Loop) Provenance(group, typeURL string, names []string) []ResourceOrigin {
	out, _ := l.provenance(group, typeURL, names, "", "")
	return out
}

// provenance is Provenance, narrowed by the client's error detail; later
// says the group's snapshot is no longer the one of version (when given).
func (l *Loop) provenance(group, typeURL string, names []string, detail, version string) (out []ResourceOrigin, later bool) {
	l.mu.Lock()
	g := l.groups[group]
	if g == nil || g.versions == nil {
		l.mu.Unlock()
		return nil, false
	}
	p, pol, catalog := g.proxy, g.builtPolicy, g.builtCatalog
	later = version != "" && g.versions[typeURL] != version
	l.mu.Unlock()
	// The policy set and the catalog are immutable: the work is done
	// without the lock.
	e := explainer{proxy: p, pol: pol, catalog: catalog, detail: detail, typeURL: typeURL}
	for _, name := range names {
		out = append(out, e.origin(name))
	}
	return out, later
}

// explainer works out origins over one group's build.
type explainer struct {
	proxy           translator.Proxy
	pol             *policy.Set
	catalog         sources.Catalog
	detail, typeURL string
}

func (e explainer) origin(name string) ResourceOrigin {
	o := ResourceOrigin{Type: typeName(e.typeURL), Name: name}
	owner, ok := translator.OwnerOf(e.proxy.Kind, e.typeURL, name)
	if !ok {
		o.Summary = fmt.Sprintf("%s %s: not a resource sluice makes", nounOf(o.Type), name)
		return o
	}
	o.Scope = string(owner.Scope)
	var scope string
	switch owner.Scope {
	case translator.ScopeService:
		e.services(&o, []string{owner.Service})
	case translator.ScopeOwn:
		scope = fmt.Sprintf("the sidecar's own service %s", e.proxy.Service)
		o.Policies, o.PoliciesTotal = capped(e.policies(e.proxy.Service))
	case translator.ScopeTracing:
		scope = "the MeshPolicy's spec.tracing"
		o.Policies, o.PoliciesTotal = e.tracing()
	case translator.ScopeDependencies:
		scope = e.dependencies(&o)
	}
	o.Summary = o.summary(scope)
	return o
}

// services fills in o's services, their policies and their registry
// entries.
func (e explainer) services(o *ResourceOrigin, names []string) {
	o.Services, o.ServicesTotal = capped(names)
	var pols []PolicyOrigin
	var reg []string
	for _, svc := range names {
		for _, p := range e.policies(svc) {
			if !slices.ContainsFunc(pols, func(q PolicyOrigin) bool { return q.Location == p.Location }) {
				pols = append(pols, p)
			}
		}
		reg = append(reg, e.registry(svc)...)
	}
	// The document the error quotes first.
	slices.SortStableFunc(pols, func(a, b PolicyOrigin) int {
		switch {
		case a.Quoted == b.Quoted:
			return 0
		case a.Quoted:
			return -1
		}
		return 1
	})
	o.Policies, o.PoliciesTotal = capped(pols)
	o.Registry, o.RegistryTotal = capped(reg)
}

// dependencies explains an Envoy's outbound listener or route
// configuration: the services the error names or quotes, else every
// dependency, without listing them.
func (e explainer) dependencies(o *ResourceOrigin) string {
	deps := translator.Dependencies(e.proxy, e.pol)
	var all []string
	for _, s := range e.catalog.Services {
		if deps.Includes(s.Name) {
			all = append(all, s.Name)
		}
	}
	var named []string
	for _, svc := range all {
		if e.names(svc) || e.quotes(svc) {
			named = append(named, svc)
		}
	}
	if len(named) > 0 {
		e.services(o, named)
		return fmt.Sprintf("the client's error points at %d of the %d services the group depends on", len(named), len(all))
	}
	// A MeshPolicy route applies to every service: the error may quote it.
	if mesh := e.meshDocument(); mesh != nil {
		if p := e.document(*mesh, ""); p.Quoted {
			o.Policies, o.PoliciesTotal = []PolicyOrigin{p}, 1
			return "every service the group depends on: a MeshPolicy route the client's error quotes"
		}
	}
	o.ServicesTotal = len(all)
	var pols []PolicyOrigin
	if mesh := e.meshDocument(); mesh != nil {
		pols = append(pols, PolicyOrigin{Document: documentName(*mesh), Location: mesh.Location()})
	}
	for _, svc := range e.pol.Services() {
		if deps.Includes(svc) {
			for _, d := range e.pol.DocumentsOf(svc) {
				if d.Kind == policy.KindServicePolicy {
					pols = append(pols, PolicyOrigin{Document: documentName(d), Location: d.Location()})
				}
			}
		}
	}
	o.Policies, o.PoliciesTotal = capped(pols)
	return fmt.Sprintf("every service the group depends on (%d)", len(all))
}

func (e explainer) meshDocument() *policy.Document {
	for _, d := range e.pol.DocumentsOf("") {
		if d.Kind == policy.KindMeshPolicy {
			return &d
		}
	}
	return nil
}

// names says the client's error names svc: as a word, or as svc:port (a
// virtual host's domain).
func (e explainer) names(svc string) bool {
	for i := 0; ; {
		j := strings.Index(e.detail[i:], svc)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(svc)
		if (start == 0 || !isNameByte(e.detail[start-1])) && (end == len(e.detail) || !isNameByte(e.detail[end]) || e.detail[end] == ':' || e.detail[end] == '.') {
			return true
		}
		i = end
	}
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-_|:", c) >= 0
}

// quotes says the client's error quotes a value svc's ServicePolicy
// writes in a route match.
func (e explainer) quotes(svc string) bool {
	if e.detail == "" || !slices.ContainsFunc(e.pol.DocumentsOf(svc), func(d policy.Document) bool { return d.Kind == policy.KindServicePolicy }) {
		return false
	}
	for _, rr := range e.pol.Resolve(svc).Routes {
		if strings.HasPrefix(rr.Name, "routes[") && e.quotesMatch(rr.Match) {
			return true
		}
	}
	return false
}

// policies are the documents that apply to svc, with what they set.
func (e explainer) policies(svc string) []PolicyOrigin {
	var out []PolicyOrigin
	for _, d := range e.pol.DocumentsOf(svc) {
		out = append(out, e.document(d, svc))
	}
	return out
}

// document explains what d sets for svc ("" for a MeshPolicy's routes
// alone): its routes (first for listeners and route configurations) and
// the settings that differ from the built-in defaults.
func (e explainer) document(d policy.Document, svc string) PolicyOrigin {
	p := PolicyOrigin{Document: documentName(d), Location: d.Location()}
	level, routePrefix := policy.LevelService, "routes["
	if d.Kind == policy.KindMeshPolicy {
		level, routePrefix = policy.LevelMesh, "mesh.routes["
	}
	var routes, settings []string
	r := e.pol.Resolve(svc)
	for _, rr := range r.Routes {
		if !strings.HasPrefix(rr.Name, routePrefix) {
			continue
		}
		line := fmt.Sprintf("%s %s at %s", rr.Name, rr.Match.String(), rr.Origin)
		if e.quotesMatch(rr.Match) {
			p.Quoted = true
			routes = append([]string{line + " (the client's error quotes it)"}, routes...)
			continue
		}
		routes = append(routes, line)
	}
	if svc != "" {
		for _, pr := range e.pol.Explain(svc) {
			if pr.Level == level {
				settings = append(settings, fmt.Sprintf("%s: %s at %s", pr.Field, pr.Value, pr.Location))
			}
		}
	}
	all := slices.Concat(settings, routes)
	if e.typeURL == resource.ListenerType || e.typeURL == resource.RouteType || p.Quoted {
		all = slices.Concat(routes, settings)
	}
	p.Settings, p.SettingsTotal = capped(all)
	return p
}

// quotesMatch says the client's error quotes a regex of m (Envoy quotes
// the regexes it refuses).
func (e explainer) quotesMatch(m policy.RouteMatch) bool {
	if e.detail == "" {
		return false
	}
	for _, h := range slices.Concat(m.Headers, m.QueryParams) {
		if h.Regex != "" && strings.Contains(e.detail, h.Regex) {
			return true
		}
	}
	return false
}

// tracing is the MeshPolicy's spec.tracing, where the collector's cluster
// comes from.
func (e explainer) tracing() ([]PolicyOrigin, int) {
	mesh := e.meshDocument()
	if mesh == nil {
		return nil, 0
	}
	p := PolicyOrigin{Document: documentName(*mesh), Location: mesh.Location()}
	for _, pr := range e.pol.Explain(e.proxy.Service) {
		if pr.Field == "tracing" || pr.Field == "tracing.samplingPercent" {
			p.Settings = append(p.Settings, fmt.Sprintf("%s: %s at %s", pr.Field, pr.Value, pr.Location))
		}
	}
	p.SettingsTotal = len(p.Settings)
	return []PolicyOrigin{p}, 1
}

// registry lists the registry entries of svc's endpoints: each source's
// own view when several report one.
func (e explainer) registry(svc string) []string {
	i, ok := slices.BinarySearchFunc(e.catalog.Services, svc, func(s sources.CatalogService, n string) int { return strings.Compare(s.Name, n) })
	if !ok {
		return nil
	}
	var out []string
	entry := func(in sources.Instance) string {
		if in.Origin == "" {
			return in.Source + " " + in.Key()
		}
		return in.Source + " " + in.Origin
	}
	for _, ep := range e.catalog.Services[i].Endpoints {
		if len(ep.Views) == 0 {
			out = append(out, entry(ep.Instance))
		}
		for _, v := range ep.Views {
			out = append(out, entry(v))
		}
	}
	return out
}

// summary writes o on one line: "cluster web: policy p.yaml:3
// (ServicePolicy web); registry file registry.yaml:12".
func (o ResourceOrigin) summary(scope string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", nounOf(o.Type), o.Name)
	if scope != "" {
		fmt.Fprintf(&b, " (%s)", scope)
	}
	b.WriteString(":")
	if len(o.Policies) == 0 {
		b.WriteString(" built-in policy defaults")
	} else {
		b.WriteString(" policy ")
		for i, p := range o.Policies {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s", p.Location, p.Document)
			if p.Quoted {
				fmt.Fprintf(&b, ": %s", p.Settings[0])
			}
			b.WriteString(")")
		}
		more(&b, len(o.Policies), o.PoliciesTotal)
	}
	if len(o.Registry) > 0 {
		fmt.Fprintf(&b, "; registry %s", strings.Join(o.Registry, ", "))
		more(&b, len(o.Registry), o.RegistryTotal)
	}
	return b.String()
}

func more(b *strings.Builder, shown, total int) {
	if total > shown {
		fmt.Fprintf(b, " and %d more", total-shown)
	}
}

// capped returns the first maxOrigins of xs, and their number.
func capped[T any](xs []T) ([]T, int) {
	return xs[:min(len(xs), maxOrigins):min(len(xs), maxOrigins)], len(xs)
}

func documentName(d policy.Document) string {
	return string(d.Kind) + " " + d.Name
}

// typeName is a type URL's message name: "RouteConfiguration".
func typeName(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

// nounOf names a resource of the type typeName gives: "route
// configuration".
func nounOf(name string) string {
	for _, k := range envoy.Kinds {
		if typeName(k.Type) == name {
			return k.Noun
		}
	}
	return name
}
