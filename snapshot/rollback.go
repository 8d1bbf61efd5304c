package snapshot

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// Automatic rollback (Config.NackRollback): when a client that had
// accepted a group's config rejects the next one, and what changed
// between the two is the policy set, the loop serves the policy set the
// client accepted instead, to every group (new proxies too), until the
// policy files change again. A rejection caused by a registry change is
// reported, not rolled back: registries describe what runs, and serving
// an older catalog would send traffic to instances that are gone.

// maxBuildHistory bounds the builds a group remembers: enough to find what
// a client accepted a few changes ago.
const maxBuildHistory = 4

// buildRecord is what one build of a group made, and from what.
type buildRecord struct {
	versions map[resource.Type]string
	policy   *policy.Set
	catalog  sources.Catalog
}

// remember records a build in the group's history, newest last.
func (g *group) remember(versions map[resource.Type]string, pol *policy.Set, catalog sources.Catalog) {
	if n := len(g.history); n > 0 {
		last := g.history[n-1]
		if last.policy == pol && maps.Equal(last.versions, versions) {
			g.history[n-1].catalog = catalog
			return
		}
	}
	g.history = append(g.history, buildRecord{versions: versions, policy: pol, catalog: catalog})
	if len(g.history) > maxBuildHistory {
		g.history = slices.Delete(g.history, 0, len(g.history)-maxBuildHistory)
	}
}

// find returns the newest build whose version of typ is version.
func (g *group) find(typ resource.Type, version string) *buildRecord {
	for i := len(g.history) - 1; i >= 0; i-- {
		if g.history[i].versions[typ] == version {
			return &g.history[i]
		}
	}
	return nil
}

// RollbackStatus is a rollback in effect, as /readyz and /debug/snapshots
// show it.
type RollbackStatus struct {
	Since time.Time `json:"since"`
	// The rejection that caused it.
	Node     string   `json:"node"`
	Group    string   `json:"group"`
	Type     string   `json:"type"`
	Version  string   `json:"version"`
	Error    string   `json:"error"`
	Resource []string `json:"resources,omitempty"`
	// RefusedDocuments are the documents of the rejected policy set that
	// differ from the set served instead ("file:line (Kind name)");
	// Serving are the files of the set served.
	RefusedDocuments []string `json:"refused_documents"`
	Serving          []string `json:"serving_files"`
}

// rollbackDecision says what considerRollback found, for the log.
type rollbackDecision string

// rolledBack is the decision to roll back.
const rolledBack rollbackDecision = "rolled back"

