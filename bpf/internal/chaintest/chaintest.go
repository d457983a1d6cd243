// Package chaintest holds test programs and helpers shared by the tests of
// kfm's chain backends (tailcall, tcx, tc): BPF objects whose programs know
// nothing of chaining, components built from them with state maps that
// survive reloads (as the chain layer keeps them), and UDP traffic whose
// payload records the order in which programs ran.
package chaintest

import (
	"context"
	_ "embed"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/examples/programs"
	"github.com/kfm-project/kfm/internal/netns"
)

var (
	//go:embed tag.o
	tagObject []byte
	//go:embed bench.o
	benchObject []byte
	//go:embed edge.o
	edgeObject []byte
)

// Objects are the test objects by name.
var Objects = map[string][]byte{"tag": tagObject, "bench": benchObject, "edge": edgeObject}

// TraceLen is the length of the trace at the start of a test datagram's
// payload: each tag program writes its tag into the first zero byte.
const TraceLen = 16

// Object parses the test object called name ("tag", "bench", "edge").
func Object(tb testing.TB, name string) *bpf.Object {
	tb.Helper()
	data, ok := Objects[name]
	if !ok {
		tb.Fatalf("no test object %q", name)
	}
	o, err := bpf.ParseObject(name+".o", data)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// NewMaps creates the state maps of obj (everything but .rodata and
// program arrays), as the chain layer keeps them pinned. They are closed
// when the test ends.
func NewMaps(tb testing.TB, obj *bpf.Object) map[string]*ebpf.Map {
	tb.Helper()
	spec, err := obj.Spec(nil)
	if err != nil {
		tb.Fatal(err)
	}
	maps := map[string]*ebpf.Map{}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".rodata") || ms.Type == ebpf.ProgramArray {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			tb.Fatalf("create map %s: %v", name, err)
		}
		tb.Cleanup(func() { m.Close() })
		maps[name] = m
	}
	return maps
}

// Component describes one chain element for a backend's Prepare.
type Component struct {
	Obj       *bpf.Object
	Name      string
	Function  string
	Priority  int
	ProceedOn bpf.Actions
	Params    map[string]string
	Maps      map[string]*ebpf.Map
}

// Build returns the bpf.Component (with a fresh spec, as the chain layer
// hands out one per Prepare). Key covers the object, function and params.
func (c Component) Build(tb testing.TB) bpf.Component {
	tb.Helper()
	spec, err := c.Obj.Spec(c.Params)
	if err != nil {
		tb.Fatal(err)
	}
	var params []string
	for k, v := range c.Params {
		params = append(params, k+"="+v)
	}
	sort.Strings(params)
	return bpf.Component{
		Name: c.Name, Priority: c.Priority, ProceedOn: c.ProceedOn,
		Spec: spec, Function: c.Function, Maps: c.Maps,
		Key: c.Obj.SHA256 + "/" + c.Function + "?" + strings.Join(params, "&"),
	}
}

// Build builds every component.
func Build(tb testing.TB, cs ...Component) []bpf.Component {
	tb.Helper()
	out := make([]bpf.Component, len(cs))
	for i, c := range cs {
		out[i] = c.Build(tb)
	}
	return out
}

