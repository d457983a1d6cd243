package bpfinfo

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNotMap is returned by PinnedMap for a pin of another kind of object
// (a program, a link).
var ErrNotMap = errors.New("not a map")

// Map is what kfm reads of a loaded map.
type Map struct {
	ID   ebpf.MapID
	Type ebpf.MapType
	// Name is the kernel's name of the map: at most 15 characters of the
	// name in the object (".rodata" and ".data" sections get the object's
	// name in front, cut to fit).
	Name string
}

// mapInfo is the head of struct bpf_map_info (include/uapi/linux/bpf.h):
// the kernel copies as much as the caller's info_len asks for.
type mapInfo struct {
	typ        uint32
	id         uint32
	keySize    uint32
	valueSize  uint32
	maxEntries uint32
	mapFlags   uint32
	name       [unix.BPF_OBJ_NAME_LEN]byte
}

// progInfo is the head of struct bpf_prog_info, as far as its name.
type progInfo struct {
	typ            uint32
	id             uint32
	tag            [unix.BPF_TAG_SIZE]byte
	jitedProgLen   uint32
	xlatedProgLen  uint32
	jitedProgInsns uint64
	xlatedInsns    uint64
	loadTime       uint64
	createdByUID   uint32
	nrMapIDs       uint32
	mapIDs         uint64
	name           [unix.BPF_OBJ_NAME_LEN]byte
}

// objGetInfo calls BPF_OBJ_GET_INFO_BY_FD on fd into info.
func objGetInfo(fd int, info unsafe.Pointer, size uintptr) error {
	attr := struct {
		bpfFD   uint32
		infoLen uint32
		info    uint64
	}{bpfFD: uint32(fd), infoLen: uint32(size), info: uint64(uintptr(info))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return errno
	}
	return nil
}

// fdByID calls BPF_PROG_GET_FD_BY_ID or BPF_MAP_GET_FD_BY_ID (cmd) for id,
// read-only for a map.
func fdByID(cmd uintptr, id uint32, flags uint32) (int, error) {
	attr := struct {
		id        uint32
		nextID    uint32
		openFlags uint32
	}{id: id, openFlags: flags}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// objGet calls BPF_OBJ_GET for the pin at path, read-only.
func objGet(path string) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	attr := struct {
		pathname  uint64
		bpfFD     uint32
		fileFlags uint32
	}{pathname: uint64(uintptr(unsafe.Pointer(p))), fileFlags: unix.BPF_F_RDONLY}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func mapOf(fd int) (Map, error) {
	var mi mapInfo
	if err := objGetInfo(fd, unsafe.Pointer(&mi), unsafe.Sizeof(mi)); err != nil {
		return Map{}, err
	}
	return Map{ID: ebpf.MapID(mi.id), Type: ebpf.MapType(mi.typ), Name: unix.ByteSliceToString(mi.name[:])}, nil
}

// MapByID reads the map with the given ID.
func MapByID(id ebpf.MapID) (Map, error) {
	fd, err := fdByID(unix.BPF_MAP_GET_FD_BY_ID, uint32(id), unix.BPF_F_RDONLY)
	if err != nil {
		return Map{}, fmt.Errorf("open map %d: %w", id, err)
	}
	defer unix.Close(fd)
	m, err := mapOf(fd)
	if err != nil {
		return Map{}, fmt.Errorf("map %d: %w", id, err)
	}
	return m, nil
}

// PinnedMap reads the map pinned at path. A path that is not there is an
// error wrapping fs.ErrNotExist (unix.ENOENT); a pin of a program is an
// error too.
func PinnedMap(path string) (Map, error) {
	fd, err := objGet(path)
	if err != nil {
		return Map{}, fmt.Errorf("open pin %s: %w", path, err)
	}
	m, err := mapFD(fd)
	unix.Close(fd)
	if err != nil {
		return Map{}, fmt.Errorf("pin %s: %w", path, err)
	}
	return m.Map, nil
}

// maxMapIDs is how many map IDs ProgramMapIDs asks for at first; a
// program that uses more is asked again.
const maxMapIDs = 32

// ProgramMapIDs returns the IDs of the maps the program with the given ID
// uses, in the kernel's order.
func ProgramMapIDs(id ebpf.ProgramID) ([]ebpf.MapID, error) {
	fd, err := fdByID(unix.BPF_PROG_GET_FD_BY_ID, uint32(id), 0)
	if err != nil {
		return nil, fmt.Errorf("open program %d: %w", id, err)
	}
	defer unix.Close(fd)
	ids := make([]uint32, maxMapIDs)
	for {
		pi := progInfo{nrMapIDs: uint32(len(ids)), mapIDs: uint64(uintptr(unsafe.Pointer(&ids[0])))}
		err := objGetInfo(fd, unsafe.Pointer(&pi), unsafe.Sizeof(pi))
		runtime.KeepAlive(ids)
		if err != nil {
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		if int(pi.nrMapIDs) > len(ids) {
			ids = make([]uint32, pi.nrMapIDs)
			continue
		}
		out := make([]ebpf.MapID, pi.nrMapIDs)
		for i := range out {
			out[i] = ebpf.MapID(ids[i])
		}
		return out, nil
	}
}
