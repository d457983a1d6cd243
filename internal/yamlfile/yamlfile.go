package yamlfile

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DecodeStrict decodes the YAML document in data into v, refusing keys v
// has no field for, and returns the document's root node (for Line
// lookups; nil if the document is empty).
func DecodeStrict(data []byte, v any) (*yaml.Node, error) {
	if err := DecodeStrictValue(data, v); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// DecodeStrictValue is DecodeStrict for callers that need no root node:
// the document is parsed once instead of twice (a kfm.lock of a few
// hundred chains takes tens of milliseconds to parse).
func DecodeStrictValue(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return ExplainUnknownKeys(err, v)
	}
	return nil
}

var linePattern = regexp.MustCompile(`line (\d+): `)

// ErrorLine splits a decoding error into the first line it names (0 when
// none) and its messages on one line without the "yaml: " and "line N: "
// prefixes.
func ErrorLine(err error) (int, string) {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = append(msgs, te.Errors...)
	} else {
		msgs = []string{err.Error()}
	}
	line := 0
	for i, m := range msgs {
		m = strings.ReplaceAll(strings.TrimPrefix(m, "yaml: "), "\n", " ")
		if sm := linePattern.FindStringSubmatchIndex(m); sm != nil && line == 0 {
			line, _ = strconv.Atoi(m[sm[2]:sm[3]])
			m = m[:sm[0]] + m[sm[1]:]
		}
		msgs[i] = strings.TrimSpace(m)
	}
	return line, strings.Join(msgs, "; ")
}

// MapValue is the value of key in mapping node n, nil if there is none.
func MapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// SeqItem is item i of sequence node n, nil if there is none.
func SeqItem(n *yaml.Node, i int) *yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// LineOf is n's line, or fallback's when n is nil (0 when both are).
func LineOf(n, fallback *yaml.Node) int {
	switch {
	case n != nil:
		return n.Line
	case fallback != nil:
		return fallback.Line
	}
	return 0
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type (.+)$`)

// ExplainUnknownKeys rewrites what a strict decoder into v says about an
// unknown key, "field X not found in type pkg.T" (a Go type name means
// nothing to someone editing a YAML file), into `unknown key "X"`, with the
// key meant when one is a typo away, else the keys allowed there. Other
// errors are returned as they are.
func ExplainUnknownKeys(err error, v any) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	t := reflect.TypeOf(v)
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, m := range te.Errors {
		out.Errors[i] = unknownField.ReplaceAllStringFunc(m, func(s string) string {
			sm := unknownField.FindStringSubmatch(s)
			key, keys := sm[1], yamlKeys(t, sm[2], map[reflect.Type]bool{})
			msg := strconv.Quote(key)
			if near := nearest(key, keys); near != "" {
				return "unknown key " + msg + ": did you mean " + strconv.Quote(near) + "?"
			}
			if len(keys) > 0 {
				return "unknown key " + msg + " (allowed here: " + strings.Join(keys, ", ") + ")"
			}
			return "unknown key " + msg
		})
	}
	return out
}

// yamlKeys lists the YAML keys of the struct type called name reachable
// from t, nil when there is none.
func yamlKeys(t reflect.Type, name string, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return nil
	}
	seen[t] = true
	if t.String() == name {
		var keys []string
		for f := range t.Fields() {
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if !f.IsExported() || tag == "-" {
				continue
			}
			if tag == "" {
				tag = strings.ToLower(f.Name)
			}
			keys = append(keys, tag)
		}
		return keys
	}
	for f := range t.Fields() {
		if keys := yamlKeys(f.Type, name, seen); keys != nil {
			return keys
		}
	}
	return nil
}

// nearest is the key of keys at most two edits from key (the closest;
// "" when none is).
func nearest(key string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := distance(strings.ToLower(key), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
