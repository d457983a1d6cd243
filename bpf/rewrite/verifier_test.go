package rewrite_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/internal/chaintest"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/packet"
	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testprogs"
)

// sample is one entry function of one of the project's BPF objects.
type sample struct {
	object, function string
	spec             *ebpf.CollectionSpec
}

func (s sample) String() string { return s.object + ":" + s.function }

func (s sample) typ() ebpf.ProgramType { return s.spec.Programs[s.function].Type }

// samples returns every XDP and TC program of the sample marketplace
// programs, the test programs and the chain tests' programs.
func samples(tb testing.TB) []sample {
	tb.Helper()
	objs := map[string][]byte{}
	for _, n := range programs.Names() {
		b, err := programs.Object(n)
		if err != nil {
			tb.Fatal(err)
		}
		objs["examples/"+n] = b
	}
	for _, n := range testprogs.Names() {
		b, err := testprogs.Object(n)
		if err != nil {
			tb.Fatal(err)
		}
		objs["testprogs/"+n] = b
	}
	for n, b := range chaintest.Objects {
		objs["chaintest/"+n] = b
	}
	var out []sample
	for name, data := range objs {
		spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		for fn, ps := range spec.Programs {
			switch ps.Type {
			case ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT:
				out = append(out, sample{object: name, function: fn, spec: spec})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	if len(out) < 15 {
		tb.Fatalf("only %d sample programs found", len(out))
	}
	return out
}

var frames = [][]byte{
	packet.UDP(netip.MustParseAddrPort("198.18.0.1:4000"), netip.MustParseAddrPort("198.18.0.2:7000"), make([]byte, 24)).MustMarshal(),
	packet.TCPSYN(netip.MustParseAddrPort("198.18.0.1:4000"), netip.MustParseAddrPort("198.18.0.2:80")).MustMarshal(),
	packet.EchoRequest(netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), 1, 1, []byte("ping")).MustMarshal(),
	packet.UDP(netip.MustParseAddrPort("[2001:db8::1]:4000"), netip.MustParseAddrPort("[2001:db8::2]:53"), []byte("hello")).MustMarshal(),
}

// load loads s's function (instructions replaced by insns when not nil)
// with fresh maps; extra maps are added by name.
func load(s sample, insns asm.Instructions, extra map[string]*ebpf.Map) (*ebpf.Program, error) {
	spec := s.spec.Copy()
	ps := spec.Programs[s.function]
	if insns != nil {
		ps.Instructions = insns
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{s.function: ps}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	repl := map[string]*ebpf.Map{}
	for name, m := range extra {
		spec.Maps[name] = &ebpf.MapSpec{Name: name, Type: m.Type(), KeySize: m.KeySize(), ValueSize: m.ValueSize(), MaxEntries: m.MaxEntries()}
		repl[name] = m
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(s.function), nil
}

// marker returns a program of typ that returns v: the "next program" of a
// chain, to see whether the tail call happened.
func marker(tb testing.TB, s sample, v int32) *ebpf.Program {
	ps := s.spec.Programs[s.function]
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ps.Type, Flags: ps.Flags, AttachType: ps.AttachType, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, v), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func run(tb testing.TB, p *ebpf.Program, frame []byte) uint32 {
	tb.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

func proceedSet(mask uint16, tc bool) []int32 {
	var out []int32
	for a := int32(0); a < 9; a++ {
		if mask&(1<<a) != 0 && (tc || a < 5) {
			out = append(out, a)
		}
	}
	if tc && mask&(1<<9) != 0 {
		out = append(out, -1)
	}
	return out
}

func contains(as []int32, v uint32) bool {
	for _, a := range as {
		if uint32(a) == v {
			return true
		}
	}
	return false
}

// FuzzVerifier rewrites a sample program in both modes and loads it: the
// verifier must accept the rewrite of every program it accepts unchanged
// (and refuse the rewrite of those it refuses), and BPF_PROG_TEST_RUN must
// show the rewrite's semantics: a proceed-on verdict tail-calls the next
// slot (tailcall mode) or becomes -1 (tc mode), others are unchanged.
func FuzzVerifier(f *testing.F) {
	testenv.RequirePrivileged(f)
	all := samples(f)
	for i := range all {
		f.Add(uint8(i), uint16(1<<2|1), uint8(1), uint8(i%len(frames)))
	}
	f.Fuzz(func(t *testing.T, pick uint8, mask uint16, index uint8, frame uint8) {
		s := all[int(pick)%len(all)]
		pkt := frames[int(frame)%len(frames)]
		isTC := s.typ() != ebpf.XDP
		proceed := proceedSet(mask, isTC)
		slot := uint32(index) % 32
		t.Logf("%s, proceed-on %v, slot %d, frame %d", s, proceed, slot, int(frame)%len(frames))
		insns := s.spec.Programs[s.function].Instructions

		orig, origErr := load(s, nil, nil)
		var origRet uint32
		if origErr == nil {
			origRet = run(t, orig, pkt)
			orig.Close()
		}

		// tail-call mode
		chain, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 32})
		if err != nil {
			t.Fatal(err)
		}
		defer chain.Close()
		const markerRet = 3
		if origErr == nil {
			m := marker(t, s, markerRet)
			defer m.Close()
			if err := chain.Put(slot, m); err != nil {
				t.Fatal(err)
			}
		}
		rw, err := rewrite.TailCall(insns, rewrite.TailCallOptions{ProceedOn: proceed, Map: "kfm_chain", Index: slot})
		if err != nil {
			if errors.Is(err, rewrite.ErrNoStackRoom) || errors.Is(err, rewrite.ErrStackUnknown) {
				t.Skipf("not rewritable: %v", err)
			}
			t.Fatalf("TailCall: %v", err)
		}
		p, err := load(s, rw, map[string]*ebpf.Map{"kfm_chain": chain})
		switch {
		case origErr != nil && err == nil:
			p.Close()
			t.Fatalf("the verifier refuses the original (%v) but accepts the rewrite", firstLine(origErr))
		case origErr != nil:
		case err != nil:
			t.Fatalf("the verifier accepts the original but refuses the tail-call rewrite: %v\n%v", err, rw)
		default:
			got := run(t, p, pkt)
			p.Close()
			want := origRet
			if contains(proceed, origRet) {
				want = markerRet
			}
			if got != want {
				t.Errorf("tail-call rewrite returned %d; original %d, want %d", got, origRet, want)
			}
		}

		if !isTC {
			return
		}
		rw, err = rewrite.TCNext(insns, proceed)
		if err != nil {
			t.Fatalf("TCNext: %v", err)
		}
		p, err = load(s, rw, nil)
		switch {
		case origErr != nil && err == nil:
			p.Close()
			t.Fatalf("the verifier refuses the original but accepts the tc rewrite")
		case origErr != nil:
		case err != nil:
			t.Fatalf("the verifier accepts the original but refuses the tc rewrite: %v", err)
		default:
			got := run(t, p, pkt)
			p.Close()
			want := origRet
			if contains(proceed, origRet) {
				want = 0xffffffff
			}
			if got != want {
				t.Errorf("tc rewrite returned %d; original %d, want %d", got, origRet, want)
			}
		}

		// Gated: runs as the tc rewrite when its bit is set in
		// skb->cb[4], returns -1 otherwise.
		bit := uint8(index) % 32
		rw, err = rewrite.TCNextGated(insns, proceed, rewrite.Gate{Offset: skbCB4, Bit: bit})
		if err != nil {
			t.Fatalf("TCNextGated: %v", err)
		}
		p, err = load(s, rw, nil)
		switch {
		case origErr != nil && err == nil:
			p.Close()
			t.Fatalf("the verifier refuses the original but accepts the gated rewrite")
		case origErr != nil:
		case err != nil:
			t.Fatalf("the verifier accepts the original but refuses the gated rewrite: %v", err)
		default:
			defer p.Close()
			for _, word := range []uint32{1 << bit, 0xffffffff, 0, ^uint32(1 << bit)} {
				want := origRet
				if contains(proceed, origRet) || word&(1<<bit) == 0 {
					want = 0xffffffff
				}
				if got := runCB4(t, p, pkt, word); got != want {
					t.Errorf("gated rewrite with cb[4] = %#x returned %d; original %d, want %d", word, got, origRet, want)
				}
			}
		}
	})
}

// skbCB4 is offsetof(struct __sk_buff, cb[4]).
const skbCB4 = 64

// runCB4 runs a sched_cls program on frame with skb->cb[4] = word.
func runCB4(tb testing.TB, p *ebpf.Program, frame []byte, word uint32) uint32 {
	tb.Helper()
	// struct __sk_buff up to cb[4]: the kernel takes a shorter context
	// and zeroes the rest.
	var skb struct {
		Before [12]uint32
		CB     [5]uint32
	}
	skb.CB[4] = word
	ret, err := p.Run(&ebpf.RunOptions{Data: frame, Context: skb})
	if err != nil {
		tb.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestSamplesCovered: every sample is loaded by the fuzz seeds, and the
// programs meant to fail the verifier do.
func TestSamplesCovered(t *testing.T) {
	testenv.RequirePrivileged(t)
	var refused []string
	for _, s := range samples(t) {
		p, err := load(s, nil, nil)
		if err != nil {
			refused = append(refused, s.String())
			continue
		}
		p.Close()
	}
	// BPF_F_XDP_HAS_FRAGS and bpf_xdp_get_buff_len (xdp_buff_len) came
	// with 5.18.
	frags := chaintest.KernelAtLeast(t, 5, 18)
	for _, r := range refused {
		if !strings.Contains(r, "fail") && (frags || !strings.Contains(r, "frags") && !strings.Contains(r, "buff_len")) {
			t.Errorf("%s does not load unchanged", r)
		}
	}
	if len(refused) < 3 {
		t.Errorf("refused %v: the verifier-failure samples should be among them", refused)
	}
	fmt.Fprintf(testWriter{t}, "refused as expected: %v", refused)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
