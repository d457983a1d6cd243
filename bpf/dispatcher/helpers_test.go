package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/internal/netns"
	"github.com/kfm-project/kfm/internal/testenv"
)

// env is one test's world: two namespaces joined by a veth pair, a private
// bpffs, and the dispatcher backend acting on the XDP hook of the veth end
// in namespace B.
type env struct {
	pair   *netns.Pair
	target bpf.Target
	b      *Backend
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	pair := netns.NewPair(t)
	e := &env{
		pair: pair,
		target: bpf.Target{
			Interface: pair.BIf, Ifindex: pair.BIfindex,
			Hook: bpf.HookXDP, BPFFS: bpffs,
		},
		b: New(nil),
	}
	return e
}

// in runs fn in namespace B (where the target interface lives).
func (e *env) in(t *testing.T, fn func() error) {
	t.Helper()
	if err := e.pair.B.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// inErr runs fn in namespace B and returns its error.
func (e *env) inErr(fn func() error) error { return e.pair.B.Do(fn) }

func (e *env) current(t *testing.T) *bpf.Chain {
	t.Helper()
	var c *bpf.Chain
	e.in(t, func() (err error) {
		c, err = e.b.Current(context.Background(), e.target)
		return err
	})
	return c
}

// attached is the ID of the program on the target's XDP hook (0: none).
func (e *env) attached(t *testing.T) ebpf.ProgramID {
	t.Helper()
	var a xdp.Attachment
	e.in(t, func() (err error) {
		a, err = xdp.Query(e.target.Ifindex)
		return err
	})
	return a.ProgramID
}

// attachRaw attaches prog to the target directly (as another tool would)
// and detaches whatever runs there when the test ends.
func (e *env) attachRaw(t *testing.T, prog *ebpf.Program, mode xdp.Mode) {
	t.Helper()
	e.in(t, func() error { return xdp.Replace(e.target.Ifindex, prog, nil, mode) })
	t.Cleanup(func() { e.detachAll(t) })
}

// detachAll detaches whatever runs on the target, by ID.
func (e *env) detachAll(t *testing.T) {
	_ = e.inErr(func() error {
		a, err := xdp.Query(e.target.Ifindex)
		if err != nil || a.ProgramID == 0 {
			return err
		}
		p, err := ebpf.NewProgramFromID(a.ProgramID)
		if err != nil {
			return err
		}
		defer p.Close()
		return xdp.Replace(e.target.Ifindex, nil, p, a.Mode)
	})
}

// pinDirs lists the dispatcher directories under <bpffs>/xdp.
func (e *env) pinDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(xdpDir(e.target.BPFFS))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if _, _, ok := parsePinDir(en.Name()); ok {
			out = append(out, en.Name())
		}
	}
	return out
}

// pinsIn lists the files in a dispatcher directory.
func pinsIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	slices.Sort(out)
	return out
}

// testObject reads one of the test objects in testdata.
func testObject(t testing.TB, name string) *bpf.Object {
	t.Helper()
	obj, err := bpf.ReadObject(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// loadXDP loads function of a test object as a plain XDP program.
func loadXDP(t testing.TB, object, function string) *ebpf.Program {
	t.Helper()
	spec, err := testObject(t, object).Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := loadProgram(spec, function, nil)
	if err != nil {
		t.Fatalf("load %s: %v", function, err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// loadDispatcherObject loads a test dispatcher object (or kfm's own with
// cfg) as a plain XDP program.
func loadKFMDispatcher(t testing.TB, cfg Config) *ebpf.Program {
	t.Helper()
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := LoadDispatcher(spec, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func progID(t testing.TB, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// traffic sends UDP datagrams from namespace A to a port in B and counts
// what arrives.
type traffic struct {
	sender *netns.Sender
	recv   *netns.Receiver
	dst    netip.AddrPort
	sent   uint64
}

func (e *env) traffic(t *testing.T, port uint16) *traffic {
	t.Helper()
	return &traffic{
		sender: netns.NewSender(t, e.pair.A),
		recv:   netns.Listen(t, e.pair.B, e.pair.BAddr, int(port)),
		dst:    netip.AddrPortFrom(e.pair.BAddr, port),
	}
}

// send sends n datagrams, paced: with native XDP on veth each datagram
// arrives in a page-sized buffer, and a burst of 50 overflows the
// receiver's default socket buffer (212992 bytes) before its goroutine
// drains it, which a slow (emulated) CPU makes likely.
func (tr *traffic) send(t *testing.T, n int) {
	t.Helper()
	for range n {
		if _, err := tr.sender.Send(tr.dst, 1, []byte("kfm-test")); err != nil {
			t.Fatal(err)
		}
		tr.sent++
		time.Sleep(500 * time.Microsecond)
	}
}

// received waits until want datagrams arrived in total (at most 3 seconds)
// and returns the count.
func (tr *traffic) received(want uint64) uint64 {
	return tr.recv.WaitFor(want, 3*time.Second)
}

// counter is a test program's counter map, created by the test and handed
// to the backend as a map replacement (as the chain layer does with state
// maps), so the test can read what the program counted.
type counter struct{ m *ebpf.Map }

func newCounter(t testing.TB, spec *ebpf.CollectionSpec) counter {
	t.Helper()
	m, err := ebpf.NewMap(spec.Maps["counter"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return counter{m}
}

func (c counter) value(t testing.TB) uint64 {
	t.Helper()
	var v uint64
	if err := c.m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// waitFor waits until the counter reaches want (at most 3 seconds) and
// returns its value: the programs run in the receiving namespace's softirq,
// a little after the send returns.
func (c counter) waitFor(t testing.TB, want uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		v := c.value(t)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var unixEPERM = unix.EPERM

// kernelKnowsFrags reports whether the running kernel is Linux 5.18 or
// later, which knows BPF_F_XDP_HAS_FRAGS.
func kernelKnowsFrags(t testing.TB) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return major > 5 || major == 5 && minor >= 18
}
