package bpf

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Errors callers branch on. Every error returned by ReadObject and
// ParseObject wraps one of the first two.
var (
	// ErrInvalidObject: not an ELF file, not a BPF object, truncated or
	// otherwise unreadable.
	ErrInvalidObject = errors.New("invalid BPF object")
	// ErrNoLicense: the object has no "license" section; the kernel needs one
	// (and GPL-only helpers need a GPL-compatible one).
	ErrNoLicense = errors.New("no license")
	// ErrNoProgram: the object has no program of the requested name.
	ErrNoProgram = errors.New("no such program")
)

// MaxObjectSize bounds the objects kfm reads (64 MiB); BPF objects are
// rarely larger than a few hundred KiB.
const MaxObjectSize = 64 << 20

// Object describes a BPF ELF object. Its exported fields are what `kfm
// inspect` shows; the parsed specification stays inside and is handed out as
// a fresh copy by Spec.
type Object struct {
	// SHA256 is the hex digest of the object's bytes.
	SHA256   string    `json:"sha256"`
	Size     int       `json:"size"`
	License  string    `json:"license"`
	BTF      bool      `json:"btf"`
	Programs []Program `json:"programs"`
	Maps     []Map     `json:"maps"`
	Params   []Param   `json:"params"`
	// RunConfig holds libxdp's XDP_RUN_CONFIG metadata by function name,
	// for the functions that declare it.
	RunConfig map[string]RunConfig `json:"runConfig,omitempty"`

	name string
	spec *ebpf.CollectionSpec
}

// Program is one entry function of an object.
type Program struct {
	Function string `json:"function"`
	Section  string `json:"section"`
	// Type is the program type as bpftool spells it: xdp, sched_cls, ...
	Type string `json:"type"`
	// Hooks are the hooks kfm can chain the program on; empty when kfm
	// cannot chain this program type.
	Hooks []Hook `json:"hooks"`
	// Frags is set for XDP programs that handle multi-buffer packets
	// (SEC("xdp.frags")).
	Frags bool `json:"frags,omitempty"`
}

// Map is one map the object declares (global-variable sections such as
// .rodata are described as Params instead).
type Map struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	KeySize    uint32 `json:"keySize"`
	ValueSize  uint32 `json:"valueSize"`
	MaxEntries uint32 `json:"maxEntries"`
	// Pinning is "none" or "by_name" (LIBBPF_PIN_BY_NAME).
	Pinning string `json:"pinning"`
}

// ReadObject reads and describes the object file at path.
func ReadObject(path string) (*Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", path, ErrInvalidObject)
	}
	if st.Size() > MaxObjectSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d MiB limit: %w", path, st.Size(), MaxObjectSize>>20, ErrInvalidObject)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ParseObject(path, data)
}

// ParseObject describes the object in data. name says where it came from
// (a path or a reference) and starts every error message.
func ParseObject(name string, data []byte) (*Object, error) {
	if len(data) > MaxObjectSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d MiB limit: %w", name, len(data), MaxObjectSize>>20, ErrInvalidObject)
	}
	if err := checkELF(data); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	spec, err := loadSpec(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrInvalidObject, oneLine(err))
	}
	sum := sha256.Sum256(data)
	o := &Object{
		SHA256: hex.EncodeToString(sum[:]),
		Size:   len(data),
		BTF:    spec.Types != nil,
		name:   name,
		spec:   spec,
	}
	if err := o.describe(); err != nil {
		// Its metadata (XDP_RUN_CONFIG, parameters) is part of the
		// object: what kfm cannot read there makes it invalid too (found
		// by FuzzParseObject).
		if !errors.Is(err, ErrInvalidObject) {
			err = fmt.Errorf("%w: %w", ErrInvalidObject, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return o, nil
}

// loadSpec parses the ELF with cilium/ebpf. Its ELF reader panics on some
// malformed inputs; that is turned into an error.
func loadSpec(data []byte) (spec *ebpf.CollectionSpec, err error) {
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, fmt.Errorf("malformed ELF (%v)", r)
		}
	}()
	return ebpf.LoadCollectionSpecFromReader(bytes.NewReader(data))
}

