package metrics_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/metrics"
	"github.com/kfm-project/kfm/internal/testenv"
)

// fixed is a Source that returns one snapshot: what a chain.Manager would
// read, written out so that a test can point it at maps it made.
type fixed struct {
	snap *chain.Snapshot
	err  error
}

func (f fixed) Snapshot(context.Context) (*chain.Snapshot, error) { return f.snap, f.err }

func TestOps(t *testing.T) {
	ops := metrics.NewOps()
	ops.ObserveApply(20*time.Millisecond, nil)
	ops.ObserveApply(3*time.Second, errors.New("verifier"))
	ops.ObserveApply(40*time.Millisecond, nil)
	ops.ObserveReconcile("registry", time.Second, nil)
	const want = `
# HELP kfm_apply_total Applies of the desired chains to the kernel, by result (ok, error).
# TYPE kfm_apply_total counter
kfm_apply_total{result="error"} 1
kfm_apply_total{result="ok"} 2
# HELP kfm_reconcile_total Reconcile rounds of the node agent, by desired-state source and result (ok, error).
# TYPE kfm_reconcile_total counter
kfm_reconcile_total{result="ok",source="registry"} 1
`
	if err := testutil.CollectAndCompare(ops, strings.NewReader(want), "kfm_apply_total", "kfm_reconcile_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(ops, "kfm_apply_duration_seconds"); n != 1 {
		t.Errorf("%d apply duration histograms", n)
	}
	// Names follow Prometheus conventions.
	if problems, err := testutil.CollectAndLint(ops); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// A snapshot that cannot be read fails the scrape with the reason, instead
// of serving an empty (and misleading) host.
func TestExporterReportsUnreadableHost(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(fixed{err: errors.New("host state /run/kfm/state.json is corrupt")}, nil))
	_, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "state.json is corrupt") {
		t.Fatalf("gather: %v", err)
	}
}

// key is struct {__be16 port; __u8 proto; __u8 pad;}.
func key(port uint16, proto uint8) []byte {
	k := make([]byte, 4)
	binary.BigEndian.PutUint16(k, port)
	k[2] = proto
	return k
}

// value is struct {__u64 packets; __u64 bytes;}.
func value(packets, bytes uint64) []byte {
	v := make([]byte, 16)
	binary.NativeEndian.PutUint64(v, packets)
	binary.NativeEndian.PutUint64(v[8:], bytes)
	return v
}

// Declared reads a per-CPU hash with a struct key: labels from key fields
// (network byte order where the type says so), values summed over CPUs
// and over keys that agree on the labels; it also counts the map's fill.
func TestDeclaredStructKey(t *testing.T) {
	dir := filepath.Join(testenv.BPFFS(t), "prog")
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "flows", Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	put := func(k []byte, perCPU ...[]byte) {
		vals := make([][]byte, ncpu)
		for i := range vals {
			vals[i] = value(0, 0)
			if i < len(perCPU) {
				vals[i] = perCPU[i]
			}
		}
		if err := m.Put(k, vals); err != nil {
			t.Fatal(err)
		}
	}
	put(key(80, 6), value(3, 300), value(4, 400))
	put(key(80, 17), value(5, 500))
	put(key(53, 17), value(7, 700))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(chain.MapPin(dir, "flows")); err != nil {
		t.Fatal(err)
	}
	port := bpf.Field{Name: "port", Offset: 0, Size: 2, BigEndian: true}
	proto := bpf.Field{Name: "proto", Offset: 2, Size: 1}
	packets := bpf.Field{Name: "packets", Size: 8}
	layout := func(keys ...bpf.Field) bpf.MapLayout {
		return bpf.MapLayout{Map: "flows", Type: "percpu_hash", KeySize: 4, ValueSize: 16, PerCPU: true, Keys: keys, Value: packets}
	}
	snap := &chain.Snapshot{Hooks: []chain.HookSnapshot{{
		HookStatus: chain.HookStatus{Interface: "eth0", Hook: bpf.HookXDP, Backend: "tailcall"},
		Programs: []chain.ProgramSnapshot{{
			ProgramStatus: chain.ProgramStatus{Position: 0, Name: "flows", Origin: chain.OriginKFM, Digest: "sha256:abc"},
			MapDir:        dir,
			Metrics: []chain.Metric{
				{Name: "flow_packets_total", Type: "counter", Help: "Packets per flow.", Labels: []string{"port", "proto"}, Layout: layout(port, proto)},
				{Name: "port_packets_total", Type: "counter", Help: "Packets per port.", Labels: []string{"port"}, Layout: layout(port)},
				{Name: "all_packets", Type: "gauge", Help: "All packets.", Layout: layout()},
			},
		}},
	}}}
	e := metrics.New(fixed{snap: snap}, &metrics.Options{Collectors: []metrics.Collector{metrics.Declared{}, metrics.MapFill{}}})
	const want = `
# HELP all_packets All packets.
# TYPE all_packets gauge
all_packets{digest="sha256:abc",hook="xdp",interface="eth0",netns="",position="0",program="flows"} 19
# HELP flow_packets_total Packets per flow.
# TYPE flow_packets_total counter
flow_packets_total{digest="sha256:abc",hook="xdp",interface="eth0",netns="",port="53",position="0",program="flows",proto="17"} 7
flow_packets_total{digest="sha256:abc",hook="xdp",interface="eth0",netns="",port="80",position="0",program="flows",proto="17"} 5
flow_packets_total{digest="sha256:abc",hook="xdp",interface="eth0",netns="",port="80",position="0",program="flows",proto="6"} 7
# HELP port_packets_total Packets per port.
# TYPE port_packets_total counter
port_packets_total{digest="sha256:abc",hook="xdp",interface="eth0",netns="",port="53",position="0",program="flows"} 7
port_packets_total{digest="sha256:abc",hook="xdp",interface="eth0",netns="",port="80",position="0",program="flows"} 12
# HELP kfm_map_fill_ratio Entries divided by capacity of a hash map of an installed program (0 to 1).
# TYPE kfm_map_fill_ratio gauge
kfm_map_fill_ratio{digest="sha256:abc",hook="xdp",interface="eth0",map="flows",netns="",position="0",program="flows"} 0.046875
`
	if err := testutil.CollectAndCompare(e, strings.NewReader(want), "all_packets", "flow_packets_total", "port_packets_total", "kfm_map_fill_ratio"); err != nil {
		t.Error(err)
	}

	// A second program declaring flow_packets_total with other labels
	// cannot share the name: it is left out and the scrape says why.
	second := snap.Hooks[0].Programs[0]
	second.Position, second.Name = 1, "other"
	second.Metrics = []chain.Metric{{Name: "flow_packets_total", Type: "counter", Labels: []string{"port"}, Layout: layout(port)}}
	snap.Hooks[0].Programs = append(snap.Hooks[0].Programs, second)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "metric flow_packets_total: declared as counter with labels [port,proto] by an earlier program") {
		t.Errorf("gather with a conflicting declaration: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flow_packets_total" && len(mf.GetMetric()) != 3 {
			t.Errorf("flow_packets_total has %d series", len(mf.GetMetric()))
		}
	}

	// The program is gone (its pins with it): nothing of it is left.
	snap.Hooks = nil
	if n := testutil.CollectAndCount(e, "flow_packets_total", "kfm_map_fill_ratio"); n != 0 {
		t.Errorf("%d series of a removed program", n)
	}
}
