package metrics

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH call reads.
const batchSize = 256

// walk calls fn for every entry of m, at most limit entries, reading them
// batchSize at a time (kernel >= 5.6). values holds one value per CPU for
// per-CPU maps, else one. The slices are reused: fn must copy what it
// keeps. It returns the number of entries walked.
func walk(m *ebpf.Map, limit int, fn func(key []byte, values [][]byte)) (int, error) {
	ks, vs := int(m.KeySize()), int(m.ValueSize())
	ncpu := 1
	if perCPU(m.Type()) {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return 0, err
		}
		ncpu = n
	}
	size := batchSize
	var cursor ebpf.MapBatchCursor
	total := 0
	values := make([][]byte, ncpu)
	for total < limit {
		keys := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(ks, reflect.TypeFor[byte]())), size, size)
		vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(vs, reflect.TypeFor[byte]())), size*ncpu, size*ncpu)
		n, err := m.BatchLookup(&cursor, keys.Interface(), vals.Interface(), nil)
		done := errors.Is(err, ebpf.ErrKeyNotExist)
		if errors.Is(err, ebpf.ErrNotSupported) && total == 0 {
			// No batch operations for this map type on this kernel
			// (per-CPU arrays on 5.10, for one).
			return walkKeys(m, limit, ncpu, fn)
		}
		if err != nil && !done {
			if errors.Is(err, errNoSpace) && total == 0 && size < 1<<16 {
				size *= 4 // a hash bucket larger than the batch
				cursor = ebpf.MapBatchCursor{}
				continue
			}
			return total, fmt.Errorf("read map %s: %w", mapName(m), err)
		}
		for i := 0; i < n && total < limit; i++ {
			key := keys.Index(i).Slice(0, ks).Bytes()
			for c := range ncpu {
				values[c] = vals.Index(i*ncpu+c).Slice(0, vs).Bytes()
			}
			fn(key, values)
			total++
		}
		if done || n == 0 {
			break
		}
	}
	return total, nil
}

// walkKeys is walk one key at a time (BPF_MAP_GET_NEXT_KEY, then a
// lookup), for kernels that have no batch lookups of m's type: two system
// calls per entry. A key deleted while the walk goes on may make it start
// again; limit bounds it.
func walkKeys(m *ebpf.Map, limit, ncpu int, fn func(key []byte, values [][]byte)) (int, error) {
	ks, vs := int(m.KeySize()), int(m.ValueSize())
	var prev []byte
	key := make([]byte, ks)
	vals := reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(vs, reflect.TypeFor[byte]())), ncpu, ncpu)
	values := make([][]byte, ncpu)
	total := 0
	for total < limit {
		var err error
		if prev == nil {
			err = m.NextKey(nil, key)
		} else {
			err = m.NextKey(prev, key)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return total, fmt.Errorf("read map %s: %w", mapName(m), err)
		}
		if perCPU(m.Type()) {
			err = m.Lookup(key, vals.Interface())
		} else {
			err = m.Lookup(key, vals.Index(0).Slice(0, vs).Interface())
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			// deleted since NextKey returned it
		case err != nil:
			return total, fmt.Errorf("read map %s: %w", mapName(m), err)
		default:
			for c := range ncpu {
				values[c] = vals.Index(c).Slice(0, vs).Bytes()
			}
			fn(key, values)
			total++
		}
		prev = append(prev[:0], key...)
	}
	return total, nil
}

// errNoSpace: a hash map's bucket holds more entries than the batch.
var errNoSpace = unix.ENOSPC

func perCPU(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUArray, ebpf.PerCPUHash, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return m.String()
}