func checkELF(data []byte) error {
	if len(data) < 4 || !bytes.Equal(data[:4], []byte(elf.ELFMAG)) {
		return fmt.Errorf("not an ELF file: %w", ErrInvalidObject)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: truncated or malformed ELF: %w", ErrInvalidObject, oneLine(err))
	}
	defer f.Close()
	if f.Machine != elf.EM_BPF {
		return fmt.Errorf("ELF for %s, not a BPF object (compile with clang -target bpf): %w", machineName(f.Machine), ErrInvalidObject)
	}
	if f.Type != elf.ET_REL {
		return fmt.Errorf("ELF type %s, want a relocatable object (clang -c): %w", f.Type, ErrInvalidObject)
	}
	return nil
}

func machineName(m elf.Machine) string {
	return strings.TrimPrefix(m.String(), "EM_")
}

// oneLine keeps the first line of err's message, for one-line reports.
func oneLine(err error) error {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		return errors.New(msg[:i])
	}
	return err
}

func (o *Object) describe() error {
	spec := o.spec
	for _, p := range spec.Programs {
		if o.License == "" {
			o.License = p.License
		}
		o.Programs = append(o.Programs, Program{
			Function: p.Name,
			Section:  p.SectionName,
			Type:     programTypeName(p.Type),
			Hooks:    hooksFor(p.Type),
			Frags:    p.Type == ebpf.XDP && p.Flags&unix.BPF_F_XDP_HAS_FRAGS != 0,
		})
	}
	if len(o.Programs) == 0 {
		return fmt.Errorf("contains no BPF programs: %w", ErrInvalidObject)
	}
	if o.License == "" {
		return fmt.Errorf("%w: add `char _license[] SEC(\"license\") = \"GPL\";` (or another licence) to the source: %w", ErrNoLicense, ErrInvalidObject)
	}
	slices.SortFunc(o.Programs, func(a, b Program) int { return strings.Compare(a.Function, b.Function) })

	for name, m := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .rodata, .data, .bss, .kconfig: described as params
		}
		o.Maps = append(o.Maps, Map{
			Name:       name,
			Type:       mapTypeName(m.Type),
			KeySize:    m.KeySize,
			ValueSize:  m.ValueSize,
			MaxEntries: m.MaxEntries,
			Pinning:    pinningName(m.Pinning),
		})
	}
	slices.SortFunc(o.Maps, func(a, b Map) int { return strings.Compare(a.Name, b.Name) })

	params, err := describeParams(spec)
	if err != nil {
		return err
	}
	o.Params = params

	if spec.Types != nil {
		rc, err := parseRunConfigs(spec.Types)
		if err != nil {
			return err
		}
		if len(rc) > 0 {
			o.RunConfig = rc
		}
	}
	return nil
}

// Name is where the object came from, as given to ParseObject.
func (o *Object) Name() string { return o.name }

// Program returns the entry function called function. An empty name picks
// the only program of a single-program object.
func (o *Object) Program(function string) (Program, error) {
	if function == "" {
		if len(o.Programs) == 1 {
			return o.Programs[0], nil
		}
		return Program{}, fmt.Errorf("%s has %d programs (%s): choose one with --function", o.name, len(o.Programs), strings.Join(o.functionNames(), ", "))
	}
	for _, p := range o.Programs {
		if p.Function == function {
			return p, nil
		}
	}
	return Program{}, fmt.Errorf("%s has no program %q (it has %s): %w", o.name, function, strings.Join(o.functionNames(), ", "), ErrNoProgram)
}

func (o *Object) functionNames() []string {
	names := make([]string, 0, len(o.Programs))
	for _, p := range o.Programs {
		names = append(names, p.Function)
	}
	return names
}

// Spec returns a copy of the object's CollectionSpec with params applied (see
// SetParams). The copy is the caller's to modify and load.
func (o *Object) Spec(params map[string]string) (*ebpf.CollectionSpec, error) {
	spec := o.spec.Copy()
	if err := SetParams(spec, params); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return spec, nil
}

