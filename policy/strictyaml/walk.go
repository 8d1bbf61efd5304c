package strictyaml

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Deref follows an alias to the node it names, counting the use against
// MaxAliases. Past that bound it reports an error once and returns an empty
// node; with MaxAliases zero it returns the alias itself.
func (r *Reader) Deref(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.AliasNode || r.MaxAliases <= 0 {
		return n
	}
	r.aliases++
	if r.aliases > r.MaxAliases {
		if r.aliases == r.MaxAliases+1 {
			r.Errorf(n.Line, "", "too many alias uses (more than %d)", r.MaxAliases)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
	}
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// Fields reads a mapping of field names, the fields of path: it refuses keys
// not in known and keys given twice, and calls visit with each other key and
// its value. explain, when not nil, may say why a key is not accepted here
// (say, that it belongs at another level); it returns "" for a plain unknown
// field. Fields reports whether n is a mapping.
func (r *Reader) Fields(n *yaml.Node, path string, known []string, explain func(key string) string, visit func(key string, v *yaml.Node)) bool {
	isMapping, _ := r.pairs(n, path, "a mapping", "field", func(key string, k, v *yaml.Node) {
		if !slices.Contains(known, key) {
			why := ""
			if explain != nil {
				why = explain(key)
			}
			if why == "" {
				why = "unknown field (known: " + strings.Join(known, ", ") + ")"
			}
			r.Errorf(k.Line, Join(path, key), "%s", why)
			return
		}
		if r.Lines != nil {
			r.Lines[Join(path, key)] = v.Line
		}
		visit(key, v)
	})
	return isMapping
}

// Mapping reads a mapping whose keys are free names, such as labels: it
// refuses keys given twice (and keys that are not names, and merge keys)
// and calls visit with each other key, its node and its value. what says what the mapping holds ("a mapping of labels"),
// for the message when n is not a mapping. It reports whether n is a
// mapping whose keys were all accepted.
func (r *Reader) Mapping(n *yaml.Node, path, what string, visit func(key string, k, v *yaml.Node)) bool {
	isMapping, clean := r.pairs(n, path, what, "key", visit)
	return isMapping && clean
}

// pairs walks the key-value pairs of a mapping, following aliases, and
// calls visit for each pair whose key is a name given once; it reports the
// others, calling a key a noun. clean is false when it reported a key.
func (r *Reader) pairs(n *yaml.Node, path, what, noun string, visit func(key string, k, v *yaml.Node)) (isMapping, clean bool) {
	n = r.Deref(n)
	if n.Kind != yaml.MappingNode {
		r.Errorf(n.Line, path, "expected %s, got %s", what, KindName(n))
		return false, false
	}
	clean = true
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := r.Deref(n.Content[i]), r.Deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			r.Errorf(k.Line, path, "expected %s names, got %s", noun, KindName(k))
			clean = false
			continue
		}
		fp := Join(path, k.Value)
		if k.Tag == "!!merge" {
			hint := "repeat the fields"
			if r.MaxAliases > 0 {
				hint += " or use an alias for the whole value"
			}
			r.Errorf(k.Line, fp, "YAML merge keys are not supported; %s", hint)
			clean = false
			continue
		}
		if prev, dup := first[k.Value]; dup {
			r.Errorf(k.Line, fp, "%s given twice (first at line %d)", noun, prev)
			clean = false
			continue
		}
		first[k.Value] = k.Line
		visit(k.Value, k, v)
	}
	return true, clean
}

// StringMap reads a mapping of non-empty names to scalar values, such as
// labels; what names the mapping's contents ("labels") in messages.
func (r *Reader) StringMap(n *yaml.Node, path, what string) (map[string]string, bool) {
	m := map[string]string{}
	bad := false
	ok := r.Mapping(n, path, "a mapping of "+what, func(key string, k, v *yaml.Node) {
		switch {
		case key == "":
			r.Errorf(k.Line, path, "expected non-empty names, got %s", KindName(k))
		case v.Kind != yaml.ScalarNode || IsNull(v):
			r.Errorf(v.Line, Join(path, key), "expected a string, got %s", KindName(v))
		default:
			m[key] = v.Value
			return
		}
		bad = true
	})
	return m, ok && !bad
}

// Seq returns the items of a list, following aliases; nothing (null) is an
// empty list.
func (r *Reader) Seq(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	n = r.Deref(n)
	if IsNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		r.Errorf(n.Line, path, "expected a list, got %s", KindName(n))
		return nil, false
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = r.Deref(it)
	}
	return items, true
}

// Scalar reads a value that is neither a collection nor nothing; what says
// what was expected ("a service name").
func (r *Reader) Scalar(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || IsNull(n) {
		r.Errorf(n.Line, path, "expected %s, got %s", what, KindName(n))
		return "", false
	}
	return n.Value, true
}

// String reads a scalar that YAML takes as a string (quoted or not): not a
// number, a boolean or nothing.
func (r *Reader) String(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		r.Errorf(n.Line, path, "expected %s, got %s", what, KindName(n))
		return "", false
	}
	return n.Value, true
}

// Bool reads true or false.
func (r *Reader) Bool(n *yaml.Node, path string) (bool, bool) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		r.Errorf(n.Line, path, "expected true or false, got %s", KindName(n))
		return false, false
	}
	return b, true
}

// IsNull reports whether a node holds nothing: null, ~, an empty value.
func IsNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// KindName says what a node is, for messages: "a mapping", "a list",
// "nothing", "an alias" or a scalar's quoted text.
func KindName(n *yaml.Node) string {
	switch {
	case IsNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(n.Value)
}

// Join is the path of a field of path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Index is the path of item i of the list at path.
func Index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
