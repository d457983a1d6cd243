package bpf

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Errors of SetParams.
var (
	ErrUnknownParam = errors.New("unknown param")
	ErrInvalidParam = errors.New("invalid param value")
)

// ParamKind says how a parameter's value is written.
type ParamKind string

// Kinds of parameters. Only int, uint, bool and enum can be set from the
// command line; other kinds are shown by inspect but not settable.
const (
	ParamInt   ParamKind = "int"
	ParamUint  ParamKind = "uint"
	ParamBool  ParamKind = "bool"
	ParamEnum  ParamKind = "enum"
	ParamOther ParamKind = "other"
)

// Param is a `volatile const` global of the object: a value the user may
// set at install time.
type Param struct {
	Name string `json:"name"`
	// Type is the C type as declared (__u32, _Bool, enum mode...).
	Type string    `json:"type"`
	Kind ParamKind `json:"kind"`
	Size uint32    `json:"size"`
	// Default is the compiled-in value: int64, uint64, bool, the enum
	// value's name, or (kind other) the hex encoding of its bytes.
	Default any `json:"default"`

	variable string // key in CollectionSpec.Variables
	typ      btf.Type
}

// describeParams lists the volatile const globals of spec, sorted by name.
func describeParams(spec *ebpf.CollectionSpec) ([]Param, error) {
	params := []Param{}
	for name, v := range spec.Variables {
		if !v.Constant() || v.Type == nil || !isVolatile(v.Type.Type) {
			continue
		}
		p := Param{Name: name, Type: btfTypeName(v.Type.Type), Size: v.Size(), variable: name, typ: btf.UnderlyingType(v.Type.Type)}
		p.Kind = paramKind(p.typ)
		def, err := p.decode(v.Value)
		if err != nil {
			return nil, fmt.Errorf("param %s: %w", name, err)
		}
		p.Default = def
		params = append(params, p)
	}
	slices.SortFunc(params, func(a, b Param) int { return strings.Compare(a.Name, b.Name) })
	return params, nil
}

// isVolatile reports whether a volatile qualifier appears before the first
// non-qualifier, non-typedef type.
func isVolatile(t btf.Type) bool {
	for {
		switch v := t.(type) {
		case *btf.Volatile:
			return true
		case *btf.Const:
			t = v.Type
		case *btf.Restrict:
			t = v.Type
		case *btf.Typedef:
			t = v.Type
		default:
			return false
		}
	}
}

func paramKind(t btf.Type) ParamKind {
	switch v := t.(type) {
	case *btf.Int:
		switch {
		case v.Encoding&btf.Bool != 0:
			return ParamBool
		case v.Encoding&btf.Signed != 0:
			return ParamInt
		default:
			return ParamUint
		}
	case *btf.Enum:
		return ParamEnum
	default:
		return ParamOther
	}
}

// decode turns the raw bytes of a value into its Go form.
func (p Param) decode(raw []byte) (any, error) {
	if raw == nil {
		raw = make([]byte, p.Size)
	}
	if len(raw) != int(p.Size) {
		return nil, fmt.Errorf("value has %d bytes, type has %d", len(raw), p.Size)
	}
	switch p.Kind {
	case ParamBool:
		return raw[0] != 0, nil
	case ParamUint:
		return readUint(raw), nil
	case ParamInt:
		return signExtend(readUint(raw), len(raw)), nil
	case ParamEnum:
		e := p.typ.(*btf.Enum)
		u := readUint(raw)
		for _, ev := range e.Values {
			if ev.Value == u || (e.Signed && uint64(signExtend(u, len(raw))) == ev.Value) {
				return ev.Name, nil
			}
		}
		if e.Signed {
			return signExtend(u, len(raw)), nil
		}
		return u, nil
	default:
		return hex.EncodeToString(raw), nil
	}
}

func readUint(b []byte) uint64 {
	var buf [8]byte
	copy(buf[:], b)
	return binary.NativeEndian.Uint64(buf[:])
}

func signExtend(u uint64, size int) int64 {
	shift := uint(64 - 8*size)
	return int64(u<<shift) >> shift
}

// encode parses s according to the parameter's type and returns its bytes.
func (p Param) encode(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	buf := make([]byte, 8)
	switch p.Kind {
	case ParamBool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a boolean (use true or false)", s)
		}
		if b {
			buf[0] = 1
		}
	case ParamUint:
		u, err := strconv.ParseUint(s, 0, 64)
		max := uint64(math.MaxUint64) >> (64 - 8*p.Size)
		if err != nil || u > max {
			return nil, fmt.Errorf("%q is not an integer in 0..%d (%s)", s, max, p.Type)
		}
		binary.NativeEndian.PutUint64(buf, u)
	case ParamInt:
		i, err := strconv.ParseInt(s, 0, 64)
		min, max := int64(math.MinInt64)>>(64-8*p.Size), int64(math.MaxInt64)>>(64-8*p.Size)
		if err != nil || i < min || i > max {
			return nil, fmt.Errorf("%q is not an integer in %d..%d (%s)", s, min, max, p.Type)
		}
		binary.NativeEndian.PutUint64(buf, uint64(i))
	case ParamEnum:
		e := p.typ.(*btf.Enum)
		var names []string
		found := false
		for _, ev := range e.Values {
			names = append(names, ev.Name)
			if ev.Name == s {
				binary.NativeEndian.PutUint64(buf, ev.Value)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("%q is not a value of %s (use one of %s)", s, p.Type, strings.Join(names, ", "))
		}
	default:
		return nil, fmt.Errorf("parameters of type %s cannot be set", p.Type)
	}
	if p.Size > 8 {
		return nil, fmt.Errorf("parameters of %d bytes cannot be set", p.Size)
	}
	return buf[:p.Size], nil
}

// Canonical returns the value s would be stored as, normalised (0x10 -> 16,
// TRUE -> true) so that equal values compare equal in lockfiles.
func (p Param) Canonical(s string) (string, error) {
	raw, err := p.encode(s)
	if err != nil {
		return "", fmt.Errorf("param %s: %w: %w", p.Name, ErrInvalidParam, errors.New(err.Error()))
	}
	v, err := p.decode(raw)
	if err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}

// SetParams writes values (parameter name -> value as text) into the
// volatile const globals of spec. Unknown names and values that do not fit
// the parameter's type are errors that name the parameter and say what
// would fit.
func SetParams(spec *ebpf.CollectionSpec, values map[string]string) error {
	if len(values) == 0 {
		return nil
	}
	params, err := describeParams(spec)
	if err != nil {
		return err
	}
	names := slices.Sorted(mapKeys(values))
	for _, name := range names {
		i := slices.IndexFunc(params, func(p Param) bool { return p.Name == name })
		if i < 0 {
			return unknownParamError(name, params)
		}
		p := params[i]
		raw, err := p.encode(values[name])
		if err != nil {
			return fmt.Errorf("param %s: %w: %s", name, ErrInvalidParam, err)
		}
		if err := spec.Variables[p.variable].Set(raw); err != nil {
			return fmt.Errorf("param %s: %w", name, err)
		}
	}
	return nil
}

func unknownParamError(name string, params []Param) error {
	if len(params) == 0 {
		return fmt.Errorf("%w %q: the program has no parameters (volatile const globals)", ErrUnknownParam, name)
	}
	known := make([]string, 0, len(params))
	for _, p := range params {
		known = append(known, p.Name)
	}
	return fmt.Errorf("%w %q: known params are %s", ErrUnknownParam, name, strings.Join(known, ", "))
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
