package strictyaml

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// How go.yaml.in/yaml/v3 (v3.0.4) reports a syntax error: "yaml: line N: "
// and the problem, where N is the line of the construct the problem was
// found in (a flow sequence whose "]" is missing, the block mapping a
// mis-indented key breaks) or, when that construct starts on the first line,
// the line of the problem itself (which, for a problem at the end of the
// input, is past the last line when the file ends with a line break). It
// counts N from 1 for the errors of its
// scanner and from 0 for those of its parser, and leaves N out when the line
// is the first (0 for either) and for the errors of its reader (bytes that
// are not YAML text) and of alias resolution. syntaxError corrects and
// completes that; the table test pins every kind.
var linePrefix = regexp.MustCompile(`^yaml: line (\d+): `)

// parserProblems are the problems of the library's parser stage, whose
// lines it counts from 0.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found undefined tag handle",
	"found duplicate %YAML directive",
	"found duplicate %TAG directive",
	"found incompatible YAML document",
}

// readerProblems are the problems of the library's reader stage, which
// checks that the input is text YAML allows. It gives them no line.
var readerProblems = []string{
	"invalid leading UTF-8 octet",
	"incomplete UTF-8 octet sequence",
	"invalid trailing UTF-8 octet",
	"invalid length of a UTF-8 sequence",
	"invalid Unicode character",
	"control characters are not allowed",
}

const tabProblem = "found a tab character that violates indentation"

var unknownAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// syntaxError returns the line, counted from 1, and the message of an error
// the YAML library's decoder returned for data.
func syntaxError(err error, data []byte) (line int, msg string) {
	msg = strings.TrimPrefix(err.Error(), "yaml: ")
	if m := linePrefix.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = err.Error()[len(m[0]):]
	}
	switch {
	case slices.Contains(parserProblems, msg):
		line++
	case msg == tabProblem:
		// The line given is that of the scalar before the tab: point at
		// the tab.
		line = firstLine(data, max(line, 1), indentedWithTab)
	case slices.Contains(readerProblems, msg):
		line = firstBadCharLine(data)
	default:
		if m := unknownAnchor.FindStringSubmatch(msg); m != nil {
			line = aliasLine(data, m[1])
		}
	}
	// A problem found at the end of the input is marked past its last
	// line when the file ends with a line break: point at the last line.
	return min(max(line, 1), lastLine(data)), msg
}

// lastLine returns the number of the last line of data, 1 for an empty file.
func lastLine(data []byte) int {
	n := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return max(n, 1)
}

// firstLine returns the number of the first line of data, from line from
// on, for which match is true; from if there is none.
func firstLine(data []byte, from int, match func(line []byte) bool) int {
	n := 1
	for rest := data; len(rest) > 0; n++ {
		line, next, _ := bytes.Cut(rest, []byte("\n"))
		if n >= from && match(line) {
			return n
		}
		rest = next
	}
	return from
}

// indentedWithTab reports whether a line's indentation holds a tab.
func indentedWithTab(line []byte) bool {
	indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
	return bytes.IndexByte(indent, '\t') >= 0
}

// aliasLine returns the line of the first use of the alias *name in data,
// or 0 if it cannot be found. It skips comments, not quoted text.
func aliasLine(data []byte, name string) int {
	alias := []byte("*" + name)
	n := 1
	for rest := data; len(rest) > 0; n++ {
		line, next, _ := bytes.Cut(rest, []byte("\n"))
		rest = next
		for off := 0; ; {
			i := bytes.Index(line[off:], alias)
			if i < 0 {
				break
			}
			at, end := off+i, off+i+len(alias)
			if inComment(line, at) {
				break
			}
			// An alias starts a value (after a blank or an indicator) and
			// its name runs to a blank or a flow indicator.
			before := at == 0 || bytes.IndexByte([]byte(" \t[{,:-?"), line[at-1]) >= 0
			after := end == len(line) || bytes.IndexByte([]byte(" \t\r]},"), line[end]) >= 0
			if before && after {
				return n
			}
			off = end
		}
	}
	return 0
}

// inComment reports whether the byte at i of a line is in a comment: after
// a "#" that starts the line or follows a blank.
func inComment(line []byte, i int) bool {
	for j := range i {
		if line[j] == '#' && (j == 0 || line[j-1] == ' ' || line[j-1] == '\t') {
			return true
		}
	}
	return false
}

// firstBadCharLine returns the line of the first character of data that is
// not UTF-8 or that YAML does not allow in a file, or 0 if there is none
// (or the file is UTF-16, which this does not decode).
func firstBadCharLine(data []byte) int {
	if bytes.HasPrefix(data, []byte{0xFF, 0xFE}) || bytes.HasPrefix(data, []byte{0xFE, 0xFF}) {
		return 0
	}
	line := 1
	for i := 0; i < len(data); {
		c, size := utf8.DecodeRune(data[i:])
		if (c == utf8.RuneError && size <= 1) || !yamlChar(c) {
			return line
		}
		if c == '\n' {
			line++
		}
		i += size
	}
	return 0
}

// yamlChar reports whether YAML allows a character in a file: tab, line
// breaks and the printable characters (YAML 1.2, section 5.1).
func yamlChar(c rune) bool {
	switch {
	case c == '\t', c == '\n', c == '\r', c == 0x85:
		return true
	case c >= 0x20 && c <= 0x7E, c >= 0xA0 && c <= 0xD7FF, c >= 0xE000 && c <= 0xFFFD, c >= 0x10000 && c <= 0x10FFFF:
		return true
	}
	return false
}
