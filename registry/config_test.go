package registry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testprogs"
	"github.com/kfm-project/kfm/registry"
)

func TestConfigKeepsUnknownFields(t *testing.T) {
	in := []byte(`{"name":"x","license":"GPL","future":{"b":1,"a":[true]},` +
		`"programs":[{"function":"f","type":"xdp","hooks":["xdp"],"priority":5,"proceedOn":["pass"],"newField":"kept",` +
		`"params":[{"name":"p","type":"__u64","default":18446744073709551615,"unit":"pps"}],` +
		`"maps":[{"name":"m","type":"hash","pinning":"none","shared":true}]}]}`)
	cfg, err := registry.ParseConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Extra["future"]) != `{"b":1,"a":[true]}` || string(cfg.Programs[0].Extra["newField"]) != `"kept"` {
		t.Errorf("extra fields: %s %s", cfg.Extra["future"], cfg.Programs[0].Extra["newField"])
	}
	if cfg.Programs[0].Params[0].Default != json.Number("18446744073709551615") {
		t.Errorf("u64 default lost precision: %v", cfg.Programs[0].Params[0].Default)
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := registry.ParseConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := json.Marshal(again)
	if !bytes.Equal(out, out2) {
		t.Fatalf("round trip not stable:\n%s\n%s", out, out2)
	}
	for _, want := range []string{`"future":{"b":1,"a":[true]}`, `"newField":"kept"`, `"unit":"pps"`, `"shared":true`, `18446744073709551615`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("marshalled config lost %s: %s", want, out)
		}
	}
	// Keys come out sorted: stable bytes, stable digests.
	if !strings.HasPrefix(string(out), `{"future":`) {
		t.Errorf("keys not sorted: %s", out)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"not JSON":        `{`,
		"null":            `null`,
		"no name":         `{"programs":[{"function":"f"}]}`,
		"no programs":     `{"name":"x"}`,
		"no function":     `{"name":"x","programs":[{"type":"xdp"}]}`,
		"twice":           `{"name":"x","programs":[{"function":"f"},{"function":"f"}]}`,
		"bad hook":        `{"name":"x","programs":[{"function":"f","hooks":["tc"]}]}`,
		"wrong type":      `{"name":1,"programs":[]}`,
		"param unnamed":   `{"name":"x","programs":[{"function":"f","params":[{}]}]}`,
		"programs object": `{"name":"x","programs":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := registry.ParseConfig([]byte(in)); !errors.Is(err, registry.ErrInvalidBundle) {
				t.Errorf("ParseConfig(%s) = %v, want ErrInvalidBundle", in, err)
			}
		})
	}
	if _, err := registry.ParseConfig(bytes.Repeat([]byte(" "), registry.MaxConfigSize+1)); !errors.Is(err, registry.ErrTooLarge) {
		t.Errorf("oversized config: %v", err)
	}
}

func TestPackValidates(t *testing.T) {
	obj := readObject(t)
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown function", "name: x\nprograms:\n  - function: nope\n", `no program "nope"`},
		{"hook does not fit", "name: x\nprograms:\n  - function: tc_prog\n    hooks: [xdp]\n", "does not fit a sched_cls program"},
		{"unknown hook", "name: x\nprograms:\n  - function: tc_prog\n    hooks: [tc]\n", `unknown hook "tc"`},
		{"bad proceedOn", "name: x\nprograms:\n  - function: with_config\n    proceedOn: [ok]\n", `unknown XDP verdict "ok"`},
		{"unknown param", "name: x\nprograms:\n  - function: with_config\n    params:\n      - name: limit\n", "param limit, which is not a volatile const global"},
		{"not a param", "name: x\nprograms:\n  - function: with_config\n    params:\n      - name: not_a_param\n", "not_a_param"},
		{"typo in a key", "name: x\nprogams: []\n", `line 2: unknown key "progams": did you mean "programs"?`},
		{"no name", "version: 1\n", "no name"},
		{"declared twice", "name: x\nprograms:\n  - function: tc_prog\n  - function: tc_prog\n", "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bf, err := registry.ParseBundleFile([]byte(tc.yaml))
			if err == nil {
				_, err = registry.Pack(obj, registry.PackOptions{BundleFile: bf})
			}
			if !errors.Is(err, registry.ErrInvalidBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidBundle saying %q", err, tc.want)
			}
		})
	}
	// An object without a licence is refused.
	nolicense, err := readFile("../bpf/testdata/nolicense.o")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Pack(nolicense, registry.PackOptions{Name: "x"}); !errors.Is(err, registry.ErrInvalidBundle) || !strings.Contains(err.Error(), "license") {
		t.Fatalf("object without licence: %v", err)
	}
	if _, err := registry.Pack([]byte("not an ELF"), registry.PackOptions{Name: "x"}); !errors.Is(err, registry.ErrInvalidBundle) {
		t.Fatalf("not an ELF: %v", err)
	}
}

func TestPackWithoutBundleFile(t *testing.T) {
	b, err := registry.Pack(readObject(t), registry.PackOptions{Name: "bare", ObjectName: "/some/dir/params.o"})
	if err != nil {
		t.Fatal(err)
	}
	if b.ObjectName != "params.o" || b.Config.License != "Dual BSD/GPL" || len(b.Config.Programs) != 3 {
		t.Errorf("bundle %+v", b.Config)
	}
	m := b.Manifest
	if m.ArtifactType != registry.ArtifactType || m.Config.MediaType != registry.ConfigMediaType ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != registry.ObjectMediaType || m.Layers[0].Annotations[registry.AnnotationTitle] != "params.o" {
		t.Errorf("manifest %+v", m)
	}
	for k, want := range map[string]string{registry.AnnotationTitle: "bare", registry.AnnotationLicenses: "Dual BSD/GPL", registry.AnnotationCreated: "1970-01-01T00:00:00Z"} {
		if m.Annotations[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], want)
		}
	}
	if _, ok := m.Annotations[registry.AnnotationVersion]; ok {
		t.Error("empty version annotated")
	}
}

// Frags-aware XDP programs announce what they need; the sample programs
// all pack.
func TestPackTestPrograms(t *testing.T) {
	for _, name := range testprogs.Names() {
		obj, err := testprogs.Object(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := registry.Pack(obj, registry.PackOptions{Name: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := b.Config.Programs[0]
		frags := slices.Contains(p.RequiredFeatures, "xdp-frags")
		if frags != (name == "xdp_frags") {
			t.Errorf("%s: requiredFeatures %v", name, p.RequiredFeatures)
		}
	}
}

// publish records what kfm computed from the bytecode per program; a
// config written before capabilities existed still reads, without them.
func TestPackCapabilities(t *testing.T) {
	obj, err := testprogs.Object("xdp_probe_read")
	if err != nil {
		t.Fatal(err)
	}
	b, err := registry.Pack(obj, registry.PackOptions{Name: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := registry.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Programs[0].Capabilities
	if c == nil || !slices.Equal(c.Helpers, []string{"bpf_probe_read_kernel"}) || c.Type != "xdp" || !c.ReadOnlyObserver || c.Instructions == 0 {
		t.Fatalf("capabilities after a round trip: %+v", c)
	}
	old, err := registry.ParseConfig([]byte(`{"name":"x","license":"GPL","programs":[{"function":"f","type":"xdp","hooks":["xdp"],"priority":5,"proceedOn":["pass"]}]}`))
	if err != nil || old.Programs[0].Capabilities != nil {
		t.Fatalf("an old config: %v, capabilities %+v", err, old.Programs[0].Capabilities)
	}
}
