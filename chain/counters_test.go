package chain

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/internal/testenv"
)

func TestCountersSetting(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		name        string
		chain, prog *bool
		want        bool
	}{
		{"default", nil, nil, true},
		{"chain off", &off, nil, false},
		{"program off", nil, &off, false},
		{"program wins", &off, &on, true},
		{"program off in a counting chain", &on, &off, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := ChainSpec{Interface: "eth0", Hook: bpf.HookXDP, Counters: tc.chain, Programs: []ProgramSpec{{Name: "p", Path: "p.o", Counters: tc.prog}}}
			if got := cs.CountersOn(cs.Programs[0]); got != tc.want {
				t.Fatalf("CountersOn = %v, want %v", got, tc.want)
			}
			// kfm.lock records the setting; a lock that says otherwise
			// does not satisfy the manifest.
			lp := LockedProgram{Name: "p", Path: "p.o", Object: "sha256:00", Function: "f", ProceedOn: []string{"pass"}, Counters: lockCounters(tc.want)}
			if lp.CountersOn() != tc.want {
				t.Fatalf("locked CountersOn = %v", lp.CountersOn())
			}
			m := &Manifest{Version: 1, Chains: []ChainSpec{cs}}
			lk := &Lock{Version: 1, Chains: []LockedChain{{Interface: "eth0", Hook: bpf.HookXDP, Programs: []LockedProgram{lp}}}}
			if err := lk.Satisfies(m); err != nil {
				t.Errorf("Satisfies: %v", err)
			}
			lk.Chains[0].Programs[0].Counters = lockCounters(!tc.want)
			if err := lk.Satisfies(m); !errors.Is(err, ErrLockMismatch) || !strings.Contains(err.Error(), "counters") {
				t.Errorf("Satisfies with counters switched: %v", err)
			}
		})
	}
}

// The counter map lives beside the element's state maps: created and
// pinned once, reused by the next apply, replaced when a pinned map has
// another layout, removed when counters are switched off; a failed apply
// removes what it pinned.
func TestCounterPins(t *testing.T) {
	ms := newMapStore(testenv.BPFFS(t))
	tgt := bpf.Target{Interface: "x", Ifindex: 7, Hook: bpf.HookXDP}
	pin := filepath.Join(ms.elementDir(tgt, "p"), counters.PinName)
	id := func() ebpf.MapID {
		t.Helper()
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		info, _ := m.Info()
		id, _ := info.ID()
		return id
	}

	ec, err := ms.prepareCounters(tgt, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	ec.abort()
	if _, err := os.Stat(ms.elementDir(tgt, "p")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed apply left %s: %v", ms.elementDir(tgt, "p"), err)
	}

	ec, err = ms.prepareCounters(tgt, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.commit(); err != nil {
		t.Fatal(err)
	}
	ec.close()
	first := id()
	ec, err = ms.prepareCounters(tgt, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	ec.commit()
	ec.close()
	if id() != first {
		t.Errorf("the next apply made a new counter map")
	}

	// Another layout (an older kfm's): replaced at commit.
	os.Remove(pin)
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(pin); err != nil {
		t.Fatal(err)
	}
	ec, err = ms.prepareCounters(tgt, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.commit(); err != nil {
		t.Fatal(err)
	}
	ec.close()
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := counters.Compatible(m); err != nil {
		t.Errorf("pinned after replacing: %v", err)
	}
	m.Close()

	ec, err = ms.prepareCounters(tgt, "p", false)
	if err != nil {
		t.Fatal(err)
	}
	if ec.m != nil {
		t.Error("counters off: a map was prepared")
	}
	if err := ec.commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("counters off: %s still pinned (%v)", pin, err)
	}
	ms.gc(tgt, nil)
}
