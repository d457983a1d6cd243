package kernelvm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestUsrMerged(t *testing.T) {
	for in, want := range map[string]string{
		"/lib64/ld-linux-x86-64.so.2":         "usr/lib64/ld-linux-x86-64.so.2",
		"/lib/x86_64-linux-gnu/libc.so.6":     "usr/lib/x86_64-linux-gnu/libc.so.6",
		"/usr/lib/x86_64-linux-gnu/libz.so.1": "usr/lib/x86_64-linux-gnu/libz.so.1",
		"/bin/ip":                             "usr/bin/ip",
		"/sbin/tc":                            "usr/sbin/tc",
		"/opt/x/lib/a.so":                     "opt/x/lib/a.so",
		"/library/x":                          "library/x",
	} {
		if got := usrMerged(in); got != want {
			t.Errorf("usrMerged(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSharedObjects(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	so, err := sharedObjects(bash, defaultLibDirs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for dst, src := range so {
		names = append(names, filepath.Base(dst))
		if !strings.HasPrefix(dst, "usr/") {
			t.Errorf("%s -> %s: not in the merged-/usr layout", dst, src)
		}
		if !isELF64(src) {
			t.Errorf("%s -> %s: not an x86-64 ELF object", dst, src)
		}
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"ld-linux-x86-64.so.2", "libc.so.6", "libtinfo.so.6"} {
		if !strings.Contains(joined, want) {
			t.Errorf("bash needs %s, sharedObjects found %s", want, joined)
		}
	}
	if _, ok := so["usr/lib64/ld-linux-x86-64.so.2"]; !ok {
		t.Errorf("dynamic loader not at its PT_INTERP path usr/lib64/ld-linux-x86-64.so.2: %v", so)
	}

	// Transitive: xdpdump needs libpcap, which needs libdbus, ...
	if xdpdump, err := lookTool("xdpdump"); err == nil {
		so, err := sharedObjects(xdpdump, defaultLibDirs)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := so["usr/lib/x86_64-linux-gnu/libdbus-1.so.3"]; !ok {
			t.Errorf("xdpdump: transitive dependency libdbus-1.so.3 (through libpcap) missing: %v", so)
		}
	}

	bb, err := lookTool("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sharedObjects(bb, defaultLibDirs); !errors.Is(err, errNotDynamic) {
		t.Errorf("static busybox: error %v, want errNotDynamic", err)
	}
	if _, err := sharedObjects(bash, []string{t.TempDir()}); err == nil || !strings.Contains(err.Error(), "needs libtinfo.so.6") && !strings.Contains(err.Error(), "needs libc.so.6") {
		t.Errorf("no library directory: error %v, want one naming the missing library", err)
	}
	if _, err := sharedObjects("/etc/hostname", defaultLibDirs); err == nil {
		t.Errorf("sharedObjects accepted a file that is not ELF")
	}
}

func TestShellQuote(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"plain", "bpf/probe", "-test.run=^TestEXT$", "a b", "it's", "", "$(reboot)", "`x`", "a\"b", "^Test(A|B)/sub$", "*"} {
		out, err := exec.Command(bash, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shellQuote(%q) = %s: bash printed %q (%v)", s, shellQuote(s), out, err)
		}
	}
}

func TestPackageFiles(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"p/a.go", "p/a_test.go", "p/prog.o", "p/prog.c", "p/testdata/x.json", "p/testdata/fuzz/FuzzX/1", "p/testdata/go/y.go", "p/sub/b.go", "p/sub/data.txt"} {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(f), 0o644)
	}
	got, err := packageFiles(root, "p")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"prog.c", "prog.o", "testdata/fuzz/FuzzX/1", "testdata/go/y.go", "testdata/x.json"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("packageFiles = %v, want %v (no Go sources, no subpackages, all of testdata)", got, want)
	}
	if _, err := packageFiles(root, "missing"); err == nil {
		t.Errorf("packageFiles of a missing package succeeded")
	}
}

