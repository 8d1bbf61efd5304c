// Package setting describes a refused setting: which one, the value it had
// and why it was refused. The packages sluice configures (the etcd and
// Consul sources, the embedded etcd, TLS files) return an *Error naming
// their own Config fields; cmd/sluice renames those fields to the flags
// that set them (Rename) and returns *Errors for its own flags too, so
// every such message has the same shape, made in one place (Error):
//
//	--etcd-format: must be one of sluice, kratos, gozero, got "zk"
//	etcd: Username: is required with Password
package setting

import (
	"fmt"
	"strings"
)

// Error is a setting that was refused.
type Error struct {
	// Scope is whose setting it is, such as "etcd"; empty for a flag or
	// a config key of sluice itself.
	Scope string
	// Field names the setting: a flag ("--etcd-endpoints"), or a field
	// path of the Scope's Config ("Prefix", "TLS.CertFile"), with the
	// index of a list element ("Endpoints[1]").
	Field string
	// Value is the refused value; nil when the problem is not one value
	// (a missing setting, one that failed to load).
	Value any
	// Reason says what the setting must be, or what is wrong with it:
	// "must be at least 1", "is required with".
	Reason string
	// With are the other settings Reason refers to, named after it and
	// renamed along with Field: Reason "is required with", With
	// {"Password"}.
	With []string
	// Err is the underlying error, if any.
	Err error
}

// Error is the message: "[scope: ]field: reason[ with...][, got value][: err]",
// with a string value quoted.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Scope != "" {
		b.WriteString(e.Scope + ": ")
	}
	b.WriteString(e.Field + ": " + e.Reason)
	if len(e.With) > 0 {
		b.WriteString(" " + strings.Join(e.With, " and "))
	}
	switch v := e.Value.(type) {
	case nil:
	case string:
		fmt.Fprintf(&b, ", got %q", v)
	default:
		fmt.Fprintf(&b, ", got %v", v)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Rename returns a copy of e whose Field and With are renamed by name,
// which maps a field without its list index ("Endpoints") to what the user
// set ("--etcd-endpoints"); the index is kept ("--etcd-endpoints[1]").
// When name knows the Field, the copy has no Scope: the new names say
// whose setting it is. Names name does not know are kept.
func (e *Error) Rename(name func(field string) (string, bool)) *Error {
	c := *e
	field, ok := rename(e.Field, name)
	if !ok {
		return &c
	}
	c.Scope, c.Field = "", field
	c.With = make([]string, len(e.With))
	for i, w := range e.With {
		c.With[i], _ = rename(w, name)
	}
	return &c
}

func rename(field string, name func(string) (string, bool)) (string, bool) {
	base, index := field, ""
	if i := strings.IndexByte(field, '['); i >= 0 {
		base, index = field[:i], field[i:]
	}
	n, ok := name(base)
	if !ok {
		return field, false
	}
	return n + index, true
}
