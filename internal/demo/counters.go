package main

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"
)

// pair is the {a, b uint64} value of the sample programs' per-CPU
// statistics: {passed, dropped} for xdp_ratelimit, {packets, bytes} for
// xdp_portfilter and xdp_count.
type pair struct{ A, B uint64 }

type counters struct {
	rlPassed, rlDropped, pfDropped, udp uint64
}

// counters reads the programs' maps where kfm pins them
// (<bpffs>/kfm/maps/<ifindex>/<hook>/<program>/<map>): the same maps the
// programs use, kept across reloads.
func (d *demo) counters() counters {
	dir := filepath.Join(d.bpffs, "kfm", "maps", strconv.Itoa(d.pair.BIfindex), "xdp")
	var c counters
	if v, err := sumPerCPU(filepath.Join(dir, "xdp_ratelimit", "stats"), 0); err == nil {
		c.rlPassed, c.rlDropped = v.A, v.B
	} else {
		d.Fatal(err)
	}
	if v, err := sumPerCPU(filepath.Join(dir, "xdp_portfilter", "drops"), 0); err == nil {
		c.pfDropped = v.A
	} else {
		d.Fatal(err)
	}
	if v, err := sumPerCPU(filepath.Join(dir, "xdp_count", "counters"), 17); err == nil { // IPPROTO_UDP
		c.udp = v.A
	} else {
		d.Fatal(err)
	}
	return c
}

func sumPerCPU(pin string, key uint32) (pair, error) {
	m, err := ebpf.LoadPinnedMap(pin, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return pair{}, fmt.Errorf("%s: %w (%w)", pin, errNoMap, err)
	}
	defer m.Close()
	var vals []pair
	if err := m.Lookup(key, &vals); err != nil {
		return pair{}, fmt.Errorf("read %s: %w", pin, err)
	}
	var sum pair
	for _, v := range vals {
		sum.A += v.A
		sum.B += v.B
	}
	return sum, nil
}
