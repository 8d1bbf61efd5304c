package sources

import (
	"context"
	"sort"
)

// Source watches one registry and reports its complete state.
//
// Run blocks until ctx is done. It sends an Event with a State every time the
// registry's contents change (the first one doubles as the "synced" signal) and
// an Event with Err when it loses the registry; the consumer then keeps serving
// the last State it got (fail static) until a new State arrives.
type Source interface {
	Name() string
	Run(ctx context.Context, events chan<- Event) error
}

// Event is one report of a source.
type Event struct {
	Source string
	// State, when non-nil, replaces everything the source said before.
	State *State
	// Err, when non-nil, says the source cannot currently read its registry
	// (or the registry's input is invalid as a whole): its last State stays
	// in effect and the source is reported as stale.
	Err error
	// Diagnostics accompany an Err that was caused by user input, such as a
	// registry file that does not parse, with the location of each problem.
	Diagnostics []Diagnostic
}

// Send delivers ev unless ctx ends first; it reports whether it was delivered.
func Send(ctx context.Context, events chan<- Event, ev Event) bool {
	select {
	case events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// Severity says whether a diagnostic rejected input or only warns about it.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is a problem with user- or machine-written input, located
// precisely enough to fix it: a file and line, or a registry key.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	Source   string   `json:"source"`
	// Location is "file:line" or a registry key.
	Location string `json:"location"`
	// Field is the path of the offending field, e.g. "services[0].instances[1].port".
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (d Diagnostic) String() string {
	s := d.Location + ": "
	if d.Field != "" {
		s += d.Field + ": "
	}
	return s + d.Message
}

func sortDiagnostics(ds []Diagnostic) {
	sort.SliceStable(ds, func(a, b int) bool {
		if ds[a].Location != ds[b].Location {
			return ds[a].Location < ds[b].Location
		}
		return ds[a].Field < ds[b].Field
	})
}
