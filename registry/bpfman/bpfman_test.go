package bpfman_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/registry/bpfman"
)

// entry is one tar entry of a test layer.
type entry struct {
	name     string
	typ      byte
	data     []byte
	size     int64 // header size when data is nil
	linkname string
}

// layer writes entries as tar+gzip.
func layer(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.linkname}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if e.data == nil && e.size > 0 {
			hdr.Size = e.size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg && e.data != nil {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Entries that announce more than they carry end the archive early:
	// flushing would fail, and that is what such tests want.
	_ = tw.Close()
	_ = zw.Close()
	return buf.Bytes()
}

func object(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("../../bpf/testdata/params.o")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestReadLayerAccepts(t *testing.T) {
	obj := object(t)
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
		wantErr bool
	}{
		{"object at the root", []entry{{name: "prog.o", typ: tar.TypeReg, data: obj}}, "", false},
		{"with ./ prefix and a root dir entry", []entry{{name: "./", typ: tar.TypeDir}, {name: "./prog.o", typ: tar.TypeReg, data: obj}}, "", false},
		{"object next to other files", []entry{{name: "README", typ: tar.TypeReg, data: []byte("hi")}, {name: "prog.o", typ: tar.TypeReg, data: obj}}, "", false},
		{"named by the filename label", []entry{{name: "a.o", typ: tar.TypeReg, data: obj}, {name: "b.o", typ: tar.TypeReg, data: obj}}, "b.o", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := bpfman.ReadLayer(bytes.NewReader(layer(t, tc.entries...)), tc.want, bpfman.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.Data, obj) {
				t.Error("object bytes differ")
			}
		})
	}
}

func TestReadLayerRefuses(t *testing.T) {
	obj := object(t)
	many := make([]entry, 70)
	for i := range many {
		many[i] = entry{name: "f" + strings.Repeat("x", i), typ: tar.TypeReg, data: []byte("x")}
	}
	for _, tc := range []struct {
		name string
		data []byte
		lim  bpfman.Limits
		want string
	}{
		{"dot-dot", layer(t, entry{name: "../prog.o", typ: tar.TypeReg, data: obj}), bpfman.Limits{}, `"../prog.o" points outside`},
		{"dot-dot inside", layer(t, entry{name: "a/../../etc/x", typ: tar.TypeReg, data: obj}), bpfman.Limits{}, "points outside"},
		{"absolute path", layer(t, entry{name: "/etc/prog.o", typ: tar.TypeReg, data: obj}), bpfman.Limits{}, "absolute path"},
		{"symlink", layer(t, entry{name: "prog.o", typ: tar.TypeSymlink, linkname: "/etc/shadow"}), bpfman.Limits{}, "symbolic link"},
		{"hard link", layer(t, entry{name: "a.o", typ: tar.TypeReg, data: obj}, entry{name: "prog.o", typ: tar.TypeLink, linkname: "a.o"}), bpfman.Limits{}, "hard link"},
		{"device", layer(t, entry{name: "dev", typ: tar.TypeChar}), bpfman.Limits{}, "type"},
		{"huge entry", layer(t, entry{name: "prog.o", typ: tar.TypeReg, size: 1 << 40}), bpfman.Limits{}, "more than the"},
		{"too many entries", layer(t, many...), bpfman.Limits{}, "more than 64 entries"},
		{"uncompressed size", layer(t, entry{name: "prog.o", typ: tar.TypeReg, data: obj}), bpfman.Limits{MaxEntries: 10, MaxFileSize: 1 << 20, MaxTotalSize: 2048}, "larger than 2048 bytes"},
		{"not gzip", []byte("just some bytes, no gzip header"), bpfman.Limits{}, "not gzip-compressed"},
		{"gzip but not tar", gz(t, []byte(strings.Repeat("not a tar archive ", 100))), bpfman.Limits{}, "not a valid tar"},
		{"no object", layer(t, entry{name: "README", typ: tar.TypeReg, data: []byte("hi")}), bpfman.Limits{}, "no ELF object"},
		{"two objects", layer(t, entry{name: "a.o", typ: tar.TypeReg, data: obj}, entry{name: "b.o", typ: tar.TypeReg, data: obj}), bpfman.Limits{}, "2 ELF objects"},
		{"duplicate name", layer(t, entry{name: "a.o", typ: tar.TypeReg, data: obj}, entry{name: "./a.o", typ: tar.TypeReg, data: obj}), bpfman.Limits{}, "twice"},
		{"truncated", layer(t, entry{name: "prog.o", typ: tar.TypeReg, data: obj})[:200], bpfman.Limits{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bpfman.ReadLayer(bytes.NewReader(tc.data), "", tc.lim)
			if !errors.Is(err, bpfman.ErrUnsafeLayer) {
				t.Fatalf("err = %v, want ErrUnsafeLayer", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func gz(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return buf.Bytes()
}

// A gzip bomb: a small layer that inflates to far more than the limit.
func TestReadLayerStopsAGzipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	const size = 200 << 20
	_ = tw.WriteHeader(&tar.Header{Name: "prog.o", Typeflag: tar.TypeReg, Size: size, Mode: 0o644})
	zero := make([]byte, 1<<20)
	for i := 0; i < size>>20; i++ {
		_, _ = tw.Write(zero)
	}
	_ = tw.Close()
	_ = zw.Close()
	if buf.Len() > 1<<20 {
		t.Fatalf("bomb is %d bytes", buf.Len())
	}
	_, err := bpfman.ReadLayer(&buf, "", bpfman.Limits{})
	if !errors.Is(err, bpfman.ErrUnsafeLayer) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseImageConfig(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		progs        map[string]string
		maps         map[string]string
		err          error
	}{
		{"current labels", `{"config":{"Labels":{"io.ebpf.programs":"{\"pass\":\"xdp\",\"count\":\"tc\"}","io.ebpf.maps":"{\"stats\":\"per_cpu_array\"}"}}}`,
			map[string]string{"pass": "xdp", "count": "tc"}, map[string]string{"stats": "per_cpu_array"}, nil},
		{"first version labels", `{"config":{"Labels":{"io.ebpf.program_name":"p","io.ebpf.bpf_function_name":"pass","io.ebpf.program_type":"xdp","io.ebpf.filename":"pass.o"}}}`,
			map[string]string{"pass": "xdp"}, nil, nil},
		{"no labels", `{"config":{"Labels":{"maintainer":"me"}}}`, nil, nil, bpfman.ErrNotBytecodeImage},
		{"no config", `{}`, nil, nil, bpfman.ErrNotBytecodeImage},
		{"programs not JSON", `{"config":{"Labels":{"io.ebpf.programs":"pass=xdp"}}}`, nil, nil, bpfman.ErrInvalidLabels},
		{"maps not JSON", `{"config":{"Labels":{"io.ebpf.programs":"{\"p\":\"xdp\"}","io.ebpf.maps":"["}}}`, nil, nil, bpfman.ErrInvalidLabels},
		{"empty programs", `{"config":{"Labels":{"io.ebpf.programs":"{}"}}}`, nil, nil, bpfman.ErrInvalidLabels},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := bpfman.ParseImageConfig([]byte(tc.config))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Programs) != len(tc.progs) || len(m.Maps) != len(tc.maps) {
				t.Fatalf("got %v %v", m.Programs, m.Maps)
			}
			for k, v := range tc.progs {
				if m.Programs[k] != v {
					t.Errorf("program %s: %q", k, m.Programs[k])
				}
			}
		})
	}
}
