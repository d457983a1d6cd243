package bpfinfo

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrKeyNotExist is returned by MapFD.Lookup for a key the map does not
// hold (it wraps ebpf.ErrKeyNotExist, as cilium/ebpf's Lookup does).
var ErrKeyNotExist = fmt.Errorf("lookup: %w", ebpf.ErrKeyNotExist)

// MapFD is a read-only descriptor of a pinned map, for the read paths
// that look at many maps once each (see the package documentation). Use
// cilium/ebpf's Map for anything else.
type MapFD struct {
	fd int
	Map
	KeySize, ValueSize, MaxEntries uint32
}

// OpenPinnedMap opens the map pinned at path, read-only. A path that is not
// there is an error wrapping fs.ErrNotExist; a pin of a program or a link
// is an error wrapping ErrNotMap.
func OpenPinnedMap(path string) (*MapFD, error) {
	fd, err := objGet(path)
	if err != nil {
		return nil, fmt.Errorf("open pin %s: %w", path, err)
	}
	m, err := mapFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	return m, nil
}

// kindOf returns what the BPF descriptor fd is, by the name of its anon
// inode: "bpf-map", "bpf-prog", "bpf_link" and so on. BPF_OBJ_GET opens a
// pinned map, program or link alike, and BPF_OBJ_GET_INFO_BY_FD fills in
// the info of whatever the descriptor is, so callers ask first.
func kindOf(fd int) (string, error) {
	var buf [32]byte
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(string(buf[:n]), "anon_inode:"), nil
}

// mapFD checks that fd is a map's and reads its info.
func mapFD(fd int) (*MapFD, error) {
	kind, err := kindOf(fd)
	if err != nil {
		return nil, err
	}
	if kind != "bpf-map" {
		return nil, fmt.Errorf("%w: it is %s", ErrNotMap, kind)
	}
	var mi mapInfo
	if err := objGetInfo(fd, unsafe.Pointer(&mi), unsafe.Sizeof(mi)); err != nil {
		return nil, err
	}
	return &MapFD{
		fd:      fd,
		Map:     Map{ID: ebpf.MapID(mi.id), Type: ebpf.MapType(mi.typ), Name: unix.ByteSliceToString(mi.name[:])},
		KeySize: mi.keySize, ValueSize: mi.valueSize, MaxEntries: mi.maxEntries,
	}, nil
}

