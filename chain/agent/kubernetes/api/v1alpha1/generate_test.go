package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/internal/testenv"
)

// The committed deepcopy code and CRDs are what `make generate` makes from
// these types now (controller-gen, installed by make deps).
func TestGeneratedFilesAreCurrent(t *testing.T) {
	cg := testenv.RequireTool(t, "controller-gen")
	tmp := t.TempDir()
	crds := filepath.Join(tmp, "crds")
	cmd := exec.Command(cg, "object", "crd", "paths=.",
		"output:object:dir="+tmp, "output:crd:dir="+crds)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, out)
	}
	committed := filepath.Join("..", "..", "..", "..", "..", "manifests", "kubernetes", "crds")
	want := map[string]string{filepath.Join(tmp, "zz_generated.deepcopy.go"): "zz_generated.deepcopy.go"}
	entries, err := os.ReadDir(crds)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want[filepath.Join(crds, e.Name())] = filepath.Join(committed, e.Name())
	}
	if len(entries) != 2 {
		t.Errorf("controller-gen wrote %d CRDs, want 2 (ChainSet, ChainSetNodeStatus)", len(entries))
	}
	if have, _ := filepath.Glob(filepath.Join(committed, "*.yaml")); len(have) != len(entries) {
		t.Errorf("%s holds %d CRDs, controller-gen makes %d: run make generate and commit", committed, len(have), len(entries))
	}
	for gen, path := range want {
		got, err := os.ReadFile(gen)
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v: run make generate and commit", path, err)
			continue
		}
		if !bytes.Equal(got, have) {
			t.Errorf("%s differs from what controller-gen makes from the types: run make generate and commit", path)
		}
	}
}