// Param returns the parameter called name.
func (o *Object) Param(name string) (Param, bool) {
	for _, p := range o.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// RunConfigFor returns the libxdp run configuration of function: its
// XDP_RUN_CONFIG metadata when the object declares it, else libxdp's defaults
// (priority 50, continue on XDP_PASS). declared reports which.
func (o *Object) RunConfigFor(function string) (rc RunConfig, declared bool) {
	if rc, ok := o.RunConfig[function]; ok {
		return rc, true
	}
	return DefaultRunConfig(), false
}

func hooksFor(t ebpf.ProgramType) []Hook {
	switch t {
	case ebpf.XDP:
		return []Hook{HookXDP}
	case ebpf.SchedCLS, ebpf.SchedACT:
		return []Hook{HookTCIngress, HookTCEgress}
	default:
		return []Hook{}
	}
}

// Names as bpftool prints them.
var programTypeNames = map[ebpf.ProgramType]string{
	ebpf.SocketFilter:  "socket_filter",
	ebpf.Kprobe:        "kprobe",
	ebpf.SchedCLS:      "sched_cls",
	ebpf.SchedACT:      "sched_act",
	ebpf.TracePoint:    "tracepoint",
	ebpf.XDP:           "xdp",
	ebpf.PerfEvent:     "perf_event",
	ebpf.CGroupSKB:     "cgroup_skb",
	ebpf.CGroupSock:    "cgroup_sock",
	ebpf.LWTIn:         "lwt_in",
	ebpf.LWTOut:        "lwt_out",
	ebpf.LWTXmit:       "lwt_xmit",
	ebpf.SockOps:       "sock_ops",
	ebpf.SkSKB:         "sk_skb",
	ebpf.CGroupDevice:  "cgroup_device",
	ebpf.SkMsg:         "sk_msg",
	ebpf.RawTracepoint: "raw_tracepoint",
	ebpf.Tracing:       "tracing",
	ebpf.Extension:     "ext",
	ebpf.LSM:           "lsm",
	ebpf.SkLookup:      "sk_lookup",
	ebpf.Syscall:       "syscall",
	ebpf.Netfilter:     "netfilter",
}

func programTypeName(t ebpf.ProgramType) string {
	if n, ok := programTypeNames[t]; ok {
		return n
	}
	return strings.ToLower(t.String())
}

var mapTypeNames = map[ebpf.MapType]string{
	ebpf.Hash:                "hash",
	ebpf.Array:               "array",
	ebpf.ProgramArray:        "prog_array",
	ebpf.PerfEventArray:      "perf_event_array",
	ebpf.PerCPUHash:          "percpu_hash",
	ebpf.PerCPUArray:         "percpu_array",
	ebpf.StackTrace:          "stack_trace",
	ebpf.CGroupArray:         "cgroup_array",
	ebpf.LRUHash:             "lru_hash",
	ebpf.LRUCPUHash:          "lru_percpu_hash",
	ebpf.LPMTrie:             "lpm_trie",
	ebpf.ArrayOfMaps:         "array_of_maps",
	ebpf.HashOfMaps:          "hash_of_maps",
	ebpf.DevMap:              "devmap",
	ebpf.SockMap:             "sockmap",
	ebpf.CPUMap:              "cpumap",
	ebpf.XSKMap:              "xskmap",
	ebpf.SockHash:            "sockhash",
	ebpf.CGroupStorage:       "cgroup_storage",
	ebpf.ReusePortSockArray:  "reuseport_sockarray",
	ebpf.PerCPUCGroupStorage: "percpu_cgroup_storage",
	ebpf.Queue:               "queue",
	ebpf.Stack:               "stack",
	ebpf.SkStorage:           "sk_storage",
	ebpf.DevMapHash:          "devmap_hash",
	ebpf.StructOpsMap:        "struct_ops",
	ebpf.RingBuf:             "ringbuf",
	ebpf.InodeStorage:        "inode_storage",
	ebpf.TaskStorage:         "task_storage",
}

func mapTypeName(t ebpf.MapType) string {
	if n, ok := mapTypeNames[t]; ok {
		return n
	}
	return strings.ToLower(t.String())
}

func pinningName(p ebpf.PinType) string {
	switch p {
	case ebpf.PinNone:
		return "none"
	case ebpf.PinByName:
		return "by_name"
	default:
		return fmt.Sprintf("unknown(%d)", p)
	}
}

// btfTypeName names a BTF type the way its C declaration spells it, keeping
// the outermost typedef (__u32 rather than unsigned int).
func btfTypeName(t btf.Type) string {
	for {
		switch v := t.(type) {
		case *btf.Const:
			t = v.Type
		case *btf.Volatile:
			t = v.Type
		case *btf.Restrict:
			t = v.Type
		case *btf.Typedef:
			return v.Name
		case *btf.Int:
			return v.Name
		case *btf.Enum:
			return "enum " + v.Name
		case *btf.Struct:
			return "struct " + v.Name
		case *btf.Union:
			return "union " + v.Name
		case *btf.Array:
			return fmt.Sprintf("%s[%d]", btfTypeName(v.Type), v.Nelems)
		case *btf.Pointer:
			return btfTypeName(v.Target) + " *"
		default:
			return fmt.Sprint(t)
		}
	}
}