// Lookup reads the value of key into value, which must be ValueSize bytes
// long (for a per-CPU map: ValueSize rounded up to 8, times the number of
// possible CPUs); key must be KeySize bytes long.
func (m *MapFD) Lookup(key, value []byte) error {
	if len(key) != int(m.KeySize) || len(key) == 0 || len(value) == 0 {
		return fmt.Errorf("lookup in map %d: key of %d bytes, value of %d (the map's are %d and %d)", m.ID, len(key), len(value), m.KeySize, m.ValueSize)
	}
	attr := struct {
		mapFD uint32
		_     uint32
		key   uint64
		value uint64
		flags uint64
	}{mapFD: uint32(m.fd), key: uint64(uintptr(unsafe.Pointer(&key[0]))), value: uint64(uintptr(unsafe.Pointer(&value[0])))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_LOOKUP_ELEM, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	switch {
	case errno == unix.ENOENT:
		return ErrKeyNotExist
	case errno != 0:
		return fmt.Errorf("lookup in map %d: %w", m.ID, errno)
	}
	return nil
}

// LookupUint32 reads the value of the 4-byte key k of a map whose values
// are 4 bytes long (a PROG_ARRAY's slots hold program IDs so).
func (m *MapFD) LookupUint32(k uint32) (uint32, error) {
	if m.ValueSize != 4 {
		return 0, fmt.Errorf("lookup in map %d: values are %d bytes, not 4", m.ID, m.ValueSize)
	}
	var v uint32
	err := m.Lookup(unsafe.Slice((*byte)(unsafe.Pointer(&k)), 4), unsafe.Slice((*byte)(unsafe.Pointer(&v)), 4))
	return v, err
}

// Close closes the descriptor.
func (m *MapFD) Close() error {
	if m == nil || m.fd < 0 {
		return nil
	}
	err := unix.Close(m.fd)
	m.fd = -1
	return err
}

// progInfoOf reads the head of the info of the program fd.
func progInfoOf(fd int) (progInfo, error) {
	var pi progInfo
	err := objGetInfo(fd, unsafe.Pointer(&pi), unsafe.Sizeof(pi))
	return pi, err
}

// Program is what kfm reads of a loaded program.
type Program struct {
	ID   ebpf.ProgramID
	Type ebpf.ProgramType
	// Tag is the program's tag, in hex as bpftool prints it.
	Tag  string
	Name string
}

// PinnedProgram reads the program pinned at path. A path that is not there
// is an error wrapping fs.ErrNotExist.
func PinnedProgram(path string) (Program, error) {
	fd, err := objGet(path)
	if err != nil {
		return Program{}, fmt.Errorf("open pin %s: %w", path, err)
	}
	defer unix.Close(fd)
	kind, err := kindOf(fd)
	if err != nil {
		return Program{}, fmt.Errorf("pin %s: %w", path, err)
	}
	if kind != "bpf-prog" {
		return Program{}, fmt.Errorf("pin %s: %w: it is %s", path, ErrNotProgram, kind)
	}
	return programOf(fd, path)
}

// ProgramByID reads the program with the given ID.
func ProgramByID(id ebpf.ProgramID) (Program, error) {
	fd, err := fdByID(unix.BPF_PROG_GET_FD_BY_ID, uint32(id), 0)
	if err != nil {
		return Program{}, fmt.Errorf("open program %d: %w", id, err)
	}
	defer unix.Close(fd)
	return programOf(fd, "program "+strconv.Itoa(int(id)))
}

func programOf(fd int, what string) (Program, error) {
	pi, err := progInfoOf(fd)
	if err != nil {
		return Program{}, fmt.Errorf("%s: %w", what, err)
	}
	const hex = "0123456789abcdef"
	tag := make([]byte, 0, 2*len(pi.tag))
	for _, b := range pi.tag {
		tag = append(tag, hex[b>>4], hex[b&15])
	}
	return Program{ID: ebpf.ProgramID(pi.id), Type: ebpf.ProgramType(pi.typ), Tag: string(tag), Name: unix.ByteSliceToString(pi.name[:])}, nil
}

// ErrNotProgram is returned by PinnedProgram for a pin of another kind of
// object (a map, a link).
var ErrNotProgram = errors.New("not a program")

// progStats is struct bpf_prog_info as far as run_cnt (Linux 5.1).
type progStats struct {
	progInfo
	ifindex   uint32
	_         uint32 // gpl_compatible
	_         [2]uint64
	_         [2]uint32
	_         [2]uint64
	_         [2]uint32
	_         uint64 // func_info
	_         [2]uint32
	_         [2]uint64
	_         [4]uint32
	_         uint64 // prog_tags
	runTimeNs uint64
	runCnt    uint64
}

// RunStats reads the kernel's run statistics of the program with the
// given ID: how many times it ran and for how long in all, counted while
// statistics are enabled (BPF_ENABLE_STATS or kernel.bpf_stats_enabled).
func RunStats(id ebpf.ProgramID) (runs uint64, ns uint64, err error) {
	fd, err := fdByID(unix.BPF_PROG_GET_FD_BY_ID, uint32(id), 0)
	if err != nil {
		return 0, 0, fmt.Errorf("open program %d: %w", id, err)
	}
	defer unix.Close(fd)
	var ps progStats
	if err := objGetInfo(fd, unsafe.Pointer(&ps), unsafe.Sizeof(ps)); err != nil {
		return 0, 0, fmt.Errorf("program %d: %w", id, err)
	}
	return ps.runCnt, ps.runTimeNs, nil
}
