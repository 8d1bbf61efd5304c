package xds

import (
	"slices"
	"strings"
)

// maxNackResources bounds the resource names a Nack keeps for the admin
// API; NackEvent.Resources has them all.
const maxNackResources = 20

// nackResources works out the resources a NACK concerns (see
// NackEvent.Resources): the names of the rejected response that the
// client's error quotes, else every name the response added or changed
// against what the client had acknowledged. rejected is what the client
// would hold had it taken the response; accepted what it held at its last
// ACK, known says the tracker knows it (nothing acknowledged yet is known:
// the empty holding). It returns nil when it cannot tell.
//
// Clients quote the names they reject: Envoy says "Error adding/updating
// listener(s) outbound_http: ..." or "... cluster 'web' ...", gRPC says
// `resource "web": ...`. Names are service names, subset and inbound
// names with "|", and gRPC listeners with ":port", so the error is cut
// into runs of those characters and each run looked up: the cost is the
// error's length (bounded, see maxNackDetail), not the response's size.
func nackResources(detail string, rejected, accepted holding, known bool) []string {
	if named := quotedNames(detail, rejected); len(named) > 0 {
		return named
	}
	if !known {
		return nil
	}
	added, _, changed := compareHoldings(accepted, rejected)
	out := slices.Concat(added, changed)
	slices.Sort(out)
	return out
}

// quotedNames returns the names held holds that text quotes, sorted and
// each once.
func quotedNames(text string, held holding) []string {
	if held.empty() {
		return nil
	}
	var out []string
	for tok := range strings.FieldsFuncSeq(text, func(r rune) bool { return !isNameRune(r) }) {
		// A name ends a sentence or introduces a message ("outbound_http:
		// ..."): the punctuation is not part of it.
		for _, n := range []string{tok, strings.TrimRight(tok, ".:-")} {
			if n != "" && held.has(n) {
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// isNameRune reports whether r may occur in a resource name sluice serves:
// a service name's characters ([a-z0-9.-_], see sources.ValidServiceName),
// "|" (subset, inbound and tracing clusters) and ":" (gRPC listeners
// named host:port).
func isNameRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune(".-_|:", r)
}

// boundNames copies the first maxNackResources names, and says how many
// there were.
func boundNames(names []string) ([]string, int) {
	return slices.Clone(names[:min(len(names), maxNackResources)]), len(names)
}

// nackWork is a NACK to report once the tracker's lock is released:
// working out its resources compares holdings, which may be large.
type nackWork struct {
	event NackEvent
	// last is the Nack recorded for the admin API, to which the
	// resources are added (under the lock).
	last *Nack
	// rejected is what the client would hold had it taken the response,
	// accepted what it held at its last ACK (known: the tracker knows
	// it), sameResponse says rejected is the rejected response's holding.
	rejected, accepted  holding
	known, sameResponse bool
}

// nackWork records what reportNack needs of the NACK of the response
// with nonce, of version. Called with t.mu held.
func (t *Tracker) nackWork(s *streamState, ts *typeState, typeURL, nonce, version, detail string) *nackWork {
	w := &nackWork{
		event: NackEvent{NodeID: s.node.GetId(), Group: s.key, TypeURL: typeURL, Version: version, Accepted: ts.Acked, Detail: detail},
		last:  ts.LastNack, rejected: ts.sentHeld, sameResponse: nonce == ts.sentNonce,
	}
	switch {
	case ts.Acked == "":
		w.known = true // nothing acknowledged on this stream: the empty holding
	case ts.ackedKnown:
		w.accepted, w.known = ts.ackedHeld, true
	}
	return w
}

// reportNack works out the resources of a NACK, records them with the
// stream's last NACK, and tells the registrar when it observes NACKs.
// Called without t.mu held.
func (t *Tracker) reportNack(w *nackWork) {
	var rs []string
	if w.sameResponse {
		rs = nackResources(w.event.Detail, w.rejected, w.accepted, w.known)
	} else {
		// An answer to an older response than the last one sent: its
		// names are not known, but the error may quote some still sent.
		rs = quotedNames(w.event.Detail, w.rejected)
	}
	w.event.Resources = rs
	if w.last != nil {
		first, total := boundNames(rs)
		t.mu.Lock()
		w.last.Resources, w.last.ResourcesTotal = first, total
		t.mu.Unlock()
	}
	if o, ok := t.groups.(NackObserver); ok {
		o.Nacked(w.event)
	}
}
