package kernelvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelPackage(t *testing.T) {
	// Real `apt-cache show linux-image-cloud-amd64` records of each suite.
	for file, want := range map[string]string{
		"testdata/apt-show-bullseye.txt": "linux-image-5.10.0-32-cloud-amd64",
		"testdata/apt-show-bookworm.txt": "linux-image-6.1.0-50-cloud-amd64",
		"testdata/apt-show-trixie.txt":   "linux-image-6.12.117+deb13-cloud-amd64",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := kernelPackage(b)
		if err != nil || got != want {
			t.Errorf("%s: kernelPackage = %q, %v; want %q", file, got, err, want)
		}
	}
	for _, tc := range []struct {
		control, want, wantErr string
	}{
		{"Package: x\nDepends: linux-image-7.0.1+deb14-cloud-amd64 (= 7.0.1-1), foo\n", "linux-image-7.0.1+deb14-cloud-amd64", ""},
		{"Package: x\nDepends: foo,\n linux-image-7.0-cloud-amd64:amd64 | bar\n", "linux-image-7.0-cloud-amd64", ""}, // continuation line, arch qualifier
		{"Package: x\nVersion: 1\n", "", "no Depends field"},
		{"Package: x\nDepends: linux-image-6.1.0-50-amd64 (= 1)\n", "", "no linux-image-*-cloud-amd64 dependency"},
		{"Package: x\nDepends: linux-image--cloud-amd64\n", "", "no linux-image-*-cloud-amd64 dependency"},
		{"Package: x\nDepends: a\n\nPackage: y\nDepends: linux-image-9-cloud-amd64\n", "", "no linux-image"}, // first record only
	} {
		got, err := kernelPackage([]byte(tc.control))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("kernelPackage(%q) = %q, %v; want error %q", tc.control, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("kernelPackage(%q) = %q, %v; want %q", tc.control, got, err, tc.want)
		}
	}
}

func TestControlField(t *testing.T) {
	b, err := os.ReadFile("testdata/apt-show-trixie.txt")
	if err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{
		"Version":  "6.12.117-1",
		"Package":  "linux-image-cloud-amd64",
		"Provides": "linux-latest-modules-6.12.117+deb13-cloud-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)",
		"Missing":  "",
	} {
		if got := controlField(b, field); got != want {
			t.Errorf("controlField(%s) = %q, want %q", field, got, want)
		}
	}
}

// TestAptConfigIsPrivate checks with apt itself that the private
// configuration reads and writes nothing of the host's apt setup.
func TestAptConfigIsPrivate(t *testing.T) {
	root := t.TempDir()
	conf := filepath.Join(root, "apt.conf")
	if err := os.WriteFile(conf, []byte(aptConfig(root)), 0o644); err != nil {
		t.Fatal(err)
	}
	aptConfigTool, err := exec.LookPath("apt-config")
	if err != nil {
		t.Fatalf("apt-config not found: %v", err)
	}
	cmd := exec.Command(aptConfigTool, "dump")
	cmd.Env = append(os.Environ(), "APT_CONFIG="+conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-config dump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		`Dir::Etc::sourcelist "` + root + `/etc/sources.list";`,
		`Dir::Etc::sourceparts "` + root + `/etc/sources.list.d";`,
		`Dir::State "` + root + `/state";`,
		`Dir::State::status "` + root + `/status";`,
		`Dir::Cache "` + root + `/cache";`,
		`Dir::Etc::main "/dev/null";`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("apt-config dump lacks %s", want)
		}
	}
	// Nothing from /etc/apt/apt.conf.d may leak in: every configured
	// directory lies under root.
	for _, line := range strings.Split(dump, "\n") {
		if strings.HasPrefix(line, "Dir::") && strings.Contains(line, "/etc/apt") && !strings.Contains(line, root) {
			t.Errorf("host apt directory in the private configuration: %s", line)
		}
	}
}

func TestKernelShort(t *testing.T) {
	for _, tc := range []struct {
		k    Kernel
		want string
	}{
		{Kernel{Release: "5.10.0-32-cloud-amd64", Version: "5.10.223-1"}, "5.10.223"},
		{Kernel{Release: "6.12.117+deb13-cloud-amd64", Version: "6.12.117-1"}, "6.12.117"},
		{Kernel{Release: "6.12.117+deb13-cloud-amd64"}, "6.12.117"},
		{Kernel{Release: "6.1.0-50-cloud-amd64", Version: "1:6.1.176-1"}, "6.1.176"},
	} {
		if got := tc.k.Short(); got != tc.want {
			t.Errorf("%+v.Short() = %q, want %q", tc.k, got, tc.want)
		}
	}
}

func TestLoadKernelIncomplete(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadKernel(dir, KernelSpec{Name: "6.12"}); !os.IsNotExist(err) {
		t.Errorf("empty cache: error %v, want not-exist", err)
	}
	os.WriteFile(filepath.Join(dir, "kernel.json"), []byte(`{"release":"6.12.1"}`), 0o644)
	if _, err := loadKernel(dir, KernelSpec{Name: "6.12"}); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("kernel.json without files: error %v, want incomplete", err)
	}
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "root/lib/modules/6.12.1"), 0o755)
	os.WriteFile(filepath.Join(dir, "root/lib/modules/6.12.1/modules.dep"), nil, 0o644)
	k, err := loadKernel(dir, KernelSpec{Name: "6.12"})
	if err != nil || k.Vmlinuz() != filepath.Join(dir, "vmlinuz") {
		t.Errorf("complete cache: %v, %v", k, err)
	}
}

func FuzzKernelPackage(f *testing.F) {
	for _, s := range []string{"bullseye", "bookworm", "trixie"} {
		b, err := os.ReadFile("testdata/apt-show-" + s + ".txt")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, control []byte) {
		name, err := kernelPackage(control)
		if err == nil && (!strings.HasPrefix(name, "linux-image-") || !strings.HasSuffix(name, "-cloud-amd64") || strings.ContainsAny(name, " ,|(")) {
			t.Fatalf("kernelPackage returned %q", name)
		}
	})
}
