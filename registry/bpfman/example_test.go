package bpfman_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"

	"github.com/kfm-project/kfm/registry/bpfman"
)

func ExampleReadLayer() {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	obj := []byte("\x7fELF stand-in object")
	_ = tw.WriteHeader(&tar.Header{Name: "pass.bpf.o", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(obj))})
	_, _ = tw.Write(obj)
	_ = tw.Close()
	_ = zw.Close()

	f, err := bpfman.ReadLayer(&buf, "", bpfman.DefaultLimits)
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Name, len(f.Data))
	// Output: pass.bpf.o 20
}

func ExampleParseImageConfig() {
	m, err := bpfman.ParseImageConfig([]byte(`{"config":{"Labels":{"io.ebpf.programs":"{\"pass\":\"xdp\"}","io.ebpf.maps":"{\"xdp_stats_map\":\"per_cpu_array\"}"}}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Programs, m.Maps)
	// Output: map[pass:xdp] map[xdp_stats_map:per_cpu_array]
}
