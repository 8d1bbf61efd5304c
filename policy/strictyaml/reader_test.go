package strictyaml

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// lines joins its arguments into a YAML file, so inputs can be read with
// their line numbers in mind (the first argument is line 1).
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// readSchema reads a document of a small schema that uses every check:
//
//	name: a string
//	enabled: true or false
//	ports: a list of scalars
//	labels: a mapping of strings
//	spec: {timeout: a scalar}; retry is explained as misplaced
func readSchema(r *Reader, n *yaml.Node) {
	r.Fields(n, "", []string{"name", "enabled", "ports", "labels", "spec"}, nil, func(key string, v *yaml.Node) {
		switch key {
		case "name":
			r.String(v, "name", "a name")
		case "enabled":
			r.Bool(v, "enabled")
		case "ports":
			items, _ := r.Seq(v, "ports")
			for i, it := range items {
				r.Scalar(it, Index("ports", i), "a port")
			}
		case "labels":
			r.StringMap(v, "labels", "labels")
		case "spec":
			misplaced := func(key string) string {
				if key == "retry" {
					return "retry belongs at the top level"
				}
				return ""
			}
			r.Fields(v, "spec", []string{"timeout"}, misplaced, func(_ string, t *yaml.Node) {
				r.Scalar(t, "spec.timeout", "a duration")
			})
		}
	})
}

type diag struct {
	line  int
	field string
	msg   string // a substring of the message
}

