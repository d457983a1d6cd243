package registry_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/registry"
)

func samplePack(t *testing.T, name, yaml string) (*registry.Bundle, error) {
	t.Helper()
	obj, err := programs.Object(name)
	if err != nil {
		t.Fatal(err)
	}
	bf, err := registry.ParseBundleFile([]byte(yaml))
	if err != nil {
		return nil, err
	}
	return registry.Pack(obj, registry.PackOptions{BundleFile: bf, ObjectName: name + ".o"})
}

// Declarations are checked against the object's BTF at publish: the map,
// the key and value fields must exist and be integers.
func TestPackChecksMetricDeclarations(t *testing.T) {
	const head = "name: x\nprograms:\n  - function: xdp_portfilter\n    metrics:\n"
	for _, tc := range []struct{ name, metric, want string }{
		{"no such map", "      - {name: a_total, type: counter, map: nope, value: packets}\n", `no map "nope" (it has drops)`},
		{"no such value field", "      - {name: a_total, type: counter, map: drops, value: packet}\n", `struct counter has no field "packet" (it has packets, bytes)`},
		{"struct value without field", "      - {name: a_total, type: counter, map: drops}\n", "is struct counter, not an integer"},
		{"field of an integer key", "      - {name: a_total, type: counter, map: drops, value: packets, labels: [{name: k, field: port}]}\n", `is __u32, not a struct: it has no field "port"`},
		{"counter without _total", "      - {name: drops, type: counter, map: drops, value: packets}\n", "ends in _total"},
		{"gauge with _total", "      - {name: drops_total, type: gauge, map: drops, value: packets}\n", "gauge's name does not end in _total"},
		{"kfm prefix", "      - {name: kfm_drops_total, type: counter, map: drops, value: packets}\n", "kfm_ prefix is kfm's own"},
		{"bad type", "      - {name: drops_total, type: histogram, map: drops, value: packets}\n", `type "histogram": want counter or gauge`},
		{"reserved label", "      - {name: drops_total, type: counter, map: drops, value: packets, labels: [{name: program}]}\n", "label program is one kfm adds itself"},
		{"bad name", "      - {name: drops-total, type: counter, map: drops, value: packets}\n", "use letters, digits and '_'"},
		{"twice", "      - {name: a_total, type: counter, map: drops, value: packets}\n      - {name: a_total, type: counter, map: drops, value: bytes}\n", "declared twice"},
		{"typo in a key", "      - {name: a_total, type: counter, map: drops, vlaue: packets}\n", `unknown key "vlaue"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := samplePack(t, "xdp_portfilter", head+tc.metric)
			if !errors.Is(err, registry.ErrInvalidBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidBundle saying %q", err, tc.want)
			}
		})
	}
}

// The sample programs' bundle.yaml files pack, and their declarations reach
// the config with what an exporter needs; the config round-trips and keeps
// fields of a newer kfm.
func TestSampleMetricDeclarations(t *testing.T) {
	for _, tc := range []struct {
		name, metric, mapName string
		keys                  []bpf.Field
		value                 bpf.Field
		perCPU                bool
	}{
		{"xdp_portfilter", "portfilter_dropped_packets_total", "drops", nil, bpf.Field{Name: "packets", Size: 8}, true},
		{"xdp_ratelimit", "ratelimit_dropped_packets_total", "stats", nil, bpf.Field{Name: "dropped", Offset: 8, Size: 8}, true},
		{"xdp_count", "count_packets_total", "counters", []bpf.Field{{Size: 4}}, bpf.Field{Name: "packets", Size: 8}, true},
		{"tc_count", "tc_count_packets_total", "totals", nil, bpf.Field{Name: "packets", Size: 8}, true},
		{"xdp_icmpdrop", "icmpdrop_dropped_packets_total", "dropped", nil, bpf.Field{Name: "packets", Size: 8}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bf, err := registry.ReadBundleFile("../examples/programs/" + tc.name + ".bundle.yaml")
			if err != nil {
				t.Fatal(err)
			}
			obj, err := programs.Object(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			b, err := registry.Pack(obj, registry.PackOptions{BundleFile: bf, ObjectName: tc.name + ".o"})
			if err != nil {
				t.Fatal(err)
			}
			p, err := b.Config.Program(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			var m *registry.MetricConfig
			for i := range p.Metrics {
				if p.Metrics[i].Name == tc.metric {
					m = &p.Metrics[i]
				}
			}
			if m == nil {
				t.Fatalf("config declares %+v, not %s", p.Metrics, tc.metric)
			}
			o, err := bpf.ParseObject(tc.name, obj)
			if err != nil {
				t.Fatal(err)
			}
			l, err := m.Layout(o)
			if err != nil {
				t.Fatal(err)
			}
			if l.Map != tc.mapName || l.PerCPU != tc.perCPU || l.Value != tc.value || len(l.Keys) != len(tc.keys) {
				t.Fatalf("layout %+v", l)
			}
			for i := range tc.keys {
				if l.Keys[i] != tc.keys[i] {
					t.Errorf("key %d: %+v, want %+v", i, l.Keys[i], tc.keys[i])
				}
			}
			// Round trip with a field from the future.
			raw, _ := json.Marshal(b.Config)
			raw = []byte(strings.Replace(string(raw), `"map":"`+tc.mapName+`"`, `"map":"`+tc.mapName+`","unit":"packets"`, 1))
			again, err := registry.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := json.Marshal(again)
			if !strings.Contains(string(out), `"unit":"packets"`) {
				t.Errorf("unknown metric field lost: %s", out)
			}
		})
	}
}

// A struct key gives one label per field, read in the byte order its type
// says (__be16 is network order).
func TestFieldRead(t *testing.T) {
	for _, tc := range []struct {
		f    bpf.Field
		b    []byte
		want uint64
	}{
		{bpf.Field{Offset: 0, Size: 2}, []byte{0x50, 0x00}, 0x50},
		{bpf.Field{Offset: 0, Size: 2, BigEndian: true}, []byte{0x00, 0x50}, 80},
		{bpf.Field{Offset: 2, Size: 1}, []byte{0, 0, 17}, 17},
		{bpf.Field{Offset: 0, Size: 4, Signed: true}, []byte{0xff, 0xff, 0xff, 0xff}, ^uint64(0)},
		{bpf.Field{Offset: 0, Size: 8}, []byte{1, 0, 0, 0, 0, 0, 0, 1}, 1<<56 | 1},
	} {
		got, ok := tc.f.Read(tc.b)
		if !ok || got != tc.want {
			t.Errorf("%+v.Read(%x) = %d, %v; want %d", tc.f, tc.b, got, ok, tc.want)
		}
	}
	if _, ok := (bpf.Field{Offset: 4, Size: 4}).Read(make([]byte, 6)); ok {
		t.Error("read past the end")
	}
}
