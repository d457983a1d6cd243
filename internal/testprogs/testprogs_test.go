package testprogs_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/kfm-project/kfm/internal/packet"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testprogs"

	"golang.org/x/sys/unix"
)

const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	tcActOK    = 0
)

var (
	udp4 = packet.UDP(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), []byte("x")).MustMarshal()
	udp6 = packet.UDP(netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:2"), []byte("x")).MustMarshal()
	// Ethernet header of an ARP frame (EtherType 0x0806) and 28 bytes of
	// zeros, and one of LLDP (0x88cc).
	arp  = append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...)
	lldp = append([]byte{0x01, 0x80, 0xc2, 0, 0, 0x0e, 2, 0, 0, 0, 0, 1, 0x88, 0xcc}, make([]byte, 28)...)
)

func load(t *testing.T, name string) *ebpf.Collection {
	t.Helper()
	testenv.RequirePrivileged(t)
	spec, err := testprogs.Spec(name)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	t.Cleanup(coll.Close)
	return coll
}

func run(t *testing.T, prog *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatal(err)
	}
	return ret
}

func TestNames(t *testing.T) {
	want := []string{"tc_pass", "tc_verifier_fail", "xdp_buff_len", "xdp_drop", "xdp_frags", "xdp_pass", "xdp_probe_read", "xdp_subprog", "xdp_verifier_fail"}
	if got := testprogs.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, name := range want {
		spec, err := testprogs.Spec(name)
		if err != nil {
			t.Fatal(err)
		}
		if spec.Programs[name] == nil || len(spec.Programs) != 1 {
			t.Errorf("%s: want exactly one program named %s", name, name)
		}
	}
	if _, err := testprogs.Object("xdp_count"); !errors.Is(err, testprogs.ErrUnknown) || !strings.Contains(err.Error(), "xdp_pass") {
		t.Errorf("Object(xdp_count): %v, want ErrUnknown listing the test programs", err)
	}
}

func TestVerdicts(t *testing.T) {
	for _, tt := range []struct {
		name string
		want uint32
	}{
		{"xdp_pass", xdpPass},
		{"xdp_drop", xdpDrop},
		{"tc_pass", tcActOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prog := load(t, tt.name).Programs[tt.name]
			for _, frame := range [][]byte{udp4, udp6, arp} {
				if v := run(t, prog, frame); v != tt.want {
					t.Errorf("verdict %d, want %d", v, tt.want)
				}
			}
		})
	}
}

func TestVerifierFail(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, name := range []string{"xdp_verifier_fail", "tc_verifier_fail"} {
		t.Run(name, func(t *testing.T) {
			spec, err := testprogs.Spec(name)
			if err != nil {
				t.Fatalf("the object itself must parse: %v", err)
			}
			coll, err := ebpf.NewCollection(spec)
			if err == nil {
				coll.Close()
				t.Fatal("the kernel loaded it; want a verifier error")
			}
			var ve *ebpf.VerifierError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a verifier error", err)
			}
			if log := strings.Join(ve.Log, "\n"); !strings.Contains(log, "invalid access to packet") {
				t.Errorf("verifier log does not say why:\n%s", log)
			}
		})
	}
}

func TestSubprog(t *testing.T) {
	spec, err := testprogs.Spec("xdp_subprog")
	if err != nil {
		t.Fatal(err)
	}
	// The shape the tail-call injector's tests rely on: calls to two
	// subprograms, three exits in the main function.
	insns := spec.Programs["xdp_subprog"].Instructions
	var exits, calls int
	var funcs []string
	for _, ins := range insns {
		if sym := ins.Symbol(); sym != "" {
			funcs = append(funcs, sym)
		}
		if len(funcs) == 1 && ins.OpCode.JumpOp() == asm.Exit {
			exits++
		}
		if ins.IsFunctionCall() {
			calls++
		}
	}
	if len(funcs) != 3 || funcs[0] != "xdp_subprog" || !slices.Contains(funcs, "xdp_subprog_verdict") || !slices.Contains(funcs, "count_verdict") {
		t.Errorf("functions %v, want xdp_subprog and its subprograms xdp_subprog_verdict and count_verdict", funcs)
	}
	if exits != 3 {
		t.Errorf("main function has %d exit instructions, want 3", exits)
	}
	if calls != 2 {
		t.Errorf("%d bpf-to-bpf calls, want 2", calls)
	}

	coll := load(t, "xdp_subprog")
	prog, verdicts := coll.Programs["xdp_subprog"], coll.Maps["verdicts"]
	counted := map[uint32]uint64{}
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"ipv4", udp4, xdpPass},
		{"ipv6", udp6, xdpDrop},
		{"arp (XDP_TX turned into XDP_PASS)", arp, xdpPass},
		{"lldp", lldp, xdpPass},
		{"ipv4 again", udp4, xdpPass},
	} {
		if v := run(t, prog, c.frame); v != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, v, c.want)
		}
		if c.want == xdpPass {
			counted[xdpPass]++
		}
	}
	for v := uint32(0); v < 5; v++ {
		var n uint64
		if err := verdicts.Lookup(v, &n); err != nil {
			t.Fatal(err)
		}
		if n != counted[v] {
			t.Errorf("verdicts[%d] = %d, want %d (count_verdict sees only what the main function hands it)", v, n, counted[v])
		}
	}
}

// fragsStats mirrors struct frags_stats.
type fragsStats struct {
	Packets, Bytes, MultiBuffer, LastByte uint64
}

func TestFrags(t *testing.T) {
	spec, err := testprogs.Spec("xdp_frags")
	if err != nil {
		t.Fatal(err)
	}
	if p := spec.Programs["xdp_frags"]; p.SectionName != "xdp.frags" || p.Flags&unix.BPF_F_XDP_HAS_FRAGS == 0 {
		t.Errorf("section %q, flags %#x: want xdp.frags with BPF_F_XDP_HAS_FRAGS", p.SectionName, p.Flags)
	}

	testenv.RequirePrivileged(t)
	if err := features.HaveProgramHelper(ebpf.XDP, asm.FnXdpGetBuffLen); errors.Is(err, ebpf.ErrNotSupported) {
		// Before Linux 5.18 there is no multi-buffer XDP: the kernel
		// must refuse the program rather than load it half-working.
		coll, err := ebpf.NewCollection(spec)
		if err == nil {
			coll.Close()
			t.Fatal("a kernel without bpf_xdp_get_buff_len loaded xdp_frags")
		}
		t.Logf("kernel without multi-buffer XDP refuses xdp_frags, as it should: %v", err)
		return
	}

	coll := load(t, "xdp_frags")
	prog, stats := coll.Programs["xdp_frags"], coll.Maps["frags_stats"]
	small := udp4
	// A jumbo frame: BPF_PROG_TEST_RUN puts what does not fit in one page
	// into fragments for programs loaded with BPF_F_XDP_HAS_FRAGS.
	payload := make([]byte, 8900)
	payload[len(payload)-1] = 0xab
	jumbo := packet.UDP(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), payload).MustMarshal()

	var want fragsStats
	for _, frame := range [][]byte{small, jumbo, jumbo} {
		if v := run(t, prog, frame); v != xdpPass {
			t.Fatalf("%d-byte frame: verdict %d, want XDP_PASS", len(frame), v)
		}
		want.Packets++
		want.Bytes += uint64(len(frame))
		if len(frame) == len(jumbo) {
			want.MultiBuffer++
		}
		want.LastByte = uint64(frame[len(frame)-1])
	}
	var got fragsStats
	if err := stats.Lookup(uint32(0), &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("frags_stats = %+v, want %+v", got, want)
	}
}
