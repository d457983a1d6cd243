package chain

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/testenv"
)

func testSpec(t *testing.T, maxEntries uint32) *ebpf.CollectionSpec {
	t.Helper()
	obj, err := bpf.ReadObject("../bpf/testdata/params.o")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := obj.Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	if maxEntries != 0 {
		spec.Maps["seen"].MaxEntries = maxEntries
	}
	return spec
}

func TestMapStoreKeepsState(t *testing.T) {
	fs := testenv.BPFFS(t)
	ms := newMapStore(fs)
	tgt := bpf.Target{Interface: "x", Ifindex: 7, Hook: bpf.HookXDP}

	em, err := ms.prepare(tgt, "counter", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := em.maps[".rodata"]; ok {
		t.Error(".rodata (params) must not be shared between loads")
	}
	seen := em.maps["seen"]
	if seen == nil {
		t.Fatalf("no replacement for map seen: %v", em.maps)
	}
	if err := seen.Put(uint32(1), uint64(42)); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(fs, "kfm", "maps", "7", "xdp", "counter", "seen")
	if _, err := os.Stat(pin); err != nil {
		t.Fatalf("map not pinned at %s: %v", pin, err)
	}
	if err := em.commit(); err != nil {
		t.Fatal(err)
	}
	em.close()

	// A second load of the same element gets the same map back, with its
	// contents.
	em, err = ms.prepare(tgt, "counter", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	if err := em.maps["seen"].Lookup(uint32(1), &v); err != nil || v != 42 {
		t.Errorf("state lost across loads: %d, %v", v, err)
	}
	em.close()

	// An upgrade that changes the map's definition is refused...
	if _, err := ms.prepare(tgt, "counter", testSpec(t, 32), false); !errors.Is(err, ErrMapChanged) {
		t.Fatalf("changed definition: %v, want ErrMapChanged", err)
	}
	// ...unless the user resets the maps; the old pin stays until commit.
	em, err = ms.prepare(tgt, "counter", testSpec(t, 32), true)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Lookup(uint32(1), &v); err != nil || v != 42 {
		t.Errorf("old map changed before commit: %d, %v", v, err)
	}
	old.Close()
	if err := em.commit(); err != nil {
		t.Fatal(err)
	}
	em.close()
	fresh, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := fresh.Info(); info.MaxEntries != 32 {
		t.Errorf("after reset: max entries %d, want 32", info.MaxEntries)
	}
	fresh.Close()

	// gc removes the maps of elements that are gone.
	if err := ms.gc(tgt, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Errorf("pin survived gc: %v", err)
	}
}

func TestMapStoreAbortRemovesNewPins(t *testing.T) {
	fs := testenv.BPFFS(t)
	ms := newMapStore(fs)
	tgt := bpf.Target{Interface: "x", Ifindex: 3, Hook: bpf.HookTCIngress}
	em, err := ms.prepare(tgt, "p", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	em.abort()
	if _, err := os.Stat(ms.elementDir(tgt, "p")); !os.IsNotExist(err) {
		t.Errorf("aborted prepare left %s: %v", ms.elementDir(tgt, "p"), err)
	}
	// Nothing else was pinned: the directories above go too (a failed
	// first install leaves the bpffs as it was).
	if _, err := os.Stat(filepath.Join(fs, "kfm")); !os.IsNotExist(err) {
		t.Errorf("aborted prepare left %s: %v", filepath.Join(fs, "kfm"), err)
	}
	// With another element's maps pinned on the hook, only the aborted
	// element's directory goes.
	kept, err := ms.prepare(tgt, "kept", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := kept.commit(); err != nil {
		t.Fatal(err)
	}
	kept.close()
	em, err = ms.prepare(tgt, "p", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	em.abort()
	if _, err := os.Stat(ms.elementDir(tgt, "kept")); err != nil {
		t.Errorf("abort of p removed kept's maps: %v", err)
	}
}

// TestMapStoreDropsMapsTheProgramLost: when an element's program is
// replaced by one without some of its maps (another object installed under
// the same name, or an upgrade that drops a map), the committed change
// removes those maps' pins; the maps the new program has and the verdict
// counters stay. (TestModel found the old maps pinned for good.)
func TestMapStoreDropsMapsTheProgramLost(t *testing.T) {
	fs := testenv.BPFFS(t)
	ms := newMapStore(fs)
	tgt := bpf.Target{Interface: "x", Ifindex: 5, Hook: bpf.HookXDP}
	dir := ms.elementDir(tgt, "p")

	em, err := ms.prepare(tgt, "p", testSpec(t, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ms.prepareCounters(tgt, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := em.commit(); err != nil {
		t.Fatal(err)
	}
	if err := ec.commit(); err != nil {
		t.Fatal(err)
	}
	em.close()
	ec.close()

	obj, err := bpf.ReadObject("../examples/programs/xdp_count.o")
	if err != nil {
		t.Fatal(err)
	}
	other, err := obj.Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	em, err = ms.prepare(tgt, "p", other, false)
	if err != nil {
		t.Fatal(err)
	}
	// Until the change commits, the old program's map stays (a revert
	// goes back to it).
	if _, err := os.Stat(filepath.Join(dir, "seen")); err != nil {
		t.Fatalf("before commit: %v", err)
	}
	if err := em.commit(); err != nil {
		t.Fatal(err)
	}
	em.close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := []string{"counters", "kfm-counters", "non_ip"}; !slices.Equal(got, want) {
		t.Errorf("pins of p after replacing its program: %v, want %v", got, want)
	}
}
