package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/probe"
	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestSupports: the dispatcher chains XDP only, and needs freplace. On the
// development hosts the sandbox refuses EXT programs: Supports says so with
// the kernel's reason (EPERM) and wraps bpf.ErrUnsupportedKernel.
func TestSupports(t *testing.T) {
	testenv.RequirePrivileged(t)
	b := New(nil)
	if err := b.Supports(bpf.HookTCIngress); err == nil || !strings.Contains(err.Error(), "XDP") {
		t.Errorf("Supports(tc-ingress) = %v, want a refusal naming XDP", err)
	}
	err := b.Supports(bpf.HookXDP)
	probeErr := probe.EXT()
	switch {
	case probeErr == nil && err != nil:
		t.Fatalf("the kernel runs freplace, but Supports(xdp) = %v", err)
	case probeErr == nil:
		t.Logf("Supports(xdp) = nil: freplace works here")
	case err == nil:
		t.Fatalf("the EXT probe failed (%v), but Supports(xdp) = nil", probeErr)
	default:
		if !errors.Is(err, bpf.ErrUnsupportedKernel) {
			t.Errorf("Supports(xdp) = %v, want it to wrap bpf.ErrUnsupportedKernel", err)
		}
		if errors.Is(probeErr, unixEPERM) && !strings.Contains(err.Error(), "operation not permitted") {
			t.Errorf("Supports(xdp) = %v, want the kernel's reason (operation not permitted)", err)
		}
		t.Logf("Supports(xdp) = %v", err)
	}
}

func TestCurrentEmpty(t *testing.T) {
	e := newEnv(t)
	if c := e.current(t); c != nil {
		t.Fatalf("Current on an empty hook = %+v, want nil", c)
	}
}

// TestForeignProgram: a plain XDP program (what `ip link set dev X xdp obj`
// attaches) is neither read nor replaced; the error names it and says how
// to remove it. Replacing it is allowed only when the caller names it as
// another backend's root (PrepareOptions.Replace), and Revert restores it.
func TestForeignProgram(t *testing.T) {
	e := newEnv(t)
	prog := loadXDP(t, "progs.o", "pass_all")
	id := progID(t, prog)
	e.attachRaw(t, prog, xdp.ModeNative)
	ctx := context.Background()

	var err error
	e.in(t, func() error { _, err = e.b.Current(ctx, e.target); return nil })
	if !errors.Is(err, bpf.ErrForeignProgram) {
		t.Fatalf("Current = %v, want bpf.ErrForeignProgram", err)
	}
	for _, want := range []string{fmt.Sprint(id), `"pass_all"`, "ip link set dev " + e.target.Interface + " xdp off", "xdp-loader unload " + e.target.Interface + " --all"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	e.in(t, func() error { _, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{}); return nil })
	if !errors.Is(err, bpf.ErrForeignProgram) {
		t.Fatalf("Prepare over a foreign program = %v, want bpf.ErrForeignProgram", err)
	}
	if got := e.attached(t); got != id {
		t.Fatalf("after a refused Prepare the hook runs %d, want %d", got, id)
	}

	// Another backend's root (e.g. the tail-call backend's), replaced by
	// an empty chain: detached, and back with Revert.
	var ch bpf.Change
	e.in(t, func() (err error) {
		ch, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{Replace: &bpf.Chain{RootID: id}})
		return err
	})
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(ctx) })
	if got := e.attached(t); got != 0 {
		t.Fatalf("after removing the replaced root the hook runs %d", got)
	}
	e.in(t, func() error { return ch.Revert(ctx) })
	if got := e.attached(t); got != id {
		t.Fatalf("after Revert the hook runs %d, want %d", got, id)
	}
}