// TestReaderErrors pins the line and field path of every kind of problem:
// syntax errors (each of the YAML library's parser, scanner and reader
// problems, and alias resolution), document structure, and the checks of
// the walk.
func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		one     bool // read with Document (a file of one document)
		aliases int  // MaxAliases
		want    []diag
	}{
		// Syntax errors of the library's parser stage, which it numbers
		// from 0. A problem inside a construct is at the line the
		// construct starts, unless that is the first line.
		{
			// The "[" of line 2 is never closed. The library says line 1.
			name: "unclosed flow sequence",
			in:   "a: 1\nb: [1, 2\nc: 3",
			want: []diag{{2, "", "invalid YAML: did not find expected ',' or ']'"}},
		},
		{
			name: "unclosed flow sequence on the first line",
			in:   lines("b: [1, 2"),
			want: []diag{{1, "", "did not find expected ',' or ']'"}},
		},
		{
			name: "unclosed flow mapping",
			in:   lines("a: 1", "", "", "b: {x: 1", ""),
			want: []diag{{4, "", "did not find expected ',' or '}'"}},
		},
		{
			name: "flow sequence cut at the end of the file",
			in:   lines("a:", "  b: ["),
			want: []diag{{2, "", "did not find expected node content"}},
		},
		{
			// The key of line 5 breaks out of the mapping under spec
			// (line 3 starts it) without closing it.
			name: "mis-indented key",
			in:   lines("apiVersion: v1", "spec:", "  retry:", "    attempts: 1", "   timeout: 2s"),
			want: []diag{{3, "", "did not find expected key"}},
		},
		{
			name: "list item in a mapping on the first line",
			in:   lines("a: 1", "- b"),
			want: []diag{{2, "", "did not find expected key"}},
		},
		{
			// The key of line 3 breaks out of the list of line 2.
			name: "key at a list's indentation",
			in:   lines("services:", "  - name: a", "  instances: []"),
			want: []diag{{2, "", "did not find expected '-' indicator"}},
		},
		{
			name: "content after the document end marker",
			in:   lines("name: a", "...", "b"),
			want: []diag{{3, "", "did not find expected <document start>"}},
		},
		{
			name: "undefined tag handle",
			in:   lines("a: 1", "!foo!x y: 1"),
			want: []diag{{2, "", "found undefined tag handle"}},
		},
		{
			name: "duplicate %YAML directive",
			in:   lines("%YAML 1.1", "%YAML 1.1", "---", "a: 1"),
			want: []diag{{2, "", "found duplicate %YAML directive"}},
		},
		{
			name: "duplicate %TAG directive",
			in:   lines("%TAG !a! tag:a.example,2000:", "%TAG !a! tag:b.example,2000:", "---", "a: 1"),
			want: []diag{{2, "", "found duplicate %TAG directive"}},
		},
		{
			name: "incompatible YAML version",
			in:   lines("%YAML 2.0", "---", "a: 1"),
			want: []diag{{1, "", "found incompatible YAML document"}},
		},
		{
			name: "syntax error in a second document",
			in:   lines("name: a", "---", "name: ["),
			want: []diag{{3, "", "did not find expected node content"}},
		},

		// Syntax errors of the library's scanner stage, numbered from 1.
		{
			name: "mapping value in a plain scalar",
			in:   lines("a: 1", "b: c: d"),
			want: []diag{{2, "", "mapping values are not allowed in this context"}},
		},
		{
			name: "character that cannot start a token",
			in:   lines("a: 1", "b: @x"),
			want: []diag{{2, "", "found character that cannot start any token"}},
		},
		{
			name: "tab at the start of the file",
			in:   lines("\ta: 1"),
			want: []diag{{1, "", "found character that cannot start any token"}},
		},
		{
			// The library names line 2, where the scalar before the tab
			// starts.
			name: "tab in the indentation",
			in:   lines("a:", "  b: x", "\tc: 1"),
			want: []diag{{3, "", "found a tab character that violates indentation"}},
		},
		{
			name: "unterminated quoted string",
			in:   lines("a: 1", "b: 'x", "", "c: 3"),
			want: []diag{{2, "", "found unexpected end of stream"}},
		},
		{
			name: "plain scalar where a key is expected",
			in:   lines("a:", "  b: x", "  y"),
			want: []diag{{3, "", "could not find expected ':'"}},
		},

		// Errors the library gives no line.
		{
			name: "unknown alias",
			in:   lines("a: &kk 1", "# *k in a comment is not a use", "b: [*kk, '*k', *k]"),
			want: []diag{{3, "", "invalid YAML: unknown anchor 'k' referenced"}},
		},
		{
			name: "invalid UTF-8",
			in:   lines("a: 1", "b: \xff"),
			want: []diag{{2, "", "invalid leading UTF-8 octet"}},
		},
		{
			name: "control character",
			in:   lines("a: 1", "", "b: \"\x01\""),
			want: []diag{{3, "", "control characters are not allowed"}},
		},

		// Documents.
		{
			name: "second document in a file of one",
			in:   lines("name: a", "---", "name: b"),
			one:  true,
			want: []diag{{2, "", "only one YAML document is allowed in this file; found another"}},
		},
		{
			name: "errors in each document are reported",
			in:   lines("name: 1", "---", "name: [b]"),
			want: []diag{{1, "name", `expected a name, got "1"`}, {3, "name", "expected a name, got a list"}},
		},

		// The walk: fields.
		{
			name: "unknown field",
			in:   lines("name: a", "bogus: 1"),
			want: []diag{{2, "bogus", "unknown field (known: name, enabled, ports, labels, spec)"}},
		},
		{
			name: "misplaced field, explained",
			in:   lines("spec:", "  timeout: 1s", "  retry: 2"),
			want: []diag{{3, "spec.retry", "retry belongs at the top level"}},
		},
		{
			name: "field given twice",
			in:   lines("name: a", "enabled: true", "name: b"),
			want: []diag{{3, "name", "field given twice (first at line 1)"}},
		},
		{
			name: "merge key",
			in:   lines("spec:", "  <<: {timeout: 1s}"),
			want: []diag{{2, "spec.<<", "YAML merge keys are not supported; repeat the fields"}},
		},
		{
			name: "key that is not a name",
			in:   lines("? [a]", ": 1"),
			want: []diag{{1, "", "expected field names, got a list"}},
		},

		// The walk: types.
		{
			name: "top level is a list",
			in:   lines("- a"),
			want: []diag{{1, "", "expected a mapping, got a list"}},
		},
		{
			name: "mapping expected, nothing given",
			in:   lines("spec:"),
			want: []diag{{1, "spec", "expected a mapping, got nothing"}},
		},
		{
			name: "list expected",
			in:   lines("ports:", "  a: 1"),
			want: []diag{{2, "ports", "expected a list, got a mapping"}},
		},
		{
			name: "scalar expected",
			in:   lines("ports:", "  - 80", "  - [81]"),
			want: []diag{{3, "ports[1]", "expected a port, got a list"}},
		},
		{
			name: "string expected, number given",
			in:   lines("name: 12"),
			want: []diag{{1, "name", `expected a name, got "12"`}},
		},
		{
			name: "boolean expected",
			in:   lines("enabled: yes"),
			want: []diag{{1, "enabled", `expected true or false, got "yes"`}},
		},

		// The walk: free mappings.
		{
			name: "label given twice",
			in:   lines("labels:", "  team: a", "  team: b"),
			want: []diag{{3, "labels.team", "key given twice (first at line 2)"}},
		},
		{
			name: "label value not a string",
			in:   lines("labels: {team: [a]}"),
			want: []diag{{1, "labels.team", "expected a string, got a list"}},
		},
		{
			name: "empty label name",
			in:   lines("labels: {'': a}"),
			want: []diag{{1, "labels", `expected non-empty names, got ""`}},
		},
		{
			name: "labels not a mapping",
			in:   lines("labels: [a]"),
			want: []diag{{1, "labels", "expected a mapping of labels, got a list"}},
		},

		// Aliases.
		{
			name:    "aliases not followed",
			in:      lines("name: &n a", "spec: &s {timeout: 1s}", "labels: *s"),
			aliases: 0,
			want:    []diag{{3, "labels", "expected a mapping of labels, got an alias"}},
		},
		{
			name:    "aliases followed: problems are at the anchored value",
			in:      lines("spec: &s {timeout: [1s]}", "labels: {team: *s}"),
			aliases: 10,
			want:    []diag{{1, "spec.timeout", "expected a duration, got a list"}, {1, "labels.team", "expected a string, got a mapping"}},
		},
		{
			name:    "too many alias uses",
			in:      lines("ports: &p [1]", "spec: {timeout: *p}", "labels: {a: *p, b: *p}"),
			aliases: 2,
			// What is found through an alias is at the anchored value.
			want: []diag{{1, "spec.timeout", "expected a duration, got a list"}, {1, "labels.a", "expected a string, got a list"}, {3, "", "too many alias uses (more than 2)"}, {3, "labels.b", "expected a string, got nothing"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Reader{File: "t.yaml", Source: "test", MaxAliases: tt.aliases}
			if tt.one {
				if n := r.Document([]byte(tt.in)); n != nil {
					readSchema(r, n)
				}
			} else {
				for _, n := range r.Documents([]byte(tt.in)) {
					readSchema(r, n)
				}
			}
			checkDiags(t, r.Diagnostics(), tt.want)
		})
	}
}

