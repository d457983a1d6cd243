package programs_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/packet"
)

func TestTCCount(t *testing.T) {
	coll := load(t, "tc_count", nil)
	prog, totals := coll.Programs["tc_count"], coll.Maps["totals"]
	var want counter
	for _, c := range []struct {
		frame []byte
		times int
	}{
		{marshal(t, udp4(1, 2, "small")), 3},
		{marshal(t, udp6(1, 2, string(make([]byte, 1400)))), 2},
		{marshal(t, packet.TCPSYN(ap(host4a, 1), ap(host4b, 2))), 1},
		{arpRequest(), 4},
	} {
		if v := runN(t, prog, c.frame, c.times); v != tcActOK {
			t.Errorf("verdict %d, want TC_ACT_OK", v)
		}
		want.add(c.frame, c.times)
	}
	if got := perCPUCounter(t, totals, 0); got != want {
		t.Errorf("totals = %+v, want %+v", got, want)
	}
}

// skbContext is struct __sk_buff (192 bytes since Linux 5.16) as
// BPF_PROG_TEST_RUN reads and writes it for SCHED_CLS programs. Only the
// fields up to mark matter here; len and pkt_type must be zero on input.
// The kernel refuses (ENOSPC) an output buffer shorter than its struct.
type skbContext struct {
	Len     uint32
	PktType uint32
	Mark    uint32
	_       [192 - 12]byte
}

func TestTCMark(t *testing.T) {
	frame := marshal(t, udp4(1, 2, "mark me"))
	for _, tt := range []struct {
		name   string
		params map[string]any
		in     uint32 // mark before the program runs
		want   uint32
	}{
		{"default", nil, 0, 0x1},
		{"default overwrites", nil, 0x77, 0x1},
		{"param", map[string]any{"mark": uint32(0xdeadbeef)}, 0, 0xdeadbeef},
		{"param overwrites", map[string]any{"mark": uint32(0x100)}, 0xffffffff, 0x100},
		{"param zero clears", map[string]any{"mark": uint32(0)}, 0x42, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := load(t, "tc_mark", tt.params)
			var out skbContext
			ret, err := coll.Programs["tc_mark"].Run(&ebpf.RunOptions{
				Data:       frame,
				Context:    skbContext{Mark: tt.in},
				ContextOut: &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			if ret != tcActOK {
				t.Errorf("verdict %d, want TC_ACT_OK", ret)
			}
			if out.Mark != tt.want {
				t.Errorf("mark %#x -> %#x, want %#x", tt.in, out.Mark, tt.want)
			}
		})
	}
}
