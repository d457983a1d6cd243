package bpf_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf"
)

// FuzzMapLayout: a bundle's declared metrics name a map and fields that
// kfm resolves through the object's BTF, both from the publisher. Any
// object and any declaration resolve or are refused with ErrMapField; a
// resolved layout has fields of 1, 2, 4 or 8 bytes that lie inside the
// map's key and value, which is what the exporter then reads.
func FuzzMapLayout(f *testing.F) {
	for _, tc := range []struct{ obj, decl string }{
		{"../examples/programs/xdp_portfilter.o", "drops||packets"},
		{"../examples/programs/xdp_ratelimit.o", "buckets|,|tokens"},
		{"../examples/programs/xdp_ratelimit.o", "stats||nope"},
		{"testdata/params.o", ".rodata||"},
	} {
		data, err := os.ReadFile(tc.obj)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, tc.decl)
	}
	f.Fuzz(func(t *testing.T, data []byte, decl string) {
		o, err := bpf.ParseObject("fuzz.o", data)
		if err != nil {
			return
		}
		mapName, rest, _ := strings.Cut(decl, "|")
		keys, value, _ := strings.Cut(rest, "|")
		var keyFields []string
		if keys != "" {
			keyFields = strings.Split(keys, ",")
		}
		names := []string{mapName}
		for _, m := range o.Maps {
			names = append(names, m.Name)
		}
		for _, name := range names {
			l, err := o.MapLayout(name, keyFields, value)
			if err != nil {
				if !errors.Is(err, bpf.ErrMapField) {
					t.Fatalf("refusal does not wrap ErrMapField: %v", err)
				}
				continue
			}
			check := func(what string, f bpf.Field, size uint32) {
				switch f.Size {
				case 1, 2, 4, 8:
				default:
					t.Fatalf("map %s %s field %q has %d bytes", name, what, f.Name, f.Size)
				}
				if uint64(f.Offset)+uint64(f.Size) > uint64(size) {
					t.Fatalf("map %s %s field %q at %d+%d lies outside the %d-byte %s", name, what, f.Name, f.Offset, f.Size, size, what)
				}
			}
			for _, k := range l.Keys {
				check("key", k, l.KeySize)
			}
			check("value", l.Value, l.ValueSize)
		}
	})
}

// FuzzParamCanonical: parameter values come from kfm.yaml, the command
// line and bundle configs. Any text is refused with ErrInvalidParam or
// stored as a canonical value that is its own canonical form.
func FuzzParamCanonical(f *testing.F) {
	o, err := bpf.ReadObject(paramsObject)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"0", "-1", "0x10", "TRUE", "65536", "-129", "18446744073709551615", "0b101", "1_000", " 7 ", "mode_b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range o.Params {
			c, err := p.Canonical(s)
			if err != nil {
				if !errors.Is(err, bpf.ErrInvalidParam) {
					t.Fatalf("param %s: refusal of %q does not wrap ErrInvalidParam: %v", p.Name, s, err)
				}
				continue
			}
			again, err := p.Canonical(c)
			if err != nil || again != c {
				t.Fatalf("param %s (%s): %q -> %q -> %q, %v", p.Name, p.Type, s, c, again, err)
			}
		}
	})
}
