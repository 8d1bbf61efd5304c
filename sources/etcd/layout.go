package etcd

import "strings"

// layout is one key layout (Config.Format): where its registry lives by
// default, and how one key and its value make an entry. Each layout is in a
// file of its own (layout_*.go); the parser does what they share: cutting
// the prefix, the key's origin, whether the entry is served.
type layout interface {
	// format is the layout's Config.Format.
	format() string
	// defaultPrefix is the registry's root when Config.Prefix is empty;
	// "" is the keyspace root.
	defaultPrefix() string
	// parse fills b's entry from rel, the key without the prefix and its
	// slash, and the key's value. It sets the address (b.address) last,
	// once the entry is good, reports problems as diagnostics, and calls
	// b.badShape for a key without the layout's shape.
	parse(b *builder, rel string, value []byte)
}

// layouts are the key layouts, the default first.
func layouts() []layout {
	return []layout{sluiceLayout{}, kratosLayout{}, goZeroLayout{}}
}

// layoutOf returns the layout of a Config.Format; "" is the default.
func layoutOf(format string) (layout, bool) {
	all := layouts()
	if format == "" {
		return all[0], true
	}
	for _, l := range all {
		if l.format() == format {
			return l, true
		}
	}
	return nil, false
}

// formatNames lists the Config.Format values: "sluice, kratos or gozero".
func formatNames() string {
	all := layouts()
	names := make([]string, len(all))
	for i, l := range all {
		names[i] = l.format()
	}
	last := len(names) - 1
	if last == 0 {
		return names[0]
	}
	return strings.Join(names[:last], ", ") + " or " + names[last]
}