// fakeDispatcher attaches disp to the target and pins slots as its
// component programs (prog<N>-prog; no links, which need freplace), as a
// libxdp tool would have left them.
func (e *env) fakeDispatcher(t *testing.T, disp *ebpf.Program, slots ...*ebpf.Program) string {
	t.Helper()
	e.attachRaw(t, disp, xdp.ModeNative)
	dir := PinDir(e.target.BPFFS, e.target.Ifindex, progID(t, disp))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i, p := range slots {
		if err := objPin(p.FD(), progPin(dir, i)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loadWithBpftool loads a test dispatcher object with bpftool (libbpf), which
// hands the object's whole BTF to the kernel, as libxdp does: a version 1
// dispatcher's version is only in its BTF.
func loadWithBpftool(t *testing.T, bpffs, object string) *ebpf.Program {
	t.Helper()
	pin := filepath.Join(bpffs, "bpftool-"+strings.TrimSuffix(object, ".o"))
	out, err := exec.Command("bpftool", "prog", "load", filepath.Join("testdata", object), pin, "type", "xdp").CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool prog load %s: %v\n%s", object, err, out)
	}
	prog, err := ebpf.LoadPinnedProgram(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(pin)
	t.Cleanup(func() { prog.Close() })
	return prog
}

// TestReadVersions reads dispatchers of every version kfm knows, as other
// libxdp versions leave them (configuration, pins), and checks that kfm
// reports their chains but modifies only the version it builds.
func TestReadVersions(t *testing.T) {
	twoSlots := []bpf.ChainProgram{
		{Name: "pass_all", Priority: 10, ProceedOn: bpf.Actions{bpf.XDPPass}},
		// Longer than the kernel's 15 characters: the name comes from BTF.
		{Name: "count_udp_packets", Priority: 20, ProceedOn: bpf.Actions{bpf.XDPDrop, bpf.XDPPass}},
	}
	kfmConfig := func() Config {
		c := Config{Version: 2, NumProgs: 2}
		c.ChainCallActions[0] = 1<<RetVal | 1<<2
		c.ChainCallActions[1] = 1<<RetVal | 1<<2 | 1<<1
		c.RunPrios[0], c.RunPrios[1] = 10, 20
		return c
	}
	tests := []struct {
		name       string
		load       func(t *testing.T, e *env) *ebpf.Program
		version    int
		modifiable bool
		readable   bool
	}{
		{"v1 (libxdp 1.0)", func(t *testing.T, e *env) *ebpf.Program {
			return loadWithBpftool(t, e.target.BPFFS, "dispatcher_v1.o")
		}, 1, false, true},
		{"v2 (kfm, libxdp 1.2-1.4)", func(t *testing.T, e *env) *ebpf.Program {
			return loadKFMDispatcher(t, kfmConfig())
		}, 2, true, true},
		{"v3 (libxdp 1.5)", func(t *testing.T, e *env) *ebpf.Program {
			return loadXDP(t, "dispatcher_v3.o", ProgramName)
		}, 3, false, true},
		{"v9 (unknown)", func(t *testing.T, e *env) *ebpf.Program {
			return loadXDP(t, "dispatcher_v9.o", ProgramName)
		}, 9, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			disp := tt.load(t, e)
			dir := e.fakeDispatcher(t, disp, loadXDP(t, "progs.o", "pass_all"), loadXDP(t, "progs.o", "count_udp_packets"))
			id := progID(t, disp)
			ctx := context.Background()

			var c *bpf.Chain
			var err error
			e.in(t, func() error { c, err = e.b.Current(ctx, e.target); return nil })
			if !tt.readable {
				if !errors.Is(err, bpf.ErrForeignProgram) || !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), fmt.Sprint(tt.version)) {
					t.Fatalf("Current = %v, want an error naming version %d, wrapping ErrUnsupportedVersion and bpf.ErrForeignProgram", err, tt.version)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Version != tt.version || c.RootID != id || c.Backend != Name || c.Mode != "native" {
				t.Errorf("chain version %d root %d backend %s mode %s, want %d %d %s native", c.Version, c.RootID, c.Backend, c.Mode, tt.version, id, Name)
			}
			if len(c.Programs) != 2 {
				t.Fatalf("programs %+v, want 2", c.Programs)
			}
			for i, want := range twoSlots {
				got := c.Programs[i]
				if got.Name != want.Name || got.Priority != want.Priority || !slices.Equal(got.ProceedOn, want.ProceedOn) || got.ID == 0 || len(got.Tag) != 16 {
					t.Errorf("program %d = %+v, want %+v with an ID and a tag", i, got, want)
				}
			}

			if tt.modifiable {
				return // changing it needs freplace: see the kernel-VM tests
			}
			e.in(t, func() error { _, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{}); return nil })
			if !errors.Is(err, ErrUnsupportedVersion) || !errors.Is(err, bpf.ErrForeignProgram) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", tt.version)) {
				t.Fatalf("Prepare on a version %d dispatcher = %v, want a refusal naming the version", tt.version, err)
			}
			if got := e.attached(t); got != id {
				t.Errorf("after the refusal the hook runs %d, want %d", got, id)
			}
			if got := pinsIn(t, dir); !slices.Equal(got, []string{"prog0-prog", "prog1-prog"}) {
				t.Errorf("pins after the refusal: %v", got)
			}
		})
	}
}

