package programs_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/testenv"
)

type param struct {
	ctype string // the C type below volatile const
	def   uint64
}

// The samples as the marketplace documents them.
var samples = map[string]struct {
	progType ebpf.ProgramType
	section  string
	maps     []string
	params   map[string]param
}{
	"xdp_count":      {ebpf.XDP, "xdp", []string{"counters", "non_ip"}, nil},
	"xdp_ratelimit":  {ebpf.XDP, "xdp", []string{"buckets", "stats"}, map[string]param{"rate": {"__u32", 1000}, "burst": {"__u32", 100}}},
	"xdp_portfilter": {ebpf.XDP, "xdp", []string{"drops"}, map[string]param{"port": {"__u16", 9}}},
	"xdp_icmpdrop":   {ebpf.XDP, "xdp", []string{"dropped"}, nil},
	"tc_count":       {ebpf.SchedCLS, "tc", []string{"totals"}, nil},
	"tc_mark":        {ebpf.SchedCLS, "tc", nil, map[string]param{"mark": {"__u32", 1}}},
}

func TestNames(t *testing.T) {
	var want []string
	for name := range samples {
		want = append(want, name)
	}
	slices.Sort(want)
	if got := programs.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

// Every sample is an independent program: one entry function named like
// its object, BTF, a licence, its documented maps and parameters, and no
// chaining code at all.
func TestObjects(t *testing.T) {
	for name, want := range samples {
		t.Run(name, func(t *testing.T) {
			spec, err := programs.Spec(name)
			if err != nil {
				t.Fatal(err)
			}
			if len(spec.Programs) != 1 || spec.Programs[name] == nil {
				t.Fatalf("programs %v, want exactly %s", keys(spec.Programs), name)
			}
			p := spec.Programs[name]
			if p.Type != want.progType || p.SectionName != want.section {
				t.Errorf("%s is %v in section %q, want %v in %q", name, p.Type, p.SectionName, want.progType, want.section)
			}
			if p.License != "Dual BSD/GPL" {
				t.Errorf("licence %q, want Dual BSD/GPL", p.License)
			}
			var fn *btf.Func
			if spec.Types == nil || spec.Types.TypeByName(name, &fn) != nil {
				t.Errorf("no BTF for function %s: compile with -g", name)
			}

			for _, ins := range p.Instructions {
				if ins.IsBuiltinCall() && ins.Constant == int64(asm.FnTailCall) {
					t.Errorf("%s calls bpf_tail_call at %v: samples carry no chaining code", name, ins)
				}
			}
			var maps []string
			for mname, m := range spec.Maps {
				if m.Type == ebpf.ProgramArray {
					t.Errorf("map %s is a PROG_ARRAY: samples carry no chaining code", mname)
				}
				if m.Pinning != ebpf.PinNone {
					t.Errorf("map %s is pinned (%v): samples leave pinning to kfm", mname, m.Pinning)
				}
				if !strings.HasPrefix(mname, ".") {
					maps = append(maps, mname)
				}
			}
			slices.Sort(maps)
			if !slices.Equal(maps, want.maps) {
				t.Errorf("maps %v, want %v", maps, want.maps)
			}

			if len(spec.Variables) != len(want.params) {
				t.Errorf("variables %v, want the parameters %v", keys(spec.Variables), keys(want.params))
			}
			for pname, wp := range want.params {
				v := spec.Variables[pname]
				if v == nil {
					t.Errorf("no parameter %s", pname)
					continue
				}
				if !v.Constant() {
					t.Errorf("parameter %s is not const (section %s)", pname, v.SectionName)
				}
				ctype, volatile := cType(v.Type.Type)
				if ctype != wp.ctype || !volatile {
					t.Errorf("parameter %s has type %s (volatile %v), want volatile const %s", pname, ctype, volatile, wp.ctype)
				}
				buf := make([]byte, v.Size())
				if err := v.Get(buf); err != nil {
					t.Fatal(err)
				}
				var def uint64
				for i := len(buf) - 1; i >= 0; i-- { // little endian
					def = def<<8 | uint64(buf[i])
				}
				if def != wp.def {
					t.Errorf("parameter %s defaults to %d, want %d", pname, def, wp.def)
				}
			}
		})
	}
}

// cType strips const and volatile from typ and names what is left.
func cType(typ btf.Type) (name string, volatile bool) {
	for {
		switch q := typ.(type) {
		case *btf.Const:
			typ = q.Type
		case *btf.Volatile:
			volatile = true
			typ = q.Type
		default:
			return typ.TypeName(), volatile
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// requireSourceTree skips tests that read this directory when they run
// inside a kernel VM, where only the test binary is present.
func requireSourceTree(t *testing.T) {
	t.Helper()
	if os.Getenv(testenv.EnvInVM) != "" {
		if _, err := os.Stat("doc.go"); err != nil {
			t.Skip("the source tree is not available inside kernel VMs; this test runs on the host")
		}
	}
}

// Each object has its C source beside it, in the form `make bpf` expects.
func TestSources(t *testing.T) {
	requireSourceTree(t)
	for _, name := range programs.Names() {
		src, err := os.ReadFile(name + ".c")
		if err != nil {
			t.Errorf("source of %s: %v", name, err)
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(src))
		sc.Scan()
		if sc.Text() != "//go:build ignore" {
			t.Errorf("%s.c starts with %q, want //go:build ignore", name, sc.Text())
		}
		if !bytes.Contains(src, []byte("SPDX-License-Identifier: ")) {
			t.Errorf("%s.c has no SPDX licence line", name)
		}
		for _, chaining := range []string{"bpf_tail_call", "PROG_ARRAY"} {
			if bytes.Contains(src, []byte(chaining)) {
				t.Errorf("%s.c mentions %s: samples carry no chaining code", name, chaining)
			}
		}
	}
}

func TestObjectUnknown(t *testing.T) {
	for _, name := range []string{"", "nope", "xdp_count.o", "xdp_count.c", "../programs/xdp_count", "./xdp_count", "XDP_COUNT"} {
		b, err := programs.Object(name)
		if !errors.Is(err, programs.ErrUnknown) {
			t.Errorf("Object(%q) = %d bytes, %v; want ErrUnknown", name, len(b), err)
			continue
		}
		if !strings.Contains(err.Error(), "xdp_ratelimit") {
			t.Errorf("Object(%q) error %q does not list the known programs", name, err)
		}
		if _, err := programs.Spec(name); !errors.Is(err, programs.ErrUnknown) {
			t.Errorf("Spec(%q): %v, want ErrUnknown", name, err)
		}
	}
}

// Object hands out copies: a caller that scribbles on one does not change
// what the next caller gets.
func TestObjectCopies(t *testing.T) {
	a, err := programs.Object("xdp_count")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(a, []byte("\x7fELF")) {
		t.Fatalf("xdp_count object starts with % x, not an ELF header", a[:4])
	}
	clear(a)
	b, err := programs.Object("xdp_count")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		t.Fatal("a caller's change to the returned bytes leaked into the embedded object")
	}
	requireSourceTree(t)
	onDisk, err := os.ReadFile("xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, onDisk) {
		t.Fatal("embedded xdp_count.o differs from the file beside the source")
	}
}
