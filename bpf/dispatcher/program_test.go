package dispatcher

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/kfm-project/kfm/internal/testenv"
)

// TestObjectLayout checks what libxdp relies on to recognise and extend
// kfm's dispatcher: the program name, exactly one map (the .rodata
// configuration, 124 bytes), and the global slot functions prog0..prog9.
func TestObjectLayout(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Programs) != 1 || spec.Programs[ProgramName] == nil {
		t.Fatalf("programs %v, want only %s", keys(spec.Programs), ProgramName)
	}
	if len(spec.Maps) != 1 || spec.Maps[".rodata"] == nil {
		t.Fatalf("maps %v, want only .rodata", keys(spec.Maps))
	}
	if got := spec.Maps[".rodata"].ValueSize; got != sizeV2 {
		t.Errorf(".rodata holds %d bytes, want %d (libxdp 1.3.1 checks the size of a version 2 configuration)", got, sizeV2)
	}
	for i := range MaxPrograms {
		var fn *btf.Func
		name := fmt.Sprintf("prog%d", i)
		if err := spec.Types.TypeByName(name, &fn); err != nil {
			t.Errorf("slot %s: %v", name, err)
			continue
		}
		if fn.Linkage != btf.GlobalFunc {
			t.Errorf("slot %s has linkage %v; freplace needs global functions", name, fn.Linkage)
		}
	}
	// The compiled-in configuration is a valid empty version 2 one.
	c, err := ParseConfig(spec.Maps[".rodata"].Contents[0].Value.([]byte), 0)
	if err != nil || c.Version != Version || c.NumProgs != 0 {
		t.Errorf("compiled-in configuration %+v, %v", c, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// stubConfig enables n slots that go on after XDP_PASS; stop (if >= 0) is a
// slot whose chain-call actions lack bit RetVal, so that an empty slot
// there ends the chain with verdict RetVal.
func stubConfig(n, stop int) Config {
	c := Config{Version: Version, NumProgs: n}
	for i := range n {
		c.ChainCallActions[i] = 1<<2 | 1<<RetVal
		c.RunPrios[i] = uint32(10 * i)
	}
	if stop >= 0 {
		c.ChainCallActions[stop] = 1 << 2
	}
	return c
}

// TestDispatcherRuns loads kfm's dispatcher with several configurations and
// runs it with BPF_PROG_TEST_RUN. Its slots are the empty stubs (replacing
// them needs freplace, which the host refuses): an empty slot returns
// RetVal, which every slot's chain-call actions include, so the packet goes
// through every enabled slot to the final XDP_PASS; a slot without that bit
// ends the chain with the stub's verdict. It also checks that the verifier
// removes the calls of disabled slots (the program grows with the number of
// enabled slots), which is what makes unused slots free.
func TestDispatcherRuns(t *testing.T) {
	testenv.RequirePrivileged(t)
	tests := []struct {
		name string
		cfg  Config
		want uint32
	}{
		{"no slot", stubConfig(0, -1), 2},
		{"one slot", stubConfig(1, -1), 2},
		{"ten slots", stubConfig(10, -1), 2},
		{"slot 0 ends the chain", stubConfig(3, 0), RetVal},
		{"slot 9 ends the chain", stubConfig(10, 9), RetVal},
		{"frags flag", func() Config { c := stubConfig(2, -1); c.Frags = true; return c }(), 2},
	}
	sizes := map[int]int{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Spec()
			if err != nil {
				t.Fatal(err)
			}
			prog, err := LoadDispatcher(spec, tt.cfg, tt.cfg.Frags)
			if tt.cfg.Frags && !kernelKnowsFrags(t) {
				// Before Linux 5.18 the kernel refuses the flag; the
				// backend then loads without it (TestFrags).
				if err == nil {
					prog.Close()
					t.Fatal("this kernel does not know BPF_F_XDP_HAS_FRAGS, yet the dispatcher loaded with it")
				}
				t.Logf("no frags on this kernel: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			ret, _, err := prog.Test(make([]byte, 64))
			if err != nil {
				t.Fatal(err)
			}
			if ret != tt.want {
				t.Errorf("verdict %d, want %d", ret, tt.want)
			}
			// What libxdp reads back is what was loaded.
			got, err := Inspect(prog)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.cfg {
				t.Errorf("Inspect = %+v\nwant %+v", got, tt.cfg)
			}
			info, err := prog.Info()
			if err != nil {
				t.Fatal(err)
			}
			if n, err := info.TranslatedSize(); err == nil && !tt.cfg.Frags {
				sizes[tt.cfg.NumProgs] = n
			}
		})
	}
	if !(sizes[0] < sizes[1] && sizes[1] < sizes[10]) {
		t.Errorf("translated sizes by enabled slots %v: the verifier did not drop the disabled slots", sizes)
	}
}

// TestLibxdpDispatcherLoads loads libxdp's own xdp-dispatcher.o (xdp-tools
// 1.3.1) through the same loader, as the benchmark does: LoadDispatcher and
// Inspect speak its configuration layout.
func TestLibxdpDispatcherLoads(t *testing.T) {
	testenv.RequirePrivileged(t)
	spec, err := ebpf.LoadCollectionSpec(libxdpObject)
	if err != nil {
		t.Fatalf("libxdp's dispatcher object (install xdp-tools: make deps): %v", err)
	}
	cfg := stubConfig(4, -1)
	prog, err := LoadDispatcher(spec, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if ret, _, err := prog.Test(make([]byte, 64)); err != nil || ret != 2 {
		t.Fatalf("verdict %d, %v; want XDP_PASS", ret, err)
	}
	got, err := Inspect(prog)
	if err != nil || got != cfg {
		t.Fatalf("Inspect = %+v, %v\nwant %+v", got, err, cfg)
	}
}

// libxdpObject is xdp-tools' dispatcher object (Debian's xdp-tools package).
const libxdpObject = "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o"
