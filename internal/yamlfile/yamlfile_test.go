package yamlfile_test

import (
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/yamlfile"
)

func TestDecodeStrict(t *testing.T) {
	var v struct {
		Version int `yaml:"version"`
		Rules   []struct {
			Match string `yaml:"match"`
		} `yaml:"rules"`
	}
	root, err := yamlfile.DecodeStrict([]byte("version: 1\nrules:\n  - match: a\n  - match: b\n"), &v)
	if err != nil {
		t.Fatal(err)
	}
	if got := yamlfile.LineOf(yamlfile.MapValue(yamlfile.SeqItem(yamlfile.MapValue(root, "rules"), 1), "match"), root); got != 4 {
		t.Errorf("line of rules[1].match = %d, want 4", got)
	}
	if yamlfile.SeqItem(yamlfile.MapValue(root, "rules"), 5) != nil || yamlfile.MapValue(root, "none") != nil {
		t.Error("missing nodes must be nil")
	}

	for _, tc := range []struct {
		in   string
		line int
		msg  string
	}{
		{"version: 1\ncolour: red\n", 2, `unknown key "colour" (allowed here: version, rules)`},
		{"version: 1\nrule:\n", 2, `unknown key "rule": did you mean "rules"?`},
		{"rules:\n  - matches: a\n", 2, `unknown key "matches": did you mean "match"?`},
		{"rules:\n  - glob: a\n", 2, `unknown key "glob" (allowed here: match)`},
		{"version: x\n", 1, "cannot unmarshal !!str `x` into int"},
		{"version: [\n", 1, "did not find expected node content"},
	} {
		_, err := yamlfile.DecodeStrict([]byte(tc.in), &v)
		if err == nil {
			t.Errorf("%q: no error", tc.in)
			continue
		}
		line, msg := yamlfile.ErrorLine(err)
		if line != tc.line || !strings.Contains(msg, tc.msg) {
			t.Errorf("%q: line %d %q, want line %d and %q", tc.in, line, msg, tc.line, tc.msg)
		}
	}
}
