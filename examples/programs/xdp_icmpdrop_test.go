package programs_test

import (
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/packet"
)

func TestXDPICMPDrop(t *testing.T) {
	coll := load(t, "xdp_icmpdrop", nil)
	prog, dropped := coll.Programs["xdp_icmpdrop"], coll.Maps["dropped"]
	echo4 := packet.EchoRequest(host4a, host4b, 7, 1, []byte("ping"))
	echo6 := packet.EchoRequest(host6a, host6b, 7, 1, []byte("ping"))
	var want counter
	for _, c := range []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"icmp4 echo request", marshal(t, echo4), true},
		{"icmpv6 echo request", marshal(t, echo6), true},
		{"icmp4 echo request behind two vlans", marshal(t, withVLANs(echo4, 1, 2)), true},
		{"icmp4 echo reply", marshal(t, packet.EchoReply(host4b, host4a, 7, 1, []byte("ping"))), false},
		{"icmpv6 echo reply", marshal(t, packet.EchoReply(host6b, host6a, 7, 1, nil)), false},
		{"icmp4 echo request, later fragment", ipv4Fragment(marshal(t, echo4), 8), false},
		{"icmpv6 echo request behind an extension header", marshal(t, withExt(echo6, packet.IPProtoDestOpts)), false},
		{"icmp4 header truncated", truncate(marshal(t, echo4), packet.EthernetHeaderLen+packet.IPv4HeaderLen+7), false},
		{"udp4", marshal(t, udp4(1, 2, "x")), false},
		{"tcp6 syn", marshal(t, packet.TCPSYN(ap(host6a, 1), ap(host6b, 2))), false},
		{"arp", arpRequest(), false},
	} {
		wantV := uint32(xdpPass)
		if c.drop {
			wantV = xdpDrop
			want.add(c.frame, 1)
		}
		if v := run(t, prog, c.frame); v != wantV {
			t.Errorf("%s: %s, want %s", c.name, verdictName(v), verdictName(wantV))
		}
	}
	if got := perCPUCounter(t, dropped, 0); got != want {
		t.Errorf("dropped = %+v, want %+v", got, want)
	}
}

// xdp_icmpdrop carries libxdp's XDP_RUN_CONFIG metadata: a variable
// _xdp_icmpdrop in the BTF data section .xdp_run_config, whose struct type
// encodes each setting as a member `int (*name)[value]`.
func TestXDPICMPDropRunConfig(t *testing.T) {
	spec, err := programs.Spec("xdp_icmpdrop")
	if err != nil {
		t.Fatal(err)
	}
	var sec *btf.Datasec
	if err := spec.Types.TypeByName(".xdp_run_config", &sec); err != nil {
		t.Fatalf("BTF data section .xdp_run_config: %v", err)
	}
	if len(sec.Vars) != 1 {
		t.Fatalf(".xdp_run_config has %d variables, want 1", len(sec.Vars))
	}
	v, ok := sec.Vars[0].Type.(*btf.Var)
	if !ok || v.Name != "_xdp_icmpdrop" {
		t.Fatalf(".xdp_run_config holds %v, want the variable _xdp_icmpdrop", sec.Vars[0].Type)
	}
	st, ok := btf.UnderlyingType(v.Type).(*btf.Struct)
	if !ok {
		t.Fatalf("_xdp_icmpdrop is a %v, want a struct", v.Type)
	}
	got := map[string]uint32{}
	for _, m := range st.Members {
		ptr, ok := m.Type.(*btf.Pointer)
		if !ok {
			t.Fatalf("member %s is %v, want a pointer to an array", m.Name, m.Type)
		}
		arr, ok := ptr.Target.(*btf.Array)
		if !ok {
			t.Fatalf("member %s points to %v, want an array", m.Name, ptr.Target)
		}
		got[m.Name] = arr.Nelems
	}
	want := map[string]uint32{"priority": 20, "XDP_PASS": 1, "XDP_DROP": 1}
	if len(got) != len(want) {
		t.Errorf("run config %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("run config %s = %d, want %d (all: %v)", k, got[k], w, got)
		}
	}

	// cilium/ebpf does not know the section: it is neither a map nor a
	// program nor a variable, so loading the collection ignores it.
	if _, ok := spec.Maps[".xdp_run_config"]; ok {
		t.Error("cilium/ebpf turned .xdp_run_config into a map: loading would create it")
	}
	if _, ok := spec.Variables["_xdp_icmpdrop"]; ok {
		t.Error("cilium/ebpf exposes _xdp_icmpdrop as a variable")
	}
}
