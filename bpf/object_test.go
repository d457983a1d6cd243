package bpf_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/testenv"
)

const paramsObject = "testdata/params.o"

func readParams(t *testing.T) *bpf.Object {
	t.Helper()
	o, err := bpf.ReadObject(paramsObject)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestReadObject(t *testing.T) {
	o := readParams(t)
	if o.License != "Dual BSD/GPL" || !o.BTF {
		t.Errorf("license %q btf %v, want Dual BSD/GPL and true", o.License, o.BTF)
	}
	var fns []string
	for _, p := range o.Programs {
		fns = append(fns, p.Function+"/"+p.Section+"/"+p.Type)
	}
	if want := []string{"tc_prog/tc/sched_cls", "with_config/xdp/xdp", "without_config/xdp/xdp"}; !reflect.DeepEqual(fns, want) {
		t.Errorf("programs %v, want %v", fns, want)
	}
	tc, err := o.Program("tc_prog")
	if err != nil {
		t.Fatal(err)
	}
	if want := []bpf.Hook{bpf.HookTCIngress, bpf.HookTCEgress}; !reflect.DeepEqual(tc.Hooks, want) {
		t.Errorf("tc_prog hooks %v, want %v", tc.Hooks, want)
	}
	if len(o.Maps) != 1 || o.Maps[0] != (bpf.Map{Name: "seen", Type: "lru_hash", KeySize: 4, ValueSize: 8, MaxEntries: 16, Pinning: "none"}) {
		t.Errorf("maps %+v", o.Maps)
	}

	wantParams := map[string]struct {
		typ  string
		kind bpf.ParamKind
		def  any
	}{
		"p_u8":   {"__u8", bpf.ParamUint, uint64(200)},
		"p_s8":   {"__s8", bpf.ParamInt, int64(-3)},
		"p_u16":  {"__u16", bpf.ParamUint, uint64(9)},
		"p_s32":  {"__s32", bpf.ParamInt, int64(-100000)},
		"p_u32":  {"__u32", bpf.ParamUint, uint64(100)},
		"p_u64":  {"__u64", bpf.ParamUint, uint64(1 << 40)},
		"p_s64":  {"__s64", bpf.ParamInt, int64(-(1 << 40))},
		"p_bool": {"_Bool", bpf.ParamBool, true},
		"p_mode": {"enum mode", bpf.ParamEnum, "MODE_AUTO"},
	}
	if len(o.Params) != len(wantParams) {
		t.Errorf("got %d params, want %d (not_a_param is not volatile and must not be listed): %+v", len(o.Params), len(wantParams), o.Params)
	}
	for _, p := range o.Params {
		w, ok := wantParams[p.Name]
		if !ok {
			t.Errorf("unexpected param %s", p.Name)
			continue
		}
		if p.Type != w.typ || p.Kind != w.kind || p.Default != w.def {
			t.Errorf("param %s: type %s kind %s default %#v, want %s %s %#v", p.Name, p.Type, p.Kind, p.Default, w.typ, w.kind, w.def)
		}
	}

	rc, declared := o.RunConfigFor("with_config")
	if !declared || rc.Priority != 20 || !reflect.DeepEqual(rc.ProceedOn, bpf.Actions{bpf.XDPDrop, bpf.XDPPass}) {
		t.Errorf("with_config run config %+v declared=%v, want priority 20, proceed on drop,pass", rc, declared)
	}
	rc, declared = o.RunConfigFor("without_config")
	if declared || !reflect.DeepEqual(rc, bpf.DefaultRunConfig()) {
		t.Errorf("without_config run config %+v declared=%v, want libxdp's defaults", rc, declared)
	}
}

func TestObjectJSON(t *testing.T) {
	o := readParams(t)
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Programs []struct{ Function, Type string }
		Maps     []struct{ Name string }
		Params   []struct {
			Name, Type string
			Default    any
		}
		License   string
		RunConfig map[string]struct {
			Priority  int
			ProceedOn []string
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.RunConfig["with_config"].Priority != 20 || !reflect.DeepEqual(got.RunConfig["with_config"].ProceedOn, []string{"drop", "pass"}) {
		t.Errorf("runConfig in JSON: %s", b)
	}
	if len(got.Params) == 0 || got.Params[0].Name != "p_bool" || got.Params[0].Default != true {
		t.Errorf("params in JSON: %s", b)
	}
}

func TestProgramSelection(t *testing.T) {
	o := readParams(t)
	if _, err := o.Program(""); err == nil || !strings.Contains(err.Error(), "--function") {
		t.Errorf("empty function on a 3-program object: %v, want a hint to --function", err)
	}
	if _, err := o.Program("nope"); !errors.Is(err, bpf.ErrNoProgram) || !strings.Contains(err.Error(), "with_config") {
		t.Errorf("unknown function: %v, want ErrNoProgram listing the programs", err)
	}
}

func TestParseObjectErrors(t *testing.T) {
	good, err := os.ReadFile(paramsObject)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	selfHead := make([]byte, 64)
	f, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(selfHead, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, tc := range []struct {
		name string
		data func() []byte
		want string
		is   error
	}{
		{"empty", func() []byte { return nil }, "not an ELF file", bpf.ErrInvalidObject},
		{"text", func() []byte { return []byte("hello, world\n") }, "not an ELF file", bpf.ErrInvalidObject},
		{"x86 executable", func() []byte {
			b, err := os.ReadFile(self)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, "ELF for X86_64, not a BPF object", bpf.ErrInvalidObject},
		{"truncated header", func() []byte { return good[:40] }, "truncated or malformed", bpf.ErrInvalidObject},
		{"truncated body", func() []byte { return good[:len(good)/2] }, "", bpf.ErrInvalidObject},
		{"no license", func() []byte {
			b, err := os.ReadFile("testdata/nolicense.o")
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, "SEC(\"license\")", bpf.ErrNoLicense},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bpf.ParseObject("obj.o", tc.data())
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "obj.o: ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting with the file name and containing %q", msg, tc.want)
			}
		})
	}
}

func TestReadObjectNotRegular(t *testing.T) {
	_, err := bpf.ReadObject(t.TempDir())
	if !errors.Is(err, bpf.ErrInvalidObject) {
		t.Errorf("directory: %v", err)
	}
	_, err = bpf.ReadObject(filepath.Join(t.TempDir(), "missing.o"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestSetParams(t *testing.T) {
	o := readParams(t)
	for _, tc := range []struct {
		name, value string
		want        any // value read back, or nil when an error is expected
		errIs       error
		errHas      string
	}{
		{"p_u8", "255", uint8(255), nil, ""},
		{"p_u8", "256", nil, bpf.ErrInvalidParam, "0..255"},
		{"p_u8", "-1", nil, bpf.ErrInvalidParam, "0..255"},
		{"p_s8", "-128", int8(-128), nil, ""},
		{"p_s8", "-129", nil, bpf.ErrInvalidParam, "-128..127"},
		{"p_u16", "0x1f90", uint16(8080), nil, ""},
		{"p_u16", "70000", nil, bpf.ErrInvalidParam, "0..65535"},
		{"p_s32", "-2147483648", int32(-2147483648), nil, ""},
		{"p_u32", "4294967295", uint32(4294967295), nil, ""},
		{"p_u32", "many", nil, bpf.ErrInvalidParam, "not an integer"},
		{"p_u64", "18446744073709551615", uint64(18446744073709551615), nil, ""},
		{"p_s64", "-9223372036854775808", int64(-9223372036854775808), nil, ""},
		{"p_bool", "false", false, nil, ""},
		{"p_bool", "maybe", nil, bpf.ErrInvalidParam, "true or false"},
		{"p_mode", "MODE_ON", uint32(1), nil, ""},
		{"p_mode", "MODE_MAYBE", nil, bpf.ErrInvalidParam, "MODE_OFF, MODE_ON, MODE_AUTO"},
		{"not_a_param", "1", nil, bpf.ErrUnknownParam, "known params are p_bool"},
		{"rate", "1", nil, bpf.ErrUnknownParam, "known params are"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			spec, err := o.Spec(map[string]string{tc.name: tc.value})
			if tc.want == nil {
				if !errors.Is(err, tc.errIs) || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), tc.name) {
					t.Fatalf("error %v, want %v naming %s and containing %q", err, tc.errIs, tc.name, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := reflect.New(reflect.TypeOf(tc.want))
			if err := spec.Variables[tc.name].Get(got.Interface()); err != nil {
				t.Fatal(err)
			}
			if got.Elem().Interface() != tc.want {
				t.Errorf("read back %v, want %v", got.Elem().Interface(), tc.want)
			}
		})
	}
}

func TestSpecIsACopy(t *testing.T) {
	o := readParams(t)
	if _, err := o.Spec(map[string]string{"p_u16": "7"}); err != nil {
		t.Fatal(err)
	}
	spec, err := o.Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	var v uint16
	if err := spec.Variables["p_u16"].Get(&v); err != nil || v != 9 {
		t.Errorf("p_u16 = %d (%v) after setting it on an earlier copy, want the default 9", v, err)
	}
}

func TestCanonical(t *testing.T) {
	o := readParams(t)
	for _, tc := range []struct{ name, in, want string }{
		{"p_u16", "0x10", "16"},
		{"p_bool", "TRUE", "true"},
		{"p_s8", " -3 ", "-3"},
		{"p_mode", "MODE_ON", "MODE_ON"},
	} {
		p, ok := o.Param(tc.name)
		if !ok {
			t.Fatalf("no param %s", tc.name)
		}
		got, err := p.Canonical(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Canonical(%s=%q) = %q, %v; want %q", tc.name, tc.in, got, err, tc.want)
		}
	}
}

// TestParamReachesKernel loads a program with a parameter set and runs it:
// the verdict is the parameter's value, so the kernel saw what the user set.
func TestParamReachesKernel(t *testing.T) {
	testenv.RequirePrivileged(t)
	o := readParams(t)
	for _, v := range []uint32{9, 7} {
		params := map[string]string{}
		if v != 9 {
			params["p_u16"] = "7"
		}
		spec, err := o.Spec(params)
		if err != nil {
			t.Fatal(err)
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			t.Fatal(err)
		}
		ret, _, err := coll.Programs["tc_prog"].Test(make([]byte, 64))
		coll.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ret != v {
			t.Errorf("verdict %d, want p_u16 = %d", ret, v)
		}
	}
}

func FuzzParseObject(f *testing.F) {
	good, err := os.ReadFile(paramsObject)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:64])
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := bpf.ParseObject("fuzz.o", data)
		if err != nil {
			if !errors.Is(err, bpf.ErrInvalidObject) {
				t.Fatalf("error does not wrap ErrInvalidObject: %v", err)
			}
			return
		}
		if len(o.Programs) == 0 || o.License == "" {
			t.Fatalf("accepted an object without programs or licence: %+v", o)
		}
	})
}

func ExampleReadObject() {
	obj, err := bpf.ReadObject("testdata/params.o")
	if err != nil {
		panic(err)
	}
	rc, _ := obj.RunConfigFor("with_config")
	p, _ := obj.Param("p_u16")
	fmt.Println(obj.License, len(obj.Programs), "programs")
	fmt.Println("with_config: priority", rc.Priority, "proceeds on", strings.Join(rc.ProceedOn.Names(bpf.HookXDP), ","))
	fmt.Println(p.Name, p.Type, "default", p.Default)
	// Output:
	// Dual BSD/GPL 3 programs
	// with_config: priority 20 proceeds on drop,pass
	// p_u16 __u16 default 9
}