func checkDiags(t *testing.T, got []sources.Diagnostic, want []diag) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		d, w := got[i], want[i]
		ok = d.Location == fmt.Sprintf("t.yaml:%d", w.line) && d.Field == w.field &&
			strings.Contains(d.Message, w.msg) && d.Severity == sources.SeverityError && d.Source == "test"
	}
	if !ok {
		t.Errorf("diagnostics:\n%s\nwant:\n%v", diagText(got), want)
	}
}

func diagText(ds []sources.Diagnostic) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "  %s (%s, %s)\n", d, d.Severity, d.Source)
	}
	return b.String()
}

// TestDocuments checks which documents are read and where each starts.
func TestDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []int // the line of each document's top-level node
	}{
		{"empty file", "", nil},
		{"only comments", lines("# nothing yet"), nil},
		{"only separators", lines("---", "---"), nil},
		{"empty documents are left out", lines("---", "# none", "---", "a: 1", "---", "~", "---", "b: 2", "---"), []int{4, 8}},
		{"a file without a trailing line break", "a: 1", []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Reader{File: "t.yaml"}
			var got []int
			for _, n := range r.Documents([]byte(tt.in)) {
				got = append(got, n.Line)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" || len(r.Diagnostics()) > 0 {
				t.Errorf("lines mismatch (-want +got):\n%s\ndiagnostics:\n%s", diff, diagText(r.Diagnostics()))
			}
			if n := r.Document([]byte(tt.in)); (n == nil) != (len(tt.want) == 0) {
				t.Errorf("Document() = %v, want a node: %v", n, len(tt.want) > 0)
			}
		})
	}
}

// TestLines checks that the line of every field read is recorded by path.
func TestLines(t *testing.T) {
	r := &Reader{File: "t.yaml", Lines: map[string]int{}}
	for _, n := range r.Documents([]byte(lines("name: a", "spec:", "  timeout:", "    1s", "labels: {a: b}"))) {
		readSchema(r, n)
	}
	want := map[string]int{"name": 1, "spec": 3, "spec.timeout": 4, "labels": 5}
	if diff := cmp.Diff(want, r.Lines); diff != "" {
		t.Errorf("Lines mismatch (-want +got):\n%s", diff)
	}
}
