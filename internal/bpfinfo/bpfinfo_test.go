package bpfinfo_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/internal/bpfinfo"
	"github.com/kfm-project/kfm/internal/testenv"
)

// loadProgram loads a socket filter that reads each of maps (so that the
// kernel records them as the program's) and returns 0.
func loadProgram(t *testing.T, maps ...*ebpf.Map) *ebpf.Program {
	t.Helper()
	var insns asm.Instructions
	for _, m := range maps {
		insns = append(insns,
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
		)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "MIT", Instructions: insns})
	if err != nil {
		t.Fatalf("load program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newMap(t *testing.T, name string, typ ebpf.MapType) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatalf("create map %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// ciliumInfo is the reference: what cilium/ebpf's Map.Info reads.
func ciliumInfo(t *testing.T, m *ebpf.Map) bpfinfo.Map {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return bpfinfo.Map{ID: id, Type: info.Type, Name: info.Name}
}

func TestMapsAgreeWithCilium(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	maps := []*ebpf.Map{
		newMap(t, "state", ebpf.Hash),
		newMap(t, "kfm_verdicts", ebpf.PerCPUArray),
		newMap(t, "a_name_too_long_for_the_kernel", ebpf.Array),
	}
	var want []bpfinfo.Map
	for _, m := range maps {
		want = append(want, ciliumInfo(t, m))
	}
	prog := loadProgram(t, maps...)
	pinfo, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := pinfo.ID()
	ciliumIDs, _ := pinfo.MapIDs()

	ids, err := bpfinfo.ProgramMapIDs(progID)
	if err != nil {
		t.Fatalf("ProgramMapIDs: %v", err)
	}
	if !slices.Equal(ids, ciliumIDs) || len(ids) != len(maps) {
		t.Errorf("ProgramMapIDs(%d) = %v, cilium/ebpf reads %v (%d maps used)", progID, ids, ciliumIDs, len(maps))
	}

	for i, w := range want {
		got, err := bpfinfo.MapByID(w.ID)
		if err != nil {
			t.Fatalf("MapByID(%d): %v", w.ID, err)
		}
		if got != w {
			t.Errorf("MapByID(%d) = %+v, cilium/ebpf reads %+v", w.ID, got, w)
		}
		pin := filepath.Join(bpffs, string(rune('a'+i)))
		if err := maps[i].Pin(pin); err != nil {
			t.Fatal(err)
		}
		got, err = bpfinfo.PinnedMap(pin)
		if err != nil {
			t.Fatalf("PinnedMap(%s): %v", pin, err)
		}
		if got != w {
			t.Errorf("PinnedMap(%s) = %+v, cilium/ebpf reads %+v", pin, got, w)
		}
	}
}

func TestProgramWithManyMaps(t *testing.T) {
	testenv.RequirePrivileged(t)
	// More maps than the first request has room for.
	var maps []*ebpf.Map
	for range 40 {
		maps = append(maps, newMap(t, "m", ebpf.Array))
	}
	prog := loadProgram(t, maps...)
	pinfo, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := pinfo.ID()
	ids, err := bpfinfo.ProgramMapIDs(progID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 40 {
		t.Fatalf("ProgramMapIDs gave %d maps, the program uses 40", len(ids))
	}
	for i, m := range maps {
		if w := ciliumInfo(t, m).ID; !slices.Contains(ids, w) {
			t.Errorf("map %d (ID %d) missing from %v", i, w, ids)
		}
	}
}

func TestErrors(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	prog := loadProgram(t)
	progPin := filepath.Join(bpffs, "prog")
	if err := prog.Pin(progPin); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
		is   error
	}{
		{"missing pin", func() error { _, err := bpfinfo.PinnedMap(filepath.Join(bpffs, "none")); return err }, fs.ErrNotExist},
		{"pin of a program", func() error { _, err := bpfinfo.PinnedMap(progPin); return err }, bpfinfo.ErrNotMap},
		{"no such map", func() error { _, err := bpfinfo.MapByID(1 << 31); return err }, fs.ErrNotExist},
		{"no such program", func() error { _, err := bpfinfo.ProgramMapIDs(1 << 31); return err }, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

func TestMapFDLookup(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	arr := newMap(t, "slots", ebpf.Array)
	if err := arr.Put(uint32(2), uint32(0xfeed)); err != nil {
		t.Fatal(err)
	}
	hash := newMap(t, "h", ebpf.Hash)
	for _, m := range []*ebpf.Map{arr, hash} {
		if err := m.Pin(filepath.Join(bpffs, ciliumInfo(t, m).Name)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := bpfinfo.OpenPinnedMap(filepath.Join(bpffs, "slots"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Map != ciliumInfo(t, arr) || m.KeySize != 4 || m.ValueSize != 4 || m.MaxEntries != 4 {
		t.Errorf("OpenPinnedMap = %+v, want %+v with 4-byte keys and values and 4 entries", *m, ciliumInfo(t, arr))
	}
	for _, tc := range []struct {
		key  uint32
		want uint32
	}{{2, 0xfeed}, {0, 0}} {
		if got, err := m.LookupUint32(tc.key); err != nil || got != tc.want {
			t.Errorf("LookupUint32(%d) = %#x, %v; want %#x", tc.key, got, err, tc.want)
		}
	}
	if _, err := m.LookupUint32(9); err == nil {
		t.Error("LookupUint32 past the end: no error")
	}

	h, err := bpfinfo.OpenPinnedMap(filepath.Join(bpffs, "h"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LookupUint32(1); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("LookupUint32 of a missing key: %v, want ebpf.ErrKeyNotExist", err)
	}
	if err := h.Lookup([]byte{1}, make([]byte, 4)); err == nil {
		t.Error("Lookup with a 1-byte key in a 4-byte-key map: no error")
	}
}

func TestPrograms(t *testing.T) {
	testenv.RequirePrivileged(t)
	bpffs := testenv.BPFFS(t)
	prog := loadProgram(t)
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	want := bpfinfo.Program{ID: id, Type: ebpf.SocketFilter, Tag: info.Tag, Name: info.Name}
	pin := filepath.Join(bpffs, "p")
	if err := prog.Pin(pin); err != nil {
		t.Fatal(err)
	}
	got, err := bpfinfo.PinnedProgram(pin)
	if err != nil || got != want {
		t.Errorf("PinnedProgram = %+v, %v; cilium/ebpf reads %+v", got, err, want)
	}
	got, err = bpfinfo.ProgramByID(id)
	if err != nil || got != want {
		t.Errorf("ProgramByID = %+v, %v; cilium/ebpf reads %+v", got, err, want)
	}
	m := newMap(t, "m", ebpf.Array)
	if err := m.Pin(filepath.Join(bpffs, "m")); err != nil {
		t.Fatal(err)
	}
	if _, err := bpfinfo.PinnedProgram(filepath.Join(bpffs, "m")); !errors.Is(err, bpfinfo.ErrNotProgram) {
		t.Errorf("PinnedProgram of a map: %v, want ErrNotProgram", err)
	}
	if _, err := bpfinfo.OpenPinnedMap(pin); !errors.Is(err, bpfinfo.ErrNotMap) {
		t.Errorf("OpenPinnedMap of a program: %v, want ErrNotMap", err)
	}
	if _, err := bpfinfo.PinnedProgram(filepath.Join(bpffs, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("PinnedProgram of a missing pin: %v, want fs.ErrNotExist", err)
	}
}

func TestRunStats(t *testing.T) {
	testenv.RequirePrivileged(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("BPF_ENABLE_STATS (Linux 5.8, which kfm needs anyway): %v", err)
	}
	defer stats.Close()
	prog := loadProgram(t)
	for range 3 {
		if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	want, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	runs, ns, err := bpfinfo.RunStats(id)
	if err != nil {
		t.Fatal(err)
	}
	if runs != want.RunCount || time.Duration(ns) != want.Runtime || runs == 0 {
		t.Errorf("RunStats = %d runs in %dns; cilium/ebpf reads %d in %v (3 test runs made)", runs, ns, want.RunCount, want.Runtime)
	}
}
