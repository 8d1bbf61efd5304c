package etcd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/sluice-mesh/sluice/sources"
)

// JSON helpers: known fields are type-checked one by one so a diagnostic
// can name the field; unknown fields are ignored.

func jsonObject(v []byte) (map[string]json.RawMessage, error) {
	if k := jsonKind(v); k != "object" {
		if k == "" {
			return nil, fmt.Errorf("not JSON: %s", preview(v))
		}
		return nil, fmt.Errorf("must be a JSON object, got %s", k)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return raw, nil
}

// jsonField decodes raw[name] with dec; absent and null fields report false
// without a diagnostic, wrong types report false with one.
func jsonField[T any](b *builder, raw map[string]json.RawMessage, name string, dec func(json.RawMessage) (T, string, error)) (T, bool) {
	var zero T
	v, ok := raw[name]
	if !ok || jsonKind(v) == "null" {
		return zero, false
	}
	t, sub, err := dec(v)
	if err != nil {
		field := name
		if sub != "" {
			field += sub
		}
		b.errorf(field, "%v", err)
		return zero, false
	}
	return t, true
}

func jsonKind(v []byte) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || !json.Valid(v) {
		return ""
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func jsonString(v json.RawMessage) (string, string, error) {
	if k := jsonKind(v); k != "string" {
		return "", "", fmt.Errorf("must be a string, got %s", k)
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, "", err
}

func jsonNumber(v json.RawMessage) (int64, string, error) {
	if k := jsonKind(v); k != "number" {
		return 0, "", fmt.Errorf("must be a number, got %s", k)
	}
	n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	return n, "", nil
}

func jsonInt(v json.RawMessage) (int64, string, error) {
	if k := jsonKind(v); k != "number" {
		return 0, "", fmt.Errorf("must be an integer, got %s", k)
	}
	s := string(bytes.TrimSpace(v))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("must be an integer from 0 to %d, got %s", sources.MaxWeight, s)
	}
	return n, "", nil
}

func jsonStringMap(v json.RawMessage) (map[string]string, string, error) {
	if k := jsonKind(v); k != "object" {
		return nil, "", fmt.Errorf("must be an object of strings, got %s", k)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, "", err
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := make(map[string]string, len(raw))
	for _, k := range keys {
		s, _, err := jsonString(raw[k])
		if err != nil {
			return nil, "." + k, err
		}
		m[k] = s
	}
	return m, "", nil
}

func jsonStringList(v json.RawMessage) ([]string, string, error) {
	if k := jsonKind(v); k != "array" {
		return nil, "", fmt.Errorf("must be an array of strings, got %s", k)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, "", err
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		s, _, err := jsonString(r)
		if err != nil {
			return nil, "[" + strconv.Itoa(i) + "]", err
		}
		out[i] = s
	}
	return out, "", nil
}
