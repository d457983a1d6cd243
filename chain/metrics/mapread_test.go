package metrics

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/testenv"
)

// TestWalkKeys: the one-key-at-a-time walk (kernels without batch lookups
// of a map type, per-CPU arrays on 5.10) reads what the batch walk reads,
// per CPU.
func TestWalkKeys(t *testing.T) {
	testenv.RequirePrivileged(t)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []ebpf.MapType{ebpf.Array, ebpf.PerCPUArray, ebpf.Hash, ebpf.PerCPUHash} {
		t.Run(typ.String(), func(t *testing.T) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			cpus := 1
			if perCPU(typ) {
				cpus = ncpu
			}
			for k := uint32(0); k < 5; k++ {
				vals := make([]uint64, cpus)
				for c := range vals {
					vals[c] = uint64(k*100) + uint64(c)
				}
				var v any = vals
				if cpus == 1 {
					v = vals[0]
				}
				if err := m.Put(k, v); err != nil {
					t.Fatal(err)
				}
			}
			read := func(walker func(*ebpf.Map, int, int, func([]byte, [][]byte)) (int, error)) []string {
				var out []string
				n, err := walker(m, 100, cpus, func(key []byte, values [][]byte) {
					for c, v := range values {
						out = append(out, fmt.Sprintf("%d/%d=%d", binary.NativeEndian.Uint32(key), c, binary.NativeEndian.Uint64(v)))
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				if want := int(m.MaxEntries()); typ == ebpf.Array || typ == ebpf.PerCPUArray {
					if n != want {
						t.Errorf("walked %d entries, want %d", n, want)
					}
				} else if n != 5 {
					t.Errorf("walked %d entries, want 5", n)
				}
				slices.Sort(out)
				return out
			}
			batch := read(func(m *ebpf.Map, limit, _ int, fn func([]byte, [][]byte)) (int, error) { return walk(m, limit, fn) })
			keys := read(walkKeys)
			if !slices.Equal(batch, keys) {
				t.Errorf("one key at a time:\n%v\nbatch:\n%v", keys, batch)
			}
			if !slices.Contains(keys, fmt.Sprintf("4/%d=%d", cpus-1, 400+cpus-1)) {
				t.Errorf("key 4 of the last CPU missing: %v", keys)
			}
		})
	}
}
