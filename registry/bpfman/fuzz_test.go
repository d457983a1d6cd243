package bpfman_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/registry/bpfman"
)

// FuzzReadLayer: whatever the bytes, ReadLayer returns a file or an
// ErrUnsafeLayer error, never panics, and never returns more than the limits
// allow. Seeds: testdata/fuzz/FuzzReadLayer and the cases below.
func FuzzReadLayer(f *testing.F) {
	f.Add(layer(f, entry{name: "prog.o", typ: tar.TypeReg, data: []byte("\x7fELF....")}), "")
	f.Add(layer(f, entry{name: "../x", typ: tar.TypeReg, data: []byte("x")}), "")
	f.Add(layer(f, entry{name: "l", typ: tar.TypeSymlink, linkname: "/etc"}), "l")
	f.Add([]byte("not gzip"), "")
	lim := bpfman.Limits{MaxEntries: 8, MaxFileSize: 1 << 16, MaxTotalSize: 1 << 18}
	f.Fuzz(func(t *testing.T, data []byte, want string) {
		file, err := bpfman.ReadLayer(bytes.NewReader(data), want, lim)
		if err != nil {
			if !errors.Is(err, bpfman.ErrUnsafeLayer) {
				t.Fatalf("error does not wrap ErrUnsafeLayer: %v", err)
			}
			return
		}
		if int64(len(file.Data)) > lim.MaxFileSize {
			t.Fatalf("returned %d bytes, limit %d", len(file.Data), lim.MaxFileSize)
		}
		if file.Name == "" || file.Name[0] == '/' || slices.Contains(strings.Split(file.Name, "/"), "..") {
			t.Fatalf("returned unsafe name %q", file.Name)
		}
	})
}

// FuzzParseImageConfig: labels from outside never panic and a success
// always names at least one program.
func FuzzParseImageConfig(f *testing.F) {
	f.Add([]byte(`{"config":{"Labels":{"io.ebpf.programs":"{\"pass\":\"xdp\"}","io.ebpf.maps":"{\"m\":\"hash\"}"}}}`))
	f.Add([]byte(`{"config":{"Labels":{"io.ebpf.bpf_function_name":"pass","io.ebpf.program_type":"xdp"}}}`))
	f.Add([]byte(`{"config":{"Labels":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := bpfman.ParseImageConfig(data)
		if err != nil {
			return
		}
		if len(m.Programs) == 0 {
			t.Fatal("accepted a config without programs")
		}
	})
}
