package manifests_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/manifests"
	"github.com/kfm-project/kfm/registry"
)

// The bundle.yaml schema and kfm's bundle.yaml parser agree: the example
// validates and packs; a typo fails both.
func TestBundleFileSchema(t *testing.T) {
	s := compile(t, "bundle.schema.json")
	example, err := fs.ReadFile(manifests.FS, "examples/bundle.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlToJSONValue(t, example)); err != nil {
		t.Fatalf("examples/bundle.yaml does not match the schema: %v", err)
	}
	bf, err := registry.ParseBundleFile(example)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := programs.Object("xdp_ratelimit")
	if err != nil {
		t.Fatal(err)
	}
	b, err := registry.Pack(obj, registry.PackOptions{BundleFile: bf, ObjectName: "xdp_ratelimit.o"})
	if err != nil {
		t.Fatalf("the example does not pack with its object: %v", err)
	}
	p, _ := b.Config.Program("xdp_ratelimit")
	if p.Priority != 10 || len(p.Params) != 2 {
		t.Errorf("packed example: %+v", p)
	}

	for name, doc := range map[string]string{
		"typo":               "name: x\nprogams: []\n",
		"hook":               "programs:\n  - function: f\n    hooks: [tc]\n",
		"no function":        "programs:\n  - hooks: [xdp]\n",
		"param without name": "programs:\n  - function: f\n    params:\n      - description: d\n",
		"unknown category":   "categories: [firewal]\n",
		"keyword with space": "keywords: [rate limit]\n",
		"homepage not a URL": "homepage: example.com\n",
	} {
		if err := s.Validate(yamlToJSONValue(t, []byte(doc))); err == nil {
			t.Errorf("%s: the schema accepts %q", name, doc)
		}
		if _, err := registry.ParseBundleFile([]byte(doc)); err == nil {
			t.Errorf("%s: the parser accepts %q", name, doc)
		}
	}
}

// Every sample program packs into a config that matches the config schema,
// and a config with fields a newer kfm added still matches.
func TestBundleConfigSchema(t *testing.T) {
	s := compile(t, "bundle-config.schema.json")
	for _, name := range programs.Names() {
		obj, err := programs.Object(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := registry.Pack(obj, registry.PackOptions{Name: name, ObjectName: name + ".o"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var v any
		if err := json.Unmarshal(b.ConfigJSON(), &v); err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(v); err != nil {
			t.Errorf("%s: config does not match the schema: %v\n%s", name, err, b.ConfigJSON())
		}
	}
	var future any
	_ = json.Unmarshal([]byte(`{"name":"x","license":"GPL","programs":[{"function":"f","type":"xdp","hooks":["xdp"],"priority":1,"proceedOn":["pass"],"newer":1}],"signedBy":"x"}`), &future)
	if err := s.Validate(future); err != nil {
		t.Errorf("a config with unknown fields does not match: %v", err)
	}
	var broken any
	_ = json.Unmarshal([]byte(`{"name":"x","license":"GPL","programs":[{"function":"f","type":"xdp","hooks":["tc"],"priority":1,"proceedOn":[]}]}`), &broken)
	if err := s.Validate(broken); err == nil || !strings.Contains(err.Error(), "hooks") {
		t.Errorf("a config with an unknown hook matches: %v", err)
	}
}

// Every sample program's bundle.yaml matches the schema and packs with its
// object and readme into a bundle with the publisher's metadata.
func TestSampleBundleFiles(t *testing.T) {
	s := compile(t, "bundle.schema.json")
	for _, name := range programs.Names() {
		path := filepath.Join("..", "examples", "programs", name, "bundle.yaml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("sample program %s has no bundle.yaml: %v", name, err)
		}
		if err := s.Validate(yamlToJSONValue(t, data)); err != nil {
			t.Errorf("%s does not match the schema: %v", path, err)
		}
		bf, err := registry.ReadBundleFile(path)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := programs.Object(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := registry.Pack(obj, registry.PackOptions{BundleFile: bf, ObjectName: name + ".o"})
		if err != nil {
			t.Fatalf("%s does not pack: %v", path, err)
		}
		c := b.Config
		if c.Description == "" || len(c.Keywords) == 0 || len(c.Categories) == 0 || c.Homepage == "" || len(c.Authors) == 0 || b.Readme == "" {
			t.Errorf("%s: incomplete metadata: %+v, readme %d bytes", path, c, len(b.Readme))
		}
		if err := registry.CheckSPDX(c.License); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if len(b.Manifest.Layers) != 2 || b.Manifest.Layers[1].MediaType != registry.ReadmeMediaType {
			t.Errorf("%s: layers %+v", path, b.Manifest.Layers)
		}
	}
}