// TestNoPinDirectory: a dispatcher whose pins are not in this bpffs (loaded
// by a tool with another LIBXDP_BPFFS, or under `ip netns exec`, which hides
// /sys/fs/bpf) cannot be read or changed; the error says where kfm looked.
func TestNoPinDirectory(t *testing.T) {
	e := newEnv(t)
	disp := loadKFMDispatcher(t, stubConfig(2, -1))
	e.attachRaw(t, disp, xdp.ModeNative)
	var err error
	e.in(t, func() error { _, err = e.b.Current(context.Background(), e.target); return nil })
	dir := PinDir(e.target.BPFFS, e.target.Ifindex, progID(t, disp))
	if !errors.Is(err, bpf.ErrForeignProgram) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "LIBXDP_BPFFS") {
		t.Fatalf("Current = %v, want bpf.ErrForeignProgram naming %s and LIBXDP_BPFFS", err, dir)
	}
}

// TestRemoveChain removes an (empty) dispatcher chain: Commit detaches the
// dispatcher and removes its pin directory; Revert brings both back.
func TestRemoveChain(t *testing.T) {
	e := newEnv(t)
	disp := loadKFMDispatcher(t, stubConfig(0, -1))
	dir := e.fakeDispatcher(t, disp)
	id := progID(t, disp)
	ctx := context.Background()

	if c := e.current(t); c == nil || c.RootID != id || len(c.Programs) != 0 {
		t.Fatalf("Current = %+v, want the empty dispatcher %d", c, id)
	}
	var ch bpf.Change
	e.in(t, func() (err error) { ch, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{}); return err })
	defer ch.Close()
	if len(ch.Programs()) != 0 {
		t.Errorf("Programs() = %+v", ch.Programs())
	}
	if got := e.attached(t); got != id {
		t.Fatalf("Prepare changed the hook: %d", got)
	}
	e.in(t, func() error { return ch.Commit(ctx) })
	if got := e.attached(t); got != 0 {
		t.Fatalf("after Commit the hook runs %d", got)
	}
	if dirs := e.pinDirs(t); len(dirs) != 0 {
		t.Fatalf("pin directories left: %v", dirs)
	}
	if c := e.current(t); c != nil {
		t.Fatalf("Current after removal = %+v", c)
	}
	e.in(t, func() error { return ch.Revert(ctx) })
	if got := e.attached(t); got != id {
		t.Fatalf("after Revert the hook runs %d, want %d", got, id)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Revert did not restore %s: %v", dir, err)
	}
}

// TestCommitConflict: when the hook changed between Prepare and Commit,
// Commit changes nothing and says so with bpf.ErrConflict.
func TestCommitConflict(t *testing.T) {
	e := newEnv(t)
	disp := loadKFMDispatcher(t, stubConfig(0, -1))
	e.fakeDispatcher(t, disp)
	ctx := context.Background()
	var ch bpf.Change
	e.in(t, func() (err error) { ch, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{}); return err })
	defer ch.Close()

	// Another tool replaces the dispatcher meanwhile.
	other := loadXDP(t, "progs.o", "pass_all")
	e.in(t, func() error { return xdp.Replace(e.target.Ifindex, other, disp, xdp.ModeNative) })

	var err error
	e.in(t, func() error { err = ch.Commit(ctx); return nil })
	if !errors.Is(err, bpf.ErrConflict) {
		t.Fatalf("Commit = %v, want bpf.ErrConflict", err)
	}
	if got := e.attached(t); got != progID(t, other) {
		t.Fatalf("after the conflict the hook runs %d, want the other tool's %d", got, progID(t, other))
	}
}

// TestRelease removes the pin directories of dispatchers that no longer run
// on the interface, and nothing else.
func TestRelease(t *testing.T) {
	e := newEnv(t)
	disp := loadKFMDispatcher(t, stubConfig(0, -1))
	running := e.fakeDispatcher(t, disp)
	stale := PinDir(e.target.BPFFS, e.target.Ifindex, 999999)
	otherIf := PinDir(e.target.BPFFS, e.target.Ifindex+1000, 5)
	for _, d := range []string{stale, otherIf} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := objPin(loadXDP(t, "progs.o", "pass_all").FD(), progPin(stale, 0)); err != nil {
		t.Fatal(err)
	}
	e.in(t, func() error { return e.b.Release(context.Background(), e.target) })
	got := e.pinDirs(t)
	want := []string{filepath.Base(running), filepath.Base(otherIf)}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after Release: %v, want %v", got, want)
	}
}

