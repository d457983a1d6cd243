package chain

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/testenv"
)

// TestPinMarks: a check that found an element's maps pinned is remembered
// across Managers (commands) while the element directory and the running
// program stay the same, and made again when either changes.
func TestPinMarks(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	state, conf := t.TempDir(), t.TempDir()
	newManager := func() *Manager {
		m, err := New(Options{BPFFS: bpffs, StateDir: state, ConfigDir: conf})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := newManager()
	tgt := bpf.Target{Interface: "eth0", Ifindex: 7, Hook: bpf.HookXDP}
	dir := m.maps.elementDir(tgt, "counter")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	state1, err := ebpf.NewMap(&ebpf.MapSpec{Name: "hits", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer state1.Close()
	pin := filepath.Join(dir, "hits")
	if err := state1.Pin(pin); err != nil {
		t.Fatal(err)
	}
	id := loadMapUser(t, state1, 0)

	// A directory changed less than pinMarkMargin ago is checked, not
	// remembered.
	if names, _ := m.unpinned(tgt, "counter", id); len(names) != 0 {
		t.Fatalf("unpinned = %v with the map pinned", names)
	}
	m.savePinMarks()
	if _, err := os.Stat(m.pinMarksPath()); err == nil {
		t.Fatalf("%s written for a directory changed just now", pinMarksFile)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatalf("set the mtime of a bpffs directory: %v", err)
	}
	m = newManager()
	if names, _ := m.unpinned(tgt, "counter", id); len(names) != 0 {
		t.Fatalf("unpinned = %v with the map pinned", names)
	}
	m.savePinMarks()
	if b, err := os.ReadFile(m.pinMarksPath()); err != nil || !strings.Contains(string(b), dir) {
		t.Fatalf("%s after a check does not name %s: %v %s", pinMarksFile, dir, err, b)
	}

	// The pin is removed by hand: the directory changes, the next
	// command checks again and finds it.
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	m = newManager()
	if names, _ := m.unpinned(tgt, "counter", id); !slices.Equal(names, []string{"hits"}) {
		t.Fatalf("unpinned after the pin was removed = %v, want [hits]", names)
	}
	m.savePinMarks()

	// What the mark trusts: were the directory's time set back to the
	// one remembered, the check would be skipped.
	again, err := state1.Clone() // (state1 still thinks it is pinned)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := again.Pin(pin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	m = newManager()
	m.unpinned(tgt, "counter", id) // remembered again
	m.savePinMarks()
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, old, old); err != nil {
		t.Fatal(err)
	}
	m = newManager()
	if names, _ := m.unpinned(tgt, "counter", id); len(names) != 0 {
		t.Fatalf("unpinned = %v: the remembered check was not used", names)
	}
	// Another program in the same directory is checked.
	oid := loadMapUser(t, state1, 1)
	if names, _ := m.unpinned(tgt, "counter", oid); !slices.Equal(names, []string{"hits"}) {
		t.Errorf("unpinned for another program = %v, want [hits] (checked, not remembered)", names)
	}
}

// loadMapUser loads a socket filter that reads m and returns ret, and
// returns its ID; it is unloaded when the test ends.
func loadMapUser(t *testing.T, m *ebpf.Map, ret int32) ebpf.ProgramID {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "MIT", Instructions: asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, ret),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}
