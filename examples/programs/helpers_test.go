package programs_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/testenv"
)

// XDP and TC verdicts as the programs return them.
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3

	tcActOK = 0
)

// counter mirrors struct counter {__u64 packets; __u64 bytes;} of the
// programs.
type counter struct {
	Packets uint64
	Bytes   uint64
}

func (c *counter) add(frame []byte, n int) {
	c.Packets += uint64(n)
	c.Bytes += uint64(n * len(frame))
}

// load loads the sample program name with the given parameters set, as
// root, and closes it when the test ends.
func load(t *testing.T, name string, params map[string]any) *ebpf.Collection {
	t.Helper()
	testenv.RequirePrivileged(t)
	spec, err := programs.Spec(name)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		vs, ok := spec.Variables[k]
		if !ok {
			t.Fatalf("%s has no parameter %q", name, k)
		}
		if err := vs.Set(v); err != nil {
			t.Fatalf("set %s.%s = %v: %v", name, k, v, err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	t.Cleanup(coll.Close)
	return coll
}

// run runs prog once on frame with BPF_PROG_TEST_RUN and returns its verdict.
func run(t *testing.T, prog *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("run %v: %v", prog, err)
	}
	return ret
}

// runN runs prog n times on frame and returns the verdict, failing the test
// if the verdicts differ. (One call with RunOptions.Repeat would not do for
// counting: an interrupted BPF_PROG_TEST_RUN is retried, so the program may
// run more often than asked.)
func runN(t *testing.T, prog *ebpf.Program, frame []byte, n int) uint32 {
	t.Helper()
	first := run(t, prog, frame)
	for i := 1; i < n; i++ {
		if v := run(t, prog, frame); v != first {
			t.Fatalf("run %d of %v on the same frame: verdict %d, the first run gave %d", i+1, prog, v, first)
		}
	}
	return first
}

// perCPUCounter returns the sum over all CPUs of entry key of a per-CPU
// map of struct counter.
func perCPUCounter(t *testing.T, m *ebpf.Map, key uint32) counter {
	t.Helper()
	var perCPU []counter
	if err := m.Lookup(key, &perCPU); err != nil {
		t.Fatalf("lookup %d in %v: %v", key, m, err)
	}
	var sum counter
	for _, c := range perCPU {
		sum.Packets += c.Packets
		sum.Bytes += c.Bytes
	}
	return sum
}

func verdictName(v uint32) string {
	switch v {
	case xdpAborted:
		return "XDP_ABORTED"
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	case xdpTX:
		return "XDP_TX"
	}
	return "unknown verdict"
}
