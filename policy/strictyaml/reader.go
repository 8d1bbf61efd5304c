// Package strictyaml reads the YAML files sluice takes as input (policy
// files, the registry file) strictly and with positions: every problem it
// finds is a sources.Diagnostic that says where (file:line) and which field
// (a path such as services[0].instances[1].port).
//
// The YAML library parses; this package does what the library leaves to its
// callers:
//   - syntax errors at the right line, counted from 1 (the library counts
//     its parser errors' lines from 0, and gives some errors no line);
//   - refusing what a yaml.Node keeps silently: unknown fields, keys given
//     twice, merge keys;
//   - a bound on alias uses, so that a small file cannot expand into a huge
//     tree;
//   - type checks whose messages name what was expected and what was found.
//
// A schema is read by walking the nodes with a Reader's methods; each
// reports its problems to the Reader and says whether the value was usable,
// so one pass reports every problem of a file.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// A Reader reads one file and collects its diagnostics. Its zero value
// reads a file named "" whose aliases are refused; set the fields first.
type Reader struct {
	// File names the file in locations ("file:line").
	File string
	// Source is the Source of every diagnostic.
	Source string
	// MaxAliases is how many alias uses (*name) the file may make before
	// they are refused as too many. Zero leaves aliases unfollowed: an
	// alias is then a value of its own kind, which every check refuses
	// ("expected a mapping, got an alias").
	MaxAliases int
	// Lines, when not nil, receives the line of the value of every field
	// that Fields visits, by field path, so that later checks can point at
	// a field.
	Lines map[string]int

	diags   []sources.Diagnostic
	aliases int
}

// Location is the "file:line" of a position.
func Location(file string, line int) string { return file + ":" + strconv.Itoa(line) }

// Errorf reports an error at a line of the file, on a field path ("" for
// the file or document as a whole).
func (r *Reader) Errorf(line int, field, format string, args ...any) {
	r.diags = append(r.diags, sources.Diagnostic{
		Severity: sources.SeverityError,
		Source:   r.Source,
		Location: Location(r.File, line),
		Field:    field,
		Message:  fmt.Sprintf(format, args...),
	})
}

// Diagnostics returns the problems reported so far, in the order found.
func (r *Reader) Diagnostics() []sources.Diagnostic { return r.diags }

// Documents decodes the YAML documents of data and returns the top-level
// node of each one that holds something. Documents that are empty or only
// comments (such as the one after a trailing "---") are left out, so an
// empty file gives none and no diagnostic: what that means is the caller's
// to say. A syntax error is reported at its line and ends the reading; the
// documents before it are returned.
func (r *Reader) Documents(data []byte) []*yaml.Node {
	var tops []*yaml.Node
	for _, doc := range r.decode(data) {
		tops = append(tops, doc.Content[0])
	}
	return tops
}

// Document is Documents for a file of a single document. A second document
// is reported at its start; the first is returned all the same, so that its
// problems are reported too. It returns nil when the file holds no document
// or the first has a syntax error.
func (r *Reader) Document(data []byte) *yaml.Node {
	docs := r.decode(data)
	if len(docs) == 0 {
		return nil
	}
	for _, extra := range docs[1:] {
		r.Errorf(extra.Line, "", "only one YAML document is allowed in this file; found another")
	}
	return docs[0].Content[0]
}

// decode returns the document nodes of data that hold something, each with
// exactly one child.
func (r *Reader) decode(data []byte) (docs []*yaml.Node) {
	defer func() {
		// The YAML library is not known to panic, but an input file must
		// never take the control plane down.
		if v := recover(); v != nil {
			r.Errorf(1, "", "invalid YAML: the parser failed: %v", v)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		doc := new(yaml.Node)
		err := dec.Decode(doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			line, msg := syntaxError(err, data)
			r.Errorf(line, "", "invalid YAML: %s", msg)
			return docs
		}
		if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && !IsNull(doc.Content[0]) {
			docs = append(docs, doc)
		}
	}
}