// TestModes: offload is refused by name; a mode other than the one the
// interface runs is refused with advice, and nothing changes.
func TestModes(t *testing.T) {
	e := newEnv(t)
	disp := loadKFMDispatcher(t, stubConfig(0, -1))
	e.in(t, func() error { return xdp.Replace(e.target.Ifindex, disp, nil, xdp.ModeSKB) })
	t.Cleanup(func() { e.detachAll(t) })
	if err := os.MkdirAll(PinDir(e.target.BPFFS, e.target.Ifindex, progID(t, disp)), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c := e.current(t); c == nil || c.Mode != "skb" {
		t.Fatalf("Current = %+v, want mode skb", c)
	}
	var err error
	e.in(t, func() error {
		_, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{XDPMode: "offload"})
		return nil
	})
	if !errors.Is(err, xdp.ErrOffload) {
		t.Errorf("Prepare in offload mode = %v, want xdp.ErrOffload", err)
	}
	e.in(t, func() error {
		_, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{XDPMode: "native"})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "skb mode") || !strings.Contains(err.Error(), "--mode skb") {
		t.Errorf("Prepare in native mode over skb = %v, want a refusal with advice", err)
	}
	// Without a mode the running one is kept.
	var ch bpf.Change
	e.in(t, func() (err error) { ch, err = e.b.Prepare(ctx, e.target, nil, bpf.PrepareOptions{}); return err })
	defer ch.Close()
	e.in(t, func() error { return ch.Commit(ctx) })
	if got := e.attached(t); got != 0 {
		t.Errorf("hook runs %d after removal in skb mode", got)
	}
}

// TestPrepareChecks: malformed desired chains are refused before anything
// is loaded or changed.
func TestPrepareChecks(t *testing.T) {
	e := newEnv(t)
	spec, err := testObject(t, "progs.o").Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	comp := func(name string, prio int) bpf.Component {
		return bpf.Component{Name: name, Priority: prio, ProceedOn: bpf.Actions{bpf.XDPPass}, Spec: spec, Function: "pass_all"}
	}
	eleven := make([]bpf.Component, 11)
	for i := range eleven {
		eleven[i] = comp(fmt.Sprintf("p%d", i), i)
	}
	tests := []struct {
		name    string
		desired []bpf.Component
		want    string
	}{
		{"eleven programs", eleven, "at most 10"},
		{"no name", []bpf.Component{comp("", 1)}, "no name"},
		{"out of order", []bpf.Component{comp("a", 20), comp("b", 10)}, "not in run order"},
		{"negative priority", []bpf.Component{comp("a", -1)}, "out of range"},
		{"nothing to run", []bpf.Component{{Name: "a", Priority: 1}}, "nothing to load"},
		{"same running program", []bpf.Component{{Name: "a", Running: 7}, {Name: "b", Running: 7}}, "same running program"},
		{"unknown function", []bpf.Component{{Name: "a", Spec: spec, Function: "nope"}}, `no program "nope"`},
		{"not XDP", []bpf.Component{{Name: "a", Spec: tcSpec(t), Function: "tc_prog"}}, "chains XDP programs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			e.in(t, func() error {
				_, err = e.b.Prepare(context.Background(), e.target, tt.desired, bpf.PrepareOptions{})
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Prepare = %v, want an error containing %q", err, tt.want)
			}
			if got := e.attached(t); got != 0 {
				t.Fatalf("a refused Prepare attached %d", got)
			}
			if dirs := e.pinDirs(t); len(dirs) != 0 {
				t.Fatalf("a refused Prepare pinned %v", dirs)
			}
		})
	}
}

// tcSpec is a collection with a TC program, to be refused.
func tcSpec(t *testing.T) *ebpf.CollectionSpec {
	spec, err := testObject(t, "progs.o").Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := spec.Programs["pass_all"].Copy()
	ps.Type = ebpf.SchedCLS
	ps.Name = "tc_prog"
	spec.Programs = map[string]*ebpf.ProgramSpec{"tc_prog": ps}
	return spec
}

// TestLock: the lock is libxdp's flock on <bpffs>/xdp (created 0700 when
// missing); a second taker waits for it, and gives up with ctx.
func TestLock(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	ctx := context.Background()
	unlock, err := lock(ctx, bpffs)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(bpffs, "xdp"))
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("lock directory: %v, %v", st, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := lock(short, bpffs); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held = %v, want it to wait until the deadline", err)
	}
	unlock()
	unlock2, err := lock(ctx, bpffs)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()

	if _, err := lock(ctx, t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a BPF filesystem") {
		t.Fatalf("lock on a plain directory = %v, want a clear error", err)
	}
}
