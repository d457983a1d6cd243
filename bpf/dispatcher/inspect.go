package dispatcher

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Inspect reads the configuration of a loaded dispatcher program, as
// libxdp does (check_dispatcher_version): the program must be named
// xdp_dispatcher and use exactly one map, a read-only (BPF_F_RDONLY_PROG)
// array of one element with a 4-byte key, whose value is the
// configuration. Its version comes from the magic byte, or for version 1
// from the dispatcher_version metadata in the program's BTF. Programs that
// are not dispatchers give an error wrapping ErrNotDispatcher; dispatchers
// newer than kfm understands one wrapping ErrUnsupportedVersion.
func Inspect(prog *ebpf.Program) (Config, error) {
	info, err := prog.Info()
	if err != nil {
		return Config{}, fmt.Errorf("program info: %w", err)
	}
	if info.Name != ProgramName {
		return Config{}, fmt.Errorf("program is called %q, not %s: %w", info.Name, ProgramName, ErrNotDispatcher)
	}
	ids, _ := info.MapIDs()
	if len(ids) != 1 {
		return Config{}, fmt.Errorf("program uses %d maps, a dispatcher one: %w", len(ids), ErrNotDispatcher)
	}
	m, err := ebpf.NewMapFromID(ids[0])
	if err != nil {
		return Config{}, fmt.Errorf("open configuration map %d: %w", ids[0], err)
	}
	defer m.Close()
	mi, err := m.Info()
	if err != nil {
		return Config{}, fmt.Errorf("configuration map %d: %w", ids[0], err)
	}
	if mi.KeySize != 4 || mi.MaxEntries != 1 || mi.ValueSize < 2 || mi.Flags&unix.BPF_F_RDONLY_PROG == 0 {
		return Config{}, fmt.Errorf("map %d is not a dispatcher configuration (key %d bytes, value %d bytes, %d entries, flags %#x): %w",
			ids[0], mi.KeySize, mi.ValueSize, mi.MaxEntries, mi.Flags, ErrNotDispatcher)
	}
	value, err := m.LookupBytes(uint32(0))
	if err != nil {
		return Config{}, fmt.Errorf("read configuration map %d: %w", ids[0], err)
	}
	btfVersion := 0
	if len(value) > 0 && value[0] != Magic {
		btfVersion, err = metadataVersion(prog)
		if err != nil {
			return Config{}, err
		}
	}
	return ParseConfig(value, btfVersion)
}

// metadataVersion reads libxdp's dispatcher_version from the program's BTF:
// a variable of that name in the xdp_metadata section, declared with
// __uint(dispatcher_version, N), i.e. a pointer to an array of N elements.
// It returns 0 when the BTF has no such variable.
func metadataVersion(prog *ebpf.Program) (int, error) {
	h, err := prog.Handle()
	if errors.Is(err, ebpf.ErrNotSupported) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("program BTF: %w", err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return 0, fmt.Errorf("program BTF: %w", err)
	}
	var sec *btf.Datasec
	if err := spec.TypeByName("xdp_metadata", &sec); err != nil {
		return 0, nil
	}
	for _, vs := range sec.Vars {
		v, ok := vs.Type.(*btf.Var)
		if !ok || v.Name != "dispatcher_version" {
			continue
		}
		ptr, ok := btf.UnderlyingType(v.Type).(*btf.Pointer)
		if !ok {
			return 0, nil
		}
		arr, ok := btf.UnderlyingType(ptr.Target).(*btf.Array)
		if !ok {
			return 0, nil
		}
		return int(arr.Nelems), nil
	}
	return 0, nil
}
