package xds

// NackObserver is what a GroupRegistrar may also implement to learn of
// every rejected response (the snapshot loop does: it rolls back policy
// changes that clients reject, and explains where rejected resources came
// from). The tracker calls it without holding its lock, once per rejected
// version per stream.
type NackObserver interface {
	Nacked(n NackEvent)
}

// NackEvent is one client's rejection of a response.
type NackEvent struct {
	// NodeID and Group identify the client.
	NodeID, Group string
	TypeURL       string
	// Version is the rejected version; Accepted the version of that type
	// the client had acknowledged before it ("" when none).
	Version, Accepted string
	// Detail is the client's error (truncated to a bounded excerpt).
	Detail string
	// Resources are the names the rejection concerns: those of the
	// rejected response that the client's error names, else every
	// resource the response added or changed against what the client
	// had accepted. Empty when the tracker cannot tell.
	Resources []string
}
