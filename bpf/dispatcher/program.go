package dispatcher

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ProgramName is the name of the dispatcher program, by which libxdp (and
// kfm) recognise a dispatcher.
const ProgramName = "xdp_dispatcher"

//go:embed xdp_dispatcher.o
var dispatcherObject []byte

// Spec returns a fresh copy of kfm's dispatcher object (xdp_dispatcher.c):
// the xdp_dispatcher program, the slot functions prog0..prog9 and the
// .rodata configuration map.
func Spec() (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(dispatcherObject))
	if err != nil {
		return nil, fmt.Errorf("kfm's dispatcher object: %w", err)
	}
	return spec, nil
}

// LoadDispatcher loads the xdp_dispatcher program of spec (kfm's object from
// Spec, or libxdp's xdp-dispatcher.o) with cfg as its configuration. With
// frags the program is loaded with BPF_F_XDP_HAS_FRAGS. The spec is
// modified.
func LoadDispatcher(spec *ebpf.CollectionSpec, cfg Config, frags bool) (*ebpf.Program, error) {
	ps, ok := spec.Programs[ProgramName]
	if !ok {
		return nil, fmt.Errorf("dispatcher object has no program %s", ProgramName)
	}
	rodata, ok := spec.Maps[".rodata"]
	if !ok {
		return nil, errors.New("dispatcher object has no .rodata configuration")
	}
	value, err := cfg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if int(rodata.ValueSize) != len(value) {
		return nil, fmt.Errorf("dispatcher object's .rodata holds %d bytes, a version %d configuration %d", rodata.ValueSize, cfg.Version, len(value))
	}
	rodata.Contents = []ebpf.MapKV{{Key: uint32(0), Value: value}}
	if frags {
		ps.Flags |= unix.BPF_F_XDP_HAS_FRAGS
	} else {
		ps.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
	}
	prog, err := loadProgram(spec, ProgramName, nil)
	if err != nil {
		return nil, fmt.Errorf("load dispatcher: %w", err)
	}
	return prog, nil
}

// loadProgram loads only program name of spec and the maps it uses (other
// programs of the object are left alone).
func loadProgram(spec *ebpf.CollectionSpec, name string, opts *ebpf.CollectionOptions) (*ebpf.Program, error) {
	typ := reflect.StructOf([]reflect.StructField{{
		Name: "Program",
		Type: reflect.TypeFor[*ebpf.Program](),
		Tag:  reflect.StructTag(`ebpf:"` + name + `"`),
	}})
	v := reflect.New(typ)
	if err := spec.LoadAndAssign(v.Interface(), opts); err != nil {
		return nil, err
	}
	return v.Elem().Field(0).Interface().(*ebpf.Program), nil
}
