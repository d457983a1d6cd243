package kernelvm

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// KernelSpec names a Debian kernel the tests boot.
type KernelSpec struct {
	// Name is the kernel series, e.g. "6.12"; KERNELS and Suite.Kernels
	// select kernels by this name.
	Name string
	// Suite is the Debian suite that ships the kernel, e.g. "trixie".
	Suite string
	// Mirrors are tried in order; the first that serves the suite wins.
	Mirrors []string
}

// DefaultMirror is the Debian mirror used unless KFM_DEBIAN_MIRROR says
// otherwise.
const DefaultMirror = "http://deb.debian.org/debian"

// DefaultKernels are the kernels `make test-kernels` boots: the cloud
// kernels of Debian 11, 12 and 13. Bullseye falls back to archive.debian.org
// once it has left the main mirrors.
func DefaultKernels() []KernelSpec {
	return []KernelSpec{
		{Name: "5.10", Suite: "bullseye", Mirrors: []string{DefaultMirror, "http://archive.debian.org/debian"}},
		{Name: "6.1", Suite: "bookworm", Mirrors: []string{DefaultMirror}},
		{Name: "6.12", Suite: "trixie", Mirrors: []string{DefaultMirror}},
	}
}

// Suite is one test package that runs inside the kernel VMs.
type Suite struct {
	// Package is the package directory relative to the module root, e.g.
	// "bpf/probe".
	Package string
	// Run and Skip are passed as -test.run and -test.skip when not empty.
	Run, Skip string
	// Kernels restricts the suite to kernels matching one of these version
	// prefixes ("5.10", "6.1", "6.12"); empty means every kernel.
	Kernels []string
	// Timeout is passed as -test.timeout; zero means DefaultSuiteTimeout.
	Timeout time.Duration
	// Env holds KEY=VALUE settings for the test binary, on top of the
	// clean environment init gives every suite (values without white
	// space: see ValidateEnv).
	Env []string
	// Files are files or directories outside the package, relative to the
	// module root, that the tests read by relative path (for example
	// "bpf/testdata" for a test that opens "../bpf/testdata/params.o").
	// The package's own non-Go files and testdata are always there.
	Files []string
}

// ErrNoMatch is returned when a kernel or suite filter selects nothing.
var ErrNoMatch = errors.New("selects nothing")

// versionMatch reports whether version starts with prefix component by
// component: "6.1" matches "6.1" and "6.1.176" but not "6.12".
func versionMatch(prefix, version string) bool {
	if prefix == "" {
		return false
	}
	p, v := strings.Split(prefix, "."), strings.Split(version, ".")
	if len(p) > len(v) {
		return false
	}
	for i := range p {
		if p[i] != v[i] {
			return false
		}
	}
	return true
}

