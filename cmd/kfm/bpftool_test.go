package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/internal/testenv"
)

// bpftoolProg and bpftoolLink are the fields of `bpftool prog show -j` and
// `bpftool link show -j` the test reads.
type bpftoolProg struct {
	ID     ebpf.ProgramID `json:"id"`
	Type   string         `json:"type"`
	Name   string         `json:"name"`
	Tag    string         `json:"tag"`
	MapIDs []ebpf.MapID   `json:"map_ids"`
}

type bpftoolLink struct {
	ID     int            `json:"id"`
	ProgID ebpf.ProgramID `json:"prog_id"`
}

// TestBpftoolSeesKfmChains: what kfm status reports is what bpftool, the
// tool operators already use, sees in the kernel: the program attached to
// the XDP hook is kfm's tail-call root; every program of every chain exists
// with the name (the function's, cut to the kernel's 15 characters), type
// and tag kfm reports; on tcx the gate and each program hang off their own
// TCX link; and each program uses the state map kfm pinned for it under
// <bpffs>/kfm/maps (which is what keeps counters across reorders).
func TestBpftoolSeesKfmChains(t *testing.T) {
	h := newHost(t)
	bpftool := testenv.RequireTool(t, "bpftool")
	run := func(netns bool, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bpftool, append([]string{"-j"}, args...)...)
		if netns {
			cmd = exec.Command("ip", append([]string{"netns", "exec", h.pair.B.Name, bpftool, "-j"}, args...)...)
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return out
	}
	decode := func(out []byte, v any) {
		t.Helper()
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}

	h.mustKFM("install", samplesDir+"xdp_count.o", "--iface", h.iface, "--priority", "10")
	h.mustKFM("install", samplesDir+"xdp_ratelimit.o", "--iface", h.iface, "--priority", "20")
	h.mustKFM("install", samplesDir+"tc_count.o", "--iface", h.iface, "--priority", "10")
	h.mustKFM("install", samplesDir+"tc_mark.o", "--iface", h.iface, "--priority", "20", "--param", "mark=7")
	hs := h.status()
	xdp, tc := hookOf(hs, h.iface, "xdp"), hookOf(hs, h.iface, "tc-ingress")
	if xdp == nil || tc == nil || xdp.Backend != "tailcall" || tc.Backend != "tcx" || len(xdp.Programs) != 2 || len(tc.Programs) != 2 {
		t.Fatalf("kfm status: %+v", hs)
	}

	// The XDP hook, as bpftool net shows it in the interface's namespace.
	var net []struct {
		XDP []struct {
			Devname string         `json:"devname"`
			Mode    string         `json:"mode"`
			ID      ebpf.ProgramID `json:"id"`
		} `json:"xdp"`
	}
	decode(run(true, "net", "show", "dev", h.iface), &net)
	if len(net) != 1 || len(net[0].XDP) != 1 || net[0].XDP[0].ID != xdp.RootID || net[0].XDP[0].Mode != "driver" {
		t.Errorf("bpftool net show: %+v, want the root %d in driver (native) mode", net, xdp.RootID)
	}

	progs := func(want ...ebpf.ProgramID) map[ebpf.ProgramID]bpftoolProg {
		t.Helper()
		out := map[ebpf.ProgramID]bpftoolProg{}
		for _, id := range want {
			var p bpftoolProg
			decode(run(false, "prog", "show", "id", strconv.Itoa(int(id))), &p)
			out[id] = p
		}
		return out
	}
	byID := progs(xdp.RootID, tc.RootID)
	if r := byID[xdp.RootID]; r.Type != "xdp" {
		t.Errorf("root: %+v", r)
	}
	if g := byID[tc.RootID]; g.Type != "sched_cls" || g.Name != "kfm_gate" {
		t.Errorf("gate: %+v", g)
	}
	for _, c := range []struct {
		hook *chain.HookStatus
		typ  string
		maps map[string][]string // program name: its pinned state maps
	}{
		{xdp, "xdp", map[string][]string{"xdp_count": {"counters", "non_ip"}, "xdp_ratelimit": {"buckets", "stats"}}},
		{tc, "sched_cls", nil},
	} {
		for _, p := range c.hook.Programs {
			bp := progs(p.ProgramID)[p.ProgramID]
			if want := p.Function[:min(len(p.Function), 15)]; bp.Name != want || bp.Type != c.typ || bp.Tag != p.Tag {
				t.Errorf("%s: bpftool shows %+v, want name %s, type %s, tag %s", p.Name, bp, want, c.typ, p.Tag)
			}
			for _, m := range c.maps[p.Name] {
				pin := filepath.Join(h.bpffs, "kfm", "maps", strconv.Itoa(c.hook.Ifindex), string(c.hook.Hook), p.Name, m)
				var pm struct {
					ID ebpf.MapID `json:"id"`
				}
				decode(run(false, "map", "show", "pinned", pin), &pm)
				if !slices.Contains(bp.MapIDs, pm.ID) {
					t.Errorf("%s: uses maps %v, not %s (map %d)", p.Name, bp.MapIDs, pin, pm.ID)
				}
			}
		}
	}

	// Each TC program and the gate run from their own TCX link.
	var links []bpftoolLink
	decode(run(false, "link", "show"), &links)
	linked := map[ebpf.ProgramID]int{}
	for _, l := range links {
		linked[l.ProgID]++
	}
	for _, id := range []ebpf.ProgramID{tc.RootID, tc.Programs[0].ProgramID, tc.Programs[1].ProgramID} {
		if linked[id] != 1 {
			t.Errorf("program %d has %d links, want 1 (links: %s)", id, linked[id], fmt.Sprint(links))
		}
	}
}
