package yamlfile

import (
	"bytes"
	"errors"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DecodeStrict decodes the YAML document in data into v, refusing keys v
// has no field for, and returns the document's root node (for Line
// lookups; nil if the document is empty).
func DecodeStrict(data []byte, v any) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
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
