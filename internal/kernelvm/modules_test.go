package kernelvm

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// A modules.dep shaped like depmod writes it: the deepest dependencies last.
const sampleModulesDep = `kernel/net/sched/cls_bpf.ko.xz:
kernel/net/sched/sch_ingress.ko.xz:
kernel/drivers/net/veth.ko.xz:
kernel/net/ipv4/tunnel4.ko.xz:
kernel/net/ipv4/ip_tunnel.ko.xz:
kernel/net/ipv4/ipip.ko.xz: kernel/net/ipv4/tunnel4.ko.xz kernel/net/ipv4/ip_tunnel.ko.xz
kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz
kernel/net/netfilter/nf_nat.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz kernel/lib/libcrc32c.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz
kernel/net/openvswitch/openvswitch.ko.xz: kernel/net/nsh/nsh.ko.xz kernel/net/netfilter/nf_conncount.ko.xz kernel/net/netfilter/nf_nat.ko.xz kernel/net/netfilter/nf_conntrack.ko.xz kernel/lib/libcrc32c.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz
kernel/net/nsh/nsh.ko.xz:
kernel/net/netfilter/nf_conncount.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz kernel/lib/libcrc32c.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz
kernel/lib/libcrc32c.ko.xz:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz:
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz:
kernel/drivers/net/dummy-extra.ko:
`

const sampleModulesBuiltin = `kernel/net/sched/sch_clsact.ko
kernel/net/core/bpf-lirc.ko
`

func sampleIndex(t *testing.T) *moduleIndex {
	t.Helper()
	ix, err := parseModuleIndex(strings.NewReader(sampleModulesDep), strings.NewReader(sampleModulesBuiltin))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestModuleLoadOrder(t *testing.T) {
	ix := sampleIndex(t)
	for _, tc := range []struct {
		name        string
		modules     []string
		wantOrder   []string
		wantBuiltin []string
	}{
		{"no deps", []string{"veth", "sch_ingress", "cls_bpf"},
			[]string{"kernel/drivers/net/veth.ko.xz", "kernel/net/sched/sch_ingress.ko.xz", "kernel/net/sched/cls_bpf.ko.xz"}, nil},
		{"deps first", []string{"ipip"},
			[]string{"kernel/net/ipv4/ip_tunnel.ko.xz", "kernel/net/ipv4/tunnel4.ko.xz", "kernel/net/ipv4/ipip.ko.xz"}, nil},
		{"shared deps once", []string{"nf_nat", "openvswitch"}, []string{
			"kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.xz",
			"kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz",
			"kernel/lib/libcrc32c.ko.xz",
			"kernel/net/netfilter/nf_conntrack.ko.xz",
			"kernel/net/netfilter/nf_nat.ko.xz",
			"kernel/net/netfilter/nf_conncount.ko.xz",
			"kernel/net/nsh/nsh.ko.xz",
			"kernel/net/openvswitch/openvswitch.ko.xz",
		}, nil},
		{"builtin skipped", []string{"sch_clsact", "veth", "bpf-lirc"},
			[]string{"kernel/drivers/net/veth.ko.xz"}, []string{"bpf_lirc", "sch_clsact"}},
		{"dash and underscore are one name", []string{"dummy_extra"}, []string{"kernel/drivers/net/dummy-extra.ko"}, nil},
		{"requested twice", []string{"veth", "veth"}, []string{"kernel/drivers/net/veth.ko.xz"}, nil},
	} {
		order, builtin, err := ix.LoadOrder(tc.modules)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(order, tc.wantOrder) || !reflect.DeepEqual(builtin, tc.wantBuiltin) {
			t.Errorf("%s: LoadOrder(%v) = %v, %v; want %v, %v", tc.name, tc.modules, order, builtin, tc.wantOrder, tc.wantBuiltin)
		}
		// Whatever the order, every dependency precedes its user.
		pos := map[string]int{}
		for i, m := range order {
			pos[m] = i
		}
		for _, m := range order {
			for _, d := range ix.deps[m] {
				if pos[d] >= pos[m] {
					t.Errorf("%s: %s loads before its dependency %s", tc.name, m, d)
				}
			}
		}
	}
}

func TestModuleLoadOrderErrors(t *testing.T) {
	ix := sampleIndex(t)
	if _, _, err := ix.LoadOrder([]string{"veth", "no_such_module"}); !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("unknown module: error %v, want ErrModuleNotFound naming it", err)
	}

	broken, err := parseModuleIndex(strings.NewReader("kernel/a.ko: kernel/missing.ko\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := broken.LoadOrder([]string{"a"}); !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "kernel/missing.ko is a dependency of kernel/a.ko") {
		t.Errorf("missing dependency: error %v", err)
	}

	cyclic, err := parseModuleIndex(strings.NewReader("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cyclic.LoadOrder([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle: kernel/a.ko -> kernel/b.ko -> kernel/a.ko") {
		t.Errorf("cycle: error %v", err)
	}

	if _, err := parseModuleIndex(strings.NewReader("kernel/a.ko kernel/b.ko\n"), nil); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("malformed modules.dep: error %v, want one naming the line", err)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/sched/cls_bpf.ko.xz":  "cls_bpf",
		"kernel/drivers/net/veth.ko":      "veth",
		"kernel/drivers/net/foo-bar.ko.z": "foo_bar",
		"kernel/x/y.ko.zst":               "y",
		"veth":                            "veth",
		"sch-ingress":                     "sch_ingress",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzModulesDep(f *testing.F) {
	f.Add(sampleModulesDep, "veth ipip")
	f.Add("a.ko: b.ko\nb.ko: a.ko\n", "a")
	f.Add("a.ko:\n#comment\n\n", "a b")
	f.Fuzz(func(t *testing.T, dep, want string) {
		ix, err := parseModuleIndex(strings.NewReader(dep), strings.NewReader(""))
		if err != nil {
			return
		}
		order, _, err := ix.LoadOrder(strings.Fields(want))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, m := range order {
			if seen[m] {
				t.Fatalf("%s loaded twice", m)
			}
			for _, d := range ix.deps[m] {
				if !seen[d] {
					t.Fatalf("%s before its dependency %s", m, d)
				}
			}
			seen[m] = true
		}
	})
}
