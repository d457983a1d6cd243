package kernelvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestVersionMatch(t *testing.T) {
	for _, tc := range []struct {
		prefix, version string
		want            bool
	}{
		{"6.1", "6.1", true},
		{"6.1", "6.12", false},
		{"6.12", "6.12", true},
		{"6.12", "6.1", false},
		{"6", "6.12", true},
		{"6.1", "6.1.176", true},
		{"5.10", "5.10", true},
		{"5.1", "5.10", false},
		{"", "5.10", false},
		{"6.12.117", "6.12", false},
	} {
		if got := versionMatch(tc.prefix, tc.version); got != tc.want {
			t.Errorf("versionMatch(%q, %q) = %v, want %v", tc.prefix, tc.version, got, tc.want)
		}
	}
}

func names(ks []KernelSpec) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.Name)
	}
	return out
}

func TestSelectKernels(t *testing.T) {
	all := DefaultKernels()
	for _, tc := range []struct {
		filter  string
		want    []string
		wantErr bool
	}{
		{"", []string{"5.10", "6.1", "6.12"}, false},
		{"6.12", []string{"6.12"}, false},
		{"6.1", []string{"6.1"}, false},
		{"5.10", []string{"5.10"}, false},
		{"5.10,6.1", []string{"5.10", "6.1"}, false},
		{" 6.12  5.10 ", []string{"5.10", "6.12"}, false}, // list order, not filter order
		{"6", []string{"6.1", "6.12"}, false},
		{"6.12.117", []string{"6.12"}, false}, // a full version selects its series
		{"trixie", []string{"6.12"}, false},
		{"6.12,6.12", []string{"6.12"}, false},
		{"4.19", nil, true},
		{"6.2", nil, true},
		{"6.12,7", nil, true},
	} {
		got, err := SelectKernels(all, tc.filter)
		if tc.wantErr {
			if !errors.Is(err, ErrNoMatch) {
				t.Errorf("SelectKernels(%q) error = %v, want ErrNoMatch", tc.filter, err)
			} else if !strings.Contains(err.Error(), "known kernels are 5.10, 6.1, 6.12") {
				t.Errorf("SelectKernels(%q) error %q does not list the known kernels", tc.filter, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(names(got), tc.want) {
			t.Errorf("SelectKernels(%q) = %v, %v; want %v", tc.filter, names(got), err, tc.want)
		}
	}
}

func TestSuitesFor(t *testing.T) {
	suites := []Suite{
		{Package: "a"},
		{Package: "b", Kernels: []string{"6.12"}},
		{Package: "c", Kernels: []string{"5.10", "6.1"}},
		{Package: "d", Kernels: []string{"6"}},
	}
	want := map[string][]string{
		"5.10": {"a", "c"},
		"6.1":  {"a", "c", "d"},
		"6.12": {"a", "b", "d"},
	}
	for _, k := range DefaultKernels() {
		var got []string
		for _, s := range SuitesFor(suites, k) {
			got = append(got, s.Package)
		}
		if !reflect.DeepEqual(got, want[k.Name]) {
			t.Errorf("SuitesFor(%s) = %v, want %v", k.Name, got, want[k.Name])
		}
	}
}

func TestValidateSuites(t *testing.T) {
	kernels := DefaultKernels()
	for _, tc := range []struct {
		name    string
		suites  []Suite
		wantErr string // substring; empty means valid
	}{
		{"defaults-style", []Suite{{Package: "bpf/probe"}, {Package: "chain", Run: "^TestApply", Kernels: []string{"6.12"}}}, ""},
		{"same package on disjoint kernels", []Suite{{Package: "bpf/tc", Run: "TCX", Kernels: []string{"6.12"}}, {Package: "bpf/tc", Skip: "TCX", Kernels: []string{"5.10", "6.1"}}}, ""},
		{"same package twice", []Suite{{Package: "bpf/tc"}, {Package: "bpf/tc", Kernels: []string{"6.1"}}}, "already listed as suite 0 for kernel 6.1"},
		{"empty package", []Suite{{}}, "clean path relative to the module root"},
		{"dot slash", []Suite{{Package: "./bpf/probe"}}, "clean path"},
		{"absolute", []Suite{{Package: "/bpf/probe"}}, "clean path"},
		{"parent", []Suite{{Package: "../x"}}, "clean path"},
		{"unclean", []Suite{{Package: "bpf//probe"}}, "clean path"},
		{"bad run", []Suite{{Package: "x", Run: "("}}, "Run: error parsing regexp"},
		{"bad skip", []Suite{{Package: "x", Skip: "[z-a]"}}, "Skip: error parsing regexp"},
		{"unknown kernel", []Suite{{Package: "x", Kernels: []string{"6.2"}}}, `Kernels entry "6.2" matches no known kernel`},
		{"negative timeout", []Suite{{Package: "x", Timeout: -1}}, "negative Timeout"},
		{"files", []Suite{{Package: "chain", Files: []string{"bpf/testdata", "examples/programs/xdp_count.o"}}}, ""},
		{"files outside the module", []Suite{{Package: "chain", Files: []string{"../bpf/testdata"}}}, `Files entry "../bpf/testdata" must be a clean path`},
		{"files root", []Suite{{Package: "chain", Files: []string{"."}}}, `Files entry "." must be a clean path`},
	} {
		err := ValidateSuites(tc.suites, kernels)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestDefaultSuites guards the list others edit: it must validate, and
// every package must exist and have tests.
func TestDefaultSuites(t *testing.T) {
	if err := ValidateSuites(DefaultSuites(), DefaultKernels()); err != nil {
		t.Fatalf("internal/kernelvm/suites.go: %v", err)
	}
	root := filepath.Join("..", "..")
	for _, s := range DefaultSuites() {
		tests, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(s.Package), "*_test.go"))
		if len(tests) == 0 {
			t.Errorf("suite %s: no *_test.go files in %s", s.Package, filepath.Join(root, s.Package))
		}
	}
	if len(DefaultSuites()) == 0 || DefaultSuites()[0].Package != "bpf/probe" {
		t.Errorf("bpf/probe must stay the first suite: it proves freplace works in the VMs")
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", root, err)
	}
}

func TestFilterSuites(t *testing.T) {
	suites := []Suite{{Package: "bpf/probe"}, {Package: "bpf/dispatcher"}, {Package: "chain"}}
	got, err := FilterSuites(suites, "^bpf/")
	if err != nil || len(got) != 2 || got[1].Package != "bpf/dispatcher" {
		t.Errorf("FilterSuites(^bpf/) = %v, %v", got, err)
	}
	if got, err := FilterSuites(suites, ""); err != nil || len(got) != 3 {
		t.Errorf("FilterSuites(\"\") = %v, %v; want all", got, err)
	}
	if _, err := FilterSuites(suites, "nothing"); !errors.Is(err, ErrNoMatch) {
		t.Errorf("FilterSuites(nothing) error = %v, want ErrNoMatch", err)
	}
	if _, err := FilterSuites(suites, "("); err == nil {
		t.Errorf("FilterSuites with a bad regexp succeeded")
	}
}

func ExampleSelectKernels() {
	ks, err := SelectKernels(DefaultKernels(), "6.1")
	if err != nil {
		panic(err)
	}
	for _, k := range ks {
		fmt.Println(k.Name, k.Suite)
	}
	// Output: 6.1 bookworm
}