// Count reads the first counter of an array map of u64 counters ("count",
// "hits").
func Count(tb testing.TB, m *ebpf.Map) uint64 {
	tb.Helper()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// TraceReceiver collects the traces of datagrams arriving at a UDP port
// (netns.ListenTraces), in the counts the backends' tests compare.
type TraceReceiver struct {
	r  *netns.Receiver
	ns *netns.Namespace
}

// ListenTraces opens a UDP socket on addr:port inside ns; it is closed when
// the test ends.
func ListenTraces(tb testing.TB, ns *netns.Namespace, addr netip.Addr, port int) *TraceReceiver {
	tb.Helper()
	return &TraceReceiver{r: netns.ListenTraces(tb, ns, addr, port, TraceLen), ns: ns}
}

// SocketDrops is the receiving namespace's count of UDP datagrams dropped
// because a socket's queue was full (see netns.UDPSocketDrops).
func (r *TraceReceiver) SocketDrops(tb testing.TB) uint64 {
	tb.Helper()
	n, err := netns.UDPSocketDrops(r.ns)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// Reset forgets what arrived so far.
func (r *TraceReceiver) Reset() { r.r.Reset() }

// Total is the number of datagrams received.
func (r *TraceReceiver) Total() int { return int(r.r.Count()) }

// Traces returns how many datagrams arrived with each trace.
func (r *TraceReceiver) Traces() map[string]int {
	out := map[string]int{}
	for k, v := range r.r.Traces() {
		out[k] = int(v)
	}
	return out
}

// WaitFor waits until n datagrams have arrived or timeout passes.
func (r *TraceReceiver) WaitFor(n int, timeout time.Duration) int {
	return int(r.r.WaitFor(uint64(n), timeout))
}

// TracePayload is a datagram payload with an empty trace.
func TracePayload() []byte { return make([]byte, TraceLen+8) }

// SendTraces sends n trace datagrams from s to dst, waits for what arrives
// at r (up to n, or a short while when fewer are expected) and returns the
// traces seen. r is reset first.
func SendTraces(tb testing.TB, s *netns.Sender, r *TraceReceiver, dst netip.AddrPort, n, expect int) map[string]int {
	tb.Helper()
	r.Reset()
	if _, err := s.Send(dst, n, TracePayload()); err != nil {
		tb.Fatal(err)
	}
	if expect > 0 {
		r.WaitFor(expect, 5*time.Second)
	} else {
		time.Sleep(200 * time.Millisecond)
	}
	// Let stragglers land so that unexpected extras are seen too.
	time.Sleep(20 * time.Millisecond)
	return r.Traces()
}

// Only returns a trace map with a single entry, for comparisons.
func Only(trace string, n int) map[string]int { return map[string]int{trace: n} }

// FormatTraces prints traces in a stable order.
func FormatTraces(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%q:%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// Flood floods one destination (see netns.StartFlood).
type Flood struct{ f *netns.Flood }

// StartFlood floods dst from ns until ctx ends.
func StartFlood(tb testing.TB, ctx context.Context, ns *netns.Namespace, dst netip.AddrPort, batch int) *Flood {
	tb.Helper()
	return &Flood{netns.StartFlood(tb, ctx, ns, []netip.AddrPort{dst}, batch, []byte("kfm-flood"))}
}

// Wait waits for the flood to stop and returns how many datagrams it sent.
func (f *Flood) Wait() (uint64, error) {
	sent, err := f.f.Wait()
	return sent[0], err
}

// Sample returns a component of the sample marketplace program name
// (examples/programs), function = name, with fresh state maps.
func Sample(tb testing.TB, name string, prio int, params map[string]string) Component {
	tb.Helper()
	data, err := programs.Object(name)
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := bpf.ParseObject(name+".o", data)
	if err != nil {
		tb.Fatal(err)
	}
	return Component{Obj: obj, Name: name, Function: name, Priority: prio, Params: params, Maps: NewMaps(tb, obj)}
}

// PerCPUPackets sums the packets field of a per-CPU array of struct
// counter {packets, bytes} (the sample programs' counters) at key.
func PerCPUPackets(tb testing.TB, m *ebpf.Map, key uint32) uint64 {
	tb.Helper()
	var vals []struct{ Packets, Bytes uint64 }
	if err := m.Lookup(key, &vals); err != nil {
		tb.Fatal(err)
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}

// KernelAtLeast reports whether the running kernel is at least
// major.minor.
func KernelAtLeast(tb testing.TB, major, minor int) bool {
	tb.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		tb.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		tb.Fatalf("kernel release %q: %v", unix.ByteSliceToString(u.Release[:]), err)
	}
	return ma > major || ma == major && mi >= minor
}