func TestTestArgs(t *testing.T) {
	for _, tc := range []struct {
		s    Suite
		want []string
	}{
		{Suite{Package: "a"}, []string{"-test.timeout=5m0s"}},
		{Suite{Package: "a", Run: "^TestX$", Skip: "Slow", Timeout: 90 * time.Second}, []string{"-test.timeout=1m30s", "-test.run=^TestX$", "-test.skip=Slow"}},
	} {
		if got := (kernelSuite{Suite: tc.s}).testArgs(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("testArgs(%+v) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// fakeKernel builds a kernel cache entry with an xz-compressed module that
// depends on a plain one.
func fakeKernel(t *testing.T) *Kernel {
	t.Helper()
	dir := t.TempDir()
	k := &Kernel{Release: "9.9.9-test", Package: "linux-image-test", Version: "9.9.9-1", dir: dir}
	md := k.ModuleDir()
	os.MkdirAll(filepath.Join(md, "kernel/net"), 0o755)
	os.WriteFile(filepath.Join(md, "kernel/net/base.ko"), []byte("BASE MODULE"), 0o644)
	top := filepath.Join(md, "kernel/net/top.ko")
	os.WriteFile(top, []byte("TOP MODULE"), 0o644)
	if out, err := exec.Command("xz", top).CombinedOutput(); err != nil {
		t.Fatalf("xz (make deps): %v %s", err, out)
	}
	os.WriteFile(filepath.Join(md, "modules.dep"), []byte("kernel/net/top.ko.xz: kernel/net/base.ko\nkernel/net/base.ko:\n"), 0o644)
	os.WriteFile(filepath.Join(md, "modules.builtin"), []byte("kernel/net/sched/sch_ingress.ko\n"), 0o644)
	return k
}

func TestWriteKernelPart(t *testing.T) {
	k := fakeKernel(t)
	suites := []kernelSuite{
		{Suite: Suite{Package: "bpf/probe"}, Name: "bpf/probe"},
		{Suite: Suite{Package: "chain", Run: "^Test(A|B)$", Env: []string{"KFM_TRAFFIC_CHANGES=1000", "B=x/y"}}, Name: "chain"},
	}
	var buf bytes.Buffer
	if err := WriteKernelPart(context.Background(), &buf, k, []string{"top", "sch_ingress"}, suites); err != nil {
		t.Fatal(err)
	}
	dir := extractCPIO(t, buf.Bytes())
	for file, want := range map[string]string{
		"usr/lib/modules/9.9.9-test/kernel/net/top.ko":  "TOP MODULE", // decompressed
		"usr/lib/modules/9.9.9-test/kernel/net/base.ko": "BASE MODULE",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", file, b, err, want)
		}
	}
	sh, err := os.ReadFile(filepath.Join(dir, "kfm/kernel.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// Run the generated script the way init does, with run_suite recording
	// its arguments.
	script := string(sh) + `
run_suite() { printf '[%s]' "$KFM_SUITE_ENV"; for a in "$@"; do printf '<%s>' "$a"; done; echo; }
echo "modules: $KFM_MODULES"
suites`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("kernel.sh: %v\n%s\n%s", err, out, sh)
	}
	want := "modules: kernel/net/base.ko kernel/net/top.ko\n" +
		"[]<bpf/probe></kfm/tests/bpf_probe.test></src/bpf/probe><-test.timeout=5m0s>\n" +
		"[KFM_TRAFFIC_CHANGES=1000 B=x/y]<chain></kfm/tests/chain.test></src/chain><-test.timeout=5m0s><-test.run=^Test(A|B)$>\n"
	if string(out) != want {
		t.Errorf("kernel.sh ran as\n%s\nwant\n%s", out, want)
	}

	if err := WriteKernelPart(context.Background(), &buf, k, []string{"nonexistent"}, suites); !errors.Is(err, ErrModuleNotFound) {
		t.Errorf("unknown module: error %v, want ErrModuleNotFound", err)
	}
}

// TestWriteCommon builds the real kernel-independent archive from the host's
// tools and checks that everything the VMs rely on is in it.
func TestWriteCommon(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bpf/probe/testdata"), 0o755)
	os.WriteFile(filepath.Join(root, "bpf/probe/testdata/in.txt"), []byte("data"), 0o644)
	os.MkdirAll(filepath.Join(root, "bpf/testdata/deep"), 0o755)
	os.WriteFile(filepath.Join(root, "bpf/testdata/deep/params.o"), []byte("obj"), 0o644)
	os.WriteFile(filepath.Join(root, "bpf/probe/probe.o"), []byte("probe obj"), 0o644)
	bin := filepath.Join(t.TempDir(), "probe.test")
	os.WriteFile(bin, []byte("not really a test binary"), 0o755)

	var buf bytes.Buffer
	if err := WriteCommon(&buf, CommonImage{ModuleRoot: root, Tests: []TestBinary{{Package: "bpf/probe", Path: bin, Files: []string{"bpf/testdata", "bpf/probe/probe.o"}}}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	entries := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		entries[l] = true
	}
	for _, want := range []string{
		"init", "dev/console", "usr/bin/busybox", "usr/libexec/busybox/mount",
		"usr/bin/bash", "usr/bin/sh", "usr/bin/ip", "usr/bin/xdp-loader", "usr/bin/bpftool",
		"usr/lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6",
		"usr/lib/x86_64-linux-gnu/libbpf.so.1", "usr/lib/x86_64-linux-gnu/libelf.so.1",
		"usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o",
		"lib", "lib64", "bin", "var/run", "tmp", "run", "etc/hosts",
		"kfm/tests/bpf_probe.test", "src/bpf/probe/testdata/in.txt", "src/bpf/probe/probe.o",
		"src/bpf/testdata/deep/params.o", // Suite.Files
	} {
		if !entries[want] {
			t.Errorf("common initramfs lacks %s", want)
		}
	}
	dir := extractCPIO(t, buf.Bytes())
	if target, _ := os.Readlink(filepath.Join(dir, "usr/bin/sh")); target != "bash" {
		t.Errorf("usr/bin/sh -> %q, want bash (busybox sh prefers its applets to PATH)", target)
	}
	var missing bytes.Buffer
	if err := WriteCommon(&missing, CommonImage{ModuleRoot: root, Tests: []TestBinary{{Package: "bpf/probe", Path: bin, Files: []string{"nope"}}}}); err == nil || !strings.Contains(err.Error(), "files of suite bpf/probe") {
		t.Errorf("missing Suite.Files entry: error %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "init")); !bytes.Equal(b, initScript) {
		t.Errorf("init is not the embedded init.sh")
	}
}

// TestInitScriptSyntax parses init.sh with the shell that runs it.
func TestInitScriptSyntax(t *testing.T) {
	bb, err := lookTool("busybox")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, "sh", "-n", "init.sh")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox sh -n init.sh: %v\n%s", err, out)
	}
	if !bytes.HasPrefix(initScript, []byte("#!/usr/bin/busybox sh\n")) {
		t.Errorf("init.sh must start with #!/usr/bin/busybox sh (the kernel execs it directly)")
	}
}

func TestValidateEnv(t *testing.T) {
	for _, tc := range []struct {
		env []string
		ok  bool
	}{
		{[]string{"KFM_TRAFFIC_CHANGES=1000"}, true},
		{[]string{"A=", "B_2=x/y:z"}, true},
		{[]string{"NOVALUE"}, false},
		{[]string{"=1"}, false},
		{[]string{"A-B=1"}, false},
		{[]string{"A=two words"}, false},
		{[]string{"A='q'"}, false},
	} {
		if err := ValidateEnv(tc.env); (err == nil) != tc.ok {
			t.Errorf("ValidateEnv(%q) = %v, want ok=%v", tc.env, err, tc.ok)
		}
	}
}
