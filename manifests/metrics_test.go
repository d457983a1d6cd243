package manifests_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/registry"
)

// The sample programs' bundle.yaml files (with their metric declarations)
// match the schema, and declarations the parser refuses, the schema
// refuses too.
func TestSampleBundleFilesMatchSchema(t *testing.T) {
	s := compile(t, "bundle.schema.json")
	files, err := filepath.Glob("../examples/programs/*.bundle.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("sample bundle files: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(yamlToJSONValue(t, b)); err != nil {
			t.Errorf("%s does not match the schema: %v", f, err)
		}
		if _, err := registry.ParseBundleFile(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	const head = "programs:\n  - function: f\n    metrics:\n"
	for name, metric := range map[string]string{
		"kfm prefix":     "      - {name: kfm_x_total, type: counter, map: m}\n",
		"bad type":       "      - {name: x_total, type: histogram, map: m}\n",
		"no map":         "      - {name: x_total, type: counter}\n",
		"reserved label": "      - {name: x_total, type: counter, map: m, labels: [{name: interface}]}\n",
		"unknown key":    "      - {name: x_total, type: counter, map: m, unit: s}\n",
	} {
		doc := []byte(head + metric)
		if err := s.Validate(yamlToJSONValue(t, doc)); err == nil {
			t.Errorf("%s: the schema accepts %s", name, metric)
		}
		if _, err := registry.ParseBundleFile(doc); err == nil {
			t.Errorf("%s: the parser accepts %s", name, metric)
		}
	}
}