// splitList splits a KERNELS-style list: commas and white space separate.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// SelectKernels returns the kernels of all whose Name (or Debian suite)
// matches one of the entries of filter, a list separated by commas or
// spaces such as "6.12" or "5.10,6.1". An empty filter selects all of them.
// Matching is by version prefix, component by component: "6.1" selects 6.1
// but not 6.12. An entry that matches no kernel is an error.
func SelectKernels(all []KernelSpec, filter string) ([]KernelSpec, error) {
	want := splitList(filter)
	if len(want) == 0 {
		return all, nil
	}
	var names []string
	for _, k := range all {
		names = append(names, k.Name)
	}
	selected := make([]bool, len(all))
	for _, w := range want {
		found := false
		for i, k := range all {
			if versionMatch(w, k.Name) || versionMatch(k.Name, w) || w == k.Suite {
				selected[i], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("kernel %q %w: known kernels are %s (KERNELS=6.12 or KERNELS=5.10,6.1)", w, ErrNoMatch, strings.Join(names, ", "))
		}
	}
	var out []KernelSpec
	for i, k := range all {
		if selected[i] {
			out = append(out, k)
		}
	}
	return out, nil
}

// AppliesTo reports whether the suite runs on kernel k.
func (s Suite) AppliesTo(k KernelSpec) bool {
	if len(s.Kernels) == 0 {
		return true
	}
	for _, p := range s.Kernels {
		if versionMatch(p, k.Name) || versionMatch(k.Name, p) {
			return true
		}
	}
	return false
}

// cleanRelative reports whether p is a clean slash-separated path inside
// the module root, such as "bpf/probe".
func cleanRelative(p string) bool {
	return p != "" && p != "." && !path.IsAbs(p) && path.Clean(p) == p && p != ".." && !strings.HasPrefix(p, "../")
}

// binaryName is the file name of the suite's test binary in the initramfs.
func binaryName(pkg string) string {
	return strings.ReplaceAll(pkg, "/", "_") + ".test"
}

// ValidateSuites checks a suite list against the known kernels: package
// paths are clean and relative, regular expressions compile, every kernel
// prefix names a known kernel, and no package appears twice for one kernel
// (its results could not be told apart).
func ValidateSuites(suites []Suite, kernels []KernelSpec) error {
	var errs []error
	for i, s := range suites {
		where := fmt.Sprintf("suite %d (%q)", i, s.Package)
		if !cleanRelative(s.Package) {
			errs = append(errs, fmt.Errorf("%s: Package must be a clean path relative to the module root, like \"bpf/probe\"", where))
			continue
		}
		for flag, re := range map[string]string{"Run": s.Run, "Skip": s.Skip} {
			if _, err := regexp.Compile(re); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", where, flag, err))
			}
		}
		for _, f := range s.Files {
			if !cleanRelative(f) {
				errs = append(errs, fmt.Errorf("%s: Files entry %q must be a clean path relative to the module root", where, f))
			}
		}
		if s.Timeout < 0 {
			errs = append(errs, fmt.Errorf("%s: negative Timeout", where))
		}
		for _, p := range s.Kernels {
			known := false
			for _, k := range kernels {
				if versionMatch(p, k.Name) || versionMatch(k.Name, p) {
					known = true
				}
			}
			if !known {
				errs = append(errs, fmt.Errorf("%s: Kernels entry %q matches no known kernel", where, p))
			}
		}
		for j := range i {
			if suites[j].Package != s.Package {
				continue
			}
			for _, k := range kernels {
				if s.AppliesTo(k) && suites[j].AppliesTo(k) {
					errs = append(errs, fmt.Errorf("%s: package already listed as suite %d for kernel %s: give the entries disjoint Kernels", where, j, k.Name))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// SuitesFor returns the suites that apply to kernel k, in list order.
func SuitesFor(suites []Suite, k KernelSpec) []Suite {
	var out []Suite
	for _, s := range suites {
		if s.AppliesTo(k) {
			out = append(out, s)
		}
	}
	return out
}

// FilterSuites keeps the suites whose package matches the regular expression
// expr (all of them when expr is empty).
func FilterSuites(suites []Suite, expr string) ([]Suite, error) {
	if expr == "" {
		return suites, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("suite filter: %w", err)
	}
	var out []Suite
	for _, s := range suites {
		if re.MatchString(s.Package) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("suite filter %q %w", expr, ErrNoMatch)
	}
	return out, nil
}

// ValidateEnv checks KEY=VALUE settings for Suite.Env: a KEY of letters,
// digits and underscores, a VALUE without white space or quotes.
func ValidateEnv(env []string) error {
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.IndexFunc(k, func(r rune) bool {
			return !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
		}) >= 0 {
			return fmt.Errorf("environment setting %q: want KEY=VALUE with a KEY of letters, digits and _", kv)
		}
		if strings.ContainsAny(v, " \t\n\"'\\") {
			return fmt.Errorf("environment setting %q: the value may not contain white space, quotes or backslashes", kv)
		}
	}
	return nil
}
