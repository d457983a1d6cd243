package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// ErrMapField: a metric declaration names a map or field the object does not
// have, or one kfm cannot read as a number.
var ErrMapField = errors.New("invalid map field")

// Field is an integer at a fixed place in a map's key or value, found
// through the object's BTF.
type Field struct {
	// Name is the struct member ("" for a key or value that is itself an
	// integer).
	Name   string `json:"name,omitempty"`
	Offset uint32 `json:"offset"`
	// Size is 1, 2, 4 or 8 bytes.
	Size   uint32 `json:"size"`
	Signed bool   `json:"signed,omitempty"`
	// BigEndian is set for fields typed __be16, __be32 or __be64 (network
	// byte order); all others are read in host byte order.
	BigEndian bool `json:"bigEndian,omitempty"`
}

// MapLayout is where metric labels and a value lie in one map: what an
// exporter needs to read the pinned map without the object.
type MapLayout struct {
	Map string `json:"map"`
	// Type is the map type as bpftool spells it (percpu_array, hash...).
	Type      string `json:"type"`
	KeySize   uint32 `json:"keySize"`
	ValueSize uint32 `json:"valueSize"`
	// PerCPU is set for per-CPU maps: the value of each CPU is read and
	// the values are summed.
	PerCPU bool `json:"perCPU,omitempty"`
	// Keys are the key fields, in the order asked for.
	Keys  []Field `json:"keys,omitempty"`
	Value Field   `json:"value"`
}

// MapLayout resolves key fields and a value field of map mapName through the
// object's BTF. A key field "" is the whole key, which must then be an
// integer; valueField "" is the whole value, likewise. Fields must be
// integers (or enums) of 1, 2, 4 or 8 bytes, members of the key or value
// struct. Errors wrap ErrMapField and list what there is.
func (o *Object) MapLayout(mapName string, keyFields []string, valueField string) (*MapLayout, error) {
	ms, ok := o.spec.Maps[mapName]
	if !ok || strings.HasPrefix(mapName, ".") {
		var names []string
		for _, m := range o.Maps {
			names = append(names, m.Name)
		}
		return nil, fmt.Errorf("%s has no map %q (it has %s): %w", o.name, mapName, orNone(names), ErrMapField)
	}
	if ms.Key == nil || ms.Value == nil {
		return nil, fmt.Errorf("map %s has no BTF key and value types (build the object with -g): %w", mapName, ErrMapField)
	}
	switch ms.Type {
	case ebpf.Array, ebpf.Hash, ebpf.LRUHash, ebpf.PerCPUArray, ebpf.PerCPUHash, ebpf.LRUCPUHash:
	default:
		return nil, fmt.Errorf("map %s is a %s map; metrics are read from array and hash maps (per-CPU or not): %w", mapName, mapTypeName(ms.Type), ErrMapField)
	}
	l := &MapLayout{
		Map: mapName, Type: mapTypeName(ms.Type), KeySize: ms.KeySize, ValueSize: ms.ValueSize,
		PerCPU: ms.Type == ebpf.PerCPUArray || ms.Type == ebpf.PerCPUHash || ms.Type == ebpf.LRUCPUHash,
	}
	for _, kf := range keyFields {
		f, err := findField(ms.Key, kf)
		if err != nil {
			return nil, fmt.Errorf("map %s: key: %w", mapName, err)
		}
		l.Keys = append(l.Keys, f)
	}
	f, err := findField(ms.Value, valueField)
	if err != nil {
		return nil, fmt.Errorf("map %s: value: %w", mapName, err)
	}
	l.Value = f
	return l, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// findField finds member name of t (or t itself when name is "").
func findField(t btf.Type, name string) (Field, error) {
	if name == "" {
		return intField("", t, 0)
	}
	s, ok := skipQualifiers(t).(*btf.Struct)
	if !ok {
		return Field{}, fmt.Errorf("is %s, not a struct: it has no field %q (leave the field out to use the whole %s): %w", btfTypeName(t), name, btfTypeName(t), ErrMapField)
	}
	var names []string
	for _, m := range s.Members {
		if m.Name == name {
			if m.BitfieldSize != 0 {
				return Field{}, fmt.Errorf("field %s of struct %s is a bit field, which kfm cannot read: %w", name, s.Name, ErrMapField)
			}
			f, err := intField(name, m.Type, m.Offset.Bytes())
			if err != nil {
				return Field{}, fmt.Errorf("field %s of struct %s: %w", name, s.Name, err)
			}
			return f, nil
		}
		names = append(names, m.Name)
	}
	return Field{}, fmt.Errorf("struct %s has no field %q (it has %s): %w", s.Name, name, orNone(names), ErrMapField)
}

func intField(name string, t btf.Type, off uint32) (Field, error) {
	f := Field{Name: name, Offset: off}
	// Network byte order shows only in the typedef's name.
	for u := t; ; {
		if td, ok := u.(*btf.Typedef); ok {
			if strings.HasPrefix(td.Name, "__be") {
				f.BigEndian = true
				break
			}
			u = td.Type
			continue
		}
		if q := skipCV(u); q != u {
			u = q
			continue
		}
		break
	}
	switch v := skipQualifiers(t).(type) {
	case *btf.Int:
		f.Size, f.Signed = v.Size, v.Encoding&btf.Signed != 0
	case *btf.Enum:
		f.Size, f.Signed = v.Size, v.Signed
	default:
		return Field{}, fmt.Errorf("is %s, not an integer: %w", btfTypeName(t), ErrMapField)
	}
	switch f.Size {
	case 1, 2, 4, 8:
	default:
		return Field{}, fmt.Errorf("is a %d-byte integer; kfm reads 1, 2, 4 and 8 bytes: %w", f.Size, ErrMapField)
	}
	return f, nil
}

func skipCV(t btf.Type) btf.Type {
	switch v := t.(type) {
	case *btf.Const:
		return v.Type
	case *btf.Volatile:
		return v.Type
	case *btf.Restrict:
		return v.Type
	}
	return t
}

func skipQualifiers(t btf.Type) btf.Type {
	for {
		switch v := t.(type) {
		case *btf.Const, *btf.Volatile, *btf.Restrict:
			t = skipCV(v)
		case *btf.Typedef:
			t = v.Type
		default:
			return t
		}
	}
}

// Read returns field f of b (a key, or one CPU's value) as an integer;
// signed fields are sign-extended into the uint64's bits.
func (f Field) Read(b []byte) (uint64, bool) {
	if int(f.Offset)+int(f.Size) > len(b) {
		return 0, false
	}
	p := b[f.Offset : f.Offset+f.Size]
	var order binary.ByteOrder = binary.NativeEndian
	if f.BigEndian {
		order = binary.BigEndian
	}
	var v uint64
	switch f.Size {
	case 1:
		v = uint64(p[0])
	case 2:
		v = uint64(order.Uint16(p))
	case 4:
		v = uint64(order.Uint32(p))
	case 8:
		v = order.Uint64(p)
	}
	if f.Signed && f.Size < 8 {
		shift := 64 - 8*f.Size
		v = uint64(int64(v<<shift) >> shift)
	}
	return v, true
}