// considerRollback rolls the policy set back when n rejects a config that
// a policy change made (see the top of this file). It reports what it
// decided; the loop's goroutine rebuilds every group after a rollback.
func (l *Loop) considerRollback(n xds.NackEvent) rollbackDecision {
	if !l.cfg.NackRollback {
		return "rollback disabled (--nack-rollback=false)"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.groups[n.Group]
	switch {
	case g == nil:
		return "unknown group"
	case n.Accepted == "":
		return "the client had accepted no earlier config"
	}
	typ := n.TypeURL
	rejected, accepted := g.find(typ, n.Version), g.find(typ, n.Accepted)
	switch {
	case rejected == nil || accepted == nil:
		return "the builds are no longer remembered"
	case rejected.policy != l.policy:
		return "the policy set changed again since"
	case accepted.policy == rejected.policy:
		return "not a policy change: the registry changed; reported only"
	case !policyCaused(accepted, rejected, g.proxy.Kind, n):
		return "the registry changed too; reported only"
	}
	refused := rejected.policy
	l.policy = accepted.policy
	l.dirty = true
	l.rollback = &RollbackStatus{
		Since: l.cfg.Now(), Node: n.NodeID, Group: n.Group, Type: n.TypeURL, Version: n.Version,
		Error: n.Detail, Resource: n.Resources,
		RefusedDocuments: changedDocuments(refused, accepted.policy),
		Serving:          accepted.policy.Files(),
	}
	l.policyWarnings()
	l.cfg.Metrics.rolledBack(true)
	l.cfg.Log.Error("a client rejected config made by a policy change: serving the policy set it had accepted until the policy files change",
		"node_id", n.NodeID, "group", n.Group, "type", n.TypeURL, "error", n.Detail,
		"refused_documents", l.rollback.RefusedDocuments)
	select {
	case l.rebuild <- struct{}{}:
	default:
	}
	return rolledBack
}

// policyCaused reports whether what changed between two builds of a group
// that matters to the rejected resources is the policy set: the catalog is
// the same one, or the services of the rejected resources are unchanged
// in it.
func policyCaused(accepted, rejected *buildRecord, kind translator.ProxyKind, n xds.NackEvent) bool {
	if sameCatalog(accepted.catalog, rejected.catalog) {
		return true
	}
	var services []string
	for _, name := range n.Resources {
		svc, ok := translator.ServiceOf(kind, n.TypeURL, name)
		if !ok {
			// A resource of no one service (Envoy's outbound route
			// configuration): any service may have changed it.
			return false
		}
		if !slices.Contains(services, svc) {
			services = append(services, svc)
		}
	}
	return sameServices(accepted.catalog, rejected.catalog, services)
}

// sameCatalog reports whether two catalogs hold the same services: the
// same value, or (a merge that changed nothing makes a new value) the same
// names at the same revisions of one lineage.
func sameCatalog(a, b sources.Catalog) bool {
	if a.Lineage != b.Lineage || len(a.Services) != len(b.Services) {
		return false
	}
	if len(a.Services) == 0 || &a.Services[0] == &b.Services[0] {
		return true
	}
	if a.Lineage == 0 {
		return false
	}
	for i := range a.Services {
		x, y := a.Services[i], b.Services[i]
		if x.Name != y.Name || x.Revision == 0 || x.Revision != y.Revision {
			return false
		}
	}
	return true
}

// sameServices reports whether every one of names is the same in a and b
// (by revision within a lineage, else by value); false for an empty or
// unknown set.
func sameServices(a, b sources.Catalog, names []string) bool {
	if len(names) == 0 {
		return false
	}
	for _, name := range names {
		x, xok := serviceIn(a, name)
		y, yok := serviceIn(b, name)
		if xok != yok {
			return false
		}
		if !xok {
			continue
		}
		if a.Lineage != 0 && a.Lineage == b.Lineage && x.Revision != 0 {
			if x.Revision != y.Revision {
				return false
			}
			continue
		}
		xj, _ := json.Marshal(x)
		yj, _ := json.Marshal(y)
		if string(xj) != string(yj) {
			return false
		}
	}
	return true
}

func serviceIn(c sources.Catalog, name string) (sources.CatalogService, bool) {
	i, ok := slices.BinarySearchFunc(c.Services, name, func(s sources.CatalogService, n string) int { return strings.Compare(s.Name, n) })
	if !ok {
		return sources.CatalogService{}, false
	}
	return c.Services[i], true
}

// changedDocuments lists the documents of refused that are not in served
// as they are (same kind, name and content), as "file:line (Kind name)".
func changedDocuments(refused, served *policy.Set) []string {
	kept := map[string]bool{}
	for _, d := range served.Documents() {
		kept[documentKey(d)] = true
	}
	var out []string
	for _, d := range refused.Documents() {
		if !kept[documentKey(d)] {
			out = append(out, fmt.Sprintf("%s (%s %s)", d.Location(), d.Kind, d.Name))
		}
	}
	return out
}

// documentKey identifies a document's content.
func documentKey(d policy.Document) string {
	spec, _ := json.Marshal(d.Spec)
	tracing, _ := json.Marshal(d.Tracing)
	return string(d.Kind) + "\x00" + d.Name + "\x00" + string(spec) + "\x00" + string(tracing)
}

// endRollback forgets a rollback once the policy files changed. Called
// with l.mu held.
func (l *Loop) endRollback() {
	if l.rollback == nil {
		return
	}
	l.cfg.Log.Info("the policy files changed: the rollback is over", "refused_documents", l.rollback.RefusedDocuments)
	l.rollback = nil
	l.cfg.Metrics.rolledBack(false)
}
