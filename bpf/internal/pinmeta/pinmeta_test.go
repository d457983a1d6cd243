package pinmeta_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/internal/testenv"
)

type doc struct {
	Version int      `json:"version"`
	Names   []string `json:"names"`
}

func TestWriteRead(t *testing.T) {
	dir := testenv.BPFFS(t)
	path := filepath.Join(dir, "meta")

	var got doc
	if err := pinmeta.Read(path, &got); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing pin: %v, want ErrNotExist", err)
	}
	for _, want := range []doc{
		{Version: 1, Names: []string{"a", "b"}},
		{Version: 2, Names: []string{strings.Repeat("x", 5000)}}, // grows the map
		{Version: 3},
	} {
		if err := pinmeta.Write(path, want); err != nil {
			t.Fatal(err)
		}
		got = doc{}
		if err := pinmeta.Read(path, &got); err != nil {
			t.Fatal(err)
		}
		if got.Version != want.Version || len(got.Names) != len(want.Names) || (len(want.Names) > 0 && got.Names[0] != want.Names[0]) {
			t.Errorf("read %+v, want %+v", got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.Contains(e.Name(), ".") { // maps.debug, progs.debug: the kernel's own
			names = append(names, e.Name())
		}
	}
	if len(names) != 1 || names[0] != "meta" {
		t.Errorf("bpffs holds %v, want only meta", names)
	}
	if err := pinmeta.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := pinmeta.Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	dir := testenv.BPFFS(t)
	if err := pinmeta.Write(filepath.Join(dir, "meta"), strings.Repeat("x", pinmeta.MaxSize)); err == nil {
		t.Error("Write of an oversized document succeeded")
	}
}
