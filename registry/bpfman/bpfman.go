package bpfman

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// Labels of a bytecode image config.
const (
	ProgramsLabel = "io.ebpf.programs"
	MapsLabel     = "io.ebpf.maps"
	// The first version of the format described one program.
	FunctionLabel    = "io.ebpf.bpf_function_name"
	ProgramTypeLabel = "io.ebpf.program_type"
	FilenameLabel    = "io.ebpf.filename"
	ProgramNameLabel = "io.ebpf.program_name"
)

// Media types of a bytecode image's single layer.
const (
	LayerMediaType       = "application/vnd.oci.image.layer.v1.tar+gzip"
	DockerLayerMediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Errors callers branch on.
var (
	// ErrNotBytecodeImage: the image config has none of the io.ebpf labels.
	ErrNotBytecodeImage = errors.New("not a bpfman bytecode image")
	// ErrInvalidLabels: the labels are there but cannot be read.
	ErrInvalidLabels = errors.New("invalid bytecode image labels")
	// ErrUnsafeLayer: the layer is not a tar+gzip archive kfm accepts
	// (links, paths outside the root, too large, too many entries...).
	ErrUnsafeLayer = errors.New("refused bytecode image layer")
)

// Metadata is what a bytecode image's labels say.
type Metadata struct {
	// Programs maps entry function names to program types as bpfman
	// spells them (xdp, tc, tcx, kprobe...).
	Programs map[string]string `json:"programs"`
	// Maps maps map names to map types.
	Maps map[string]string `json:"maps,omitempty"`
	// Filename is the object's name inside the layer, when the labels
	// give it (first format version only).
	Filename string `json:"filename,omitempty"`
	// Labels are all labels of the image config.
	Labels map[string]string `json:"labels,omitempty"`
}

// imageConfig is the part of an OCI or Docker image config kfm reads.
type imageConfig struct {
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
}

// ParseImageConfig reads the io.ebpf labels of an image config (media type
// application/vnd.oci.image.config.v1+json or the Docker equivalent). An
// image without them fails with ErrNotBytecodeImage.
func ParseImageConfig(data []byte) (*Metadata, error) {
	var cfg imageConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	labels := cfg.Config.Labels
	m := &Metadata{Labels: labels, Programs: map[string]string{}}
	progs, hasProgs := labels[ProgramsLabel]
	switch {
	case hasProgs:
		if err := json.Unmarshal([]byte(progs), &m.Programs); err != nil {
			return nil, fmt.Errorf("%w: label %s must be a JSON object of function name to program type: %w", ErrInvalidLabels, ProgramsLabel, err)
		}
		if maps, ok := labels[MapsLabel]; ok && strings.TrimSpace(maps) != "" {
			if err := json.Unmarshal([]byte(maps), &m.Maps); err != nil {
				return nil, fmt.Errorf("%w: label %s must be a JSON object of map name to map type: %w", ErrInvalidLabels, MapsLabel, err)
			}
		}
	case labels[FunctionLabel] != "" || labels[ProgramTypeLabel] != "":
		fn, typ := labels[FunctionLabel], labels[ProgramTypeLabel]
		if fn == "" || typ == "" {
			return nil, fmt.Errorf("%w: labels %s and %s must both be set", ErrInvalidLabels, FunctionLabel, ProgramTypeLabel)
		}
		m.Programs[fn] = typ
		m.Filename = labels[FilenameLabel]
	default:
		return nil, fmt.Errorf("%w: the image config has no %s label", ErrNotBytecodeImage, ProgramsLabel)
	}
	if len(m.Programs) == 0 {
		return nil, fmt.Errorf("%w: label %s lists no programs", ErrInvalidLabels, ProgramsLabel)
	}
	for fn, typ := range m.Programs {
		if fn == "" || typ == "" {
			return nil, fmt.Errorf("%w: label %s has an empty function name or type", ErrInvalidLabels, ProgramsLabel)
		}
	}
	return m, nil
}

// Limits bound what ReadLayer accepts.
type Limits struct {
	// MaxEntries is the number of tar entries (files and directories).
	MaxEntries int
	// MaxFileSize is the size of one file.
	MaxFileSize int64
	// MaxTotalSize bounds the uncompressed archive (headers included).
	MaxTotalSize int64
}

// DefaultLimits: bytecode images hold one object of at most a few MiB.
var DefaultLimits = Limits{
	MaxEntries:   64,
	MaxFileSize:  64 << 20,
	MaxTotalSize: 80 << 20,
}

// File is the object found in a layer.
type File struct {
	Name string
	Data []byte
}

// elfMagic starts every ELF file.
var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// ReadLayer reads a tar+gzip layer and returns the BPF object in it:
// the file called want when want is not empty, else the only ELF file at
// the root. Every violation of the limits or of the rules in the package
// documentation fails with an error wrapping ErrUnsafeLayer.
func ReadLayer(r io.Reader, want string, lim Limits) (*File, error) {
	if lim == (Limits{}) {
		lim = DefaultLimits
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip-compressed (%v); bytecode image layers are tar+gzip", ErrUnsafeLayer, err)
	}
	defer zr.Close()
	counted := &limitedReader{r: zr, left: lim.MaxTotalSize}
	tr := tar.NewReader(counted)

	want = strings.TrimPrefix(path.Clean("/"+want), "/")
	var (
		entries int
		files   []*File
		names   []string
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if counted.exceeded {
				return nil, fmt.Errorf("%w: uncompressed archive larger than %d bytes", ErrUnsafeLayer, lim.MaxTotalSize)
			}
			return nil, fmt.Errorf("%w: not a valid tar archive: %v", ErrUnsafeLayer, err)
		}
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			continue // PAX global header: metadata, not an entry
		}
		entries++
		if entries > lim.MaxEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrUnsafeLayer, lim.MaxEntries)
		}
		name, err := safeName(hdr.Name)
		if err != nil {
			return nil, err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
			if name == "." {
				return nil, fmt.Errorf("%w: regular file with the name of the archive root %q", ErrUnsafeLayer, hdr.Name)
			}
		case tar.TypeSymlink:
			return nil, fmt.Errorf("%w: entry %q is a symbolic link (to %q); only regular files are accepted", ErrUnsafeLayer, hdr.Name, hdr.Linkname)
		case tar.TypeLink:
			return nil, fmt.Errorf("%w: entry %q is a hard link (to %q); only regular files are accepted", ErrUnsafeLayer, hdr.Name, hdr.Linkname)
		default:
			return nil, fmt.Errorf("%w: entry %q has type %q; only regular files are accepted", ErrUnsafeLayer, hdr.Name, string(hdr.Typeflag))
		}
		if hdr.Size < 0 || hdr.Size > lim.MaxFileSize {
			return nil, fmt.Errorf("%w: entry %q has %d bytes, more than the %d allowed", ErrUnsafeLayer, hdr.Name, hdr.Size, lim.MaxFileSize)
		}
		if slices.Contains(names, name) {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrUnsafeLayer, hdr.Name)
		}
		names = append(names, name)
		// Only candidates are kept in memory: the wanted file, or ELF
		// files at the root.
		if want != "" && name != want || want == "" && strings.Contains(name, "/") {
			continue
		}
		data := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			if counted.exceeded {
				return nil, fmt.Errorf("%w: uncompressed archive larger than %d bytes", ErrUnsafeLayer, lim.MaxTotalSize)
			}
			return nil, fmt.Errorf("%w: entry %q: %v", ErrUnsafeLayer, hdr.Name, err)
		}
		if want == "" && !bytes.HasPrefix(data, elfMagic) {
			continue
		}
		files = append(files, &File{Name: name, Data: data})
	}
	// Reading to the end of the gzip stream checks its CRC.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		if counted.exceeded {
			return nil, fmt.Errorf("%w: uncompressed archive larger than %d bytes", ErrUnsafeLayer, lim.MaxTotalSize)
		}
		return nil, fmt.Errorf("%w: corrupt gzip stream: %v", ErrUnsafeLayer, err)
	}
	switch {
	case len(files) == 1:
		return files[0], nil
	case want != "":
		return nil, fmt.Errorf("%w: the layer has no file %q (it has %s)", ErrUnsafeLayer, want, listNames(names))
	case len(files) == 0:
		return nil, fmt.Errorf("%w: no ELF object at the root of the layer (it has %s)", ErrUnsafeLayer, listNames(names))
	default:
		var elf []string
		for _, f := range files {
			elf = append(elf, f.Name)
		}
		return nil, fmt.Errorf("%w: %d ELF objects at the root of the layer (%s); a bytecode image holds one", ErrUnsafeLayer, len(files), strings.Join(elf, ", "))
	}
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "no files"
	}
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	return strings.Join(names, ", ")
}

// safeName checks a tar entry name and returns it relative to the archive
// root without "./" or a trailing slash.
func safeName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: entry with an empty name", ErrUnsafeLayer)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: entry %q has an absolute path", ErrUnsafeLayer, name)
	}
	if strings.ContainsRune(name, 0) || strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: entry %q has a NUL or backslash in its name", ErrUnsafeLayer, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: entry %q points outside the archive (..)", ErrUnsafeLayer, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return ".", nil
	}
	return clean, nil
}

// limitedReader fails once more than left bytes were read.
type limitedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

var errLimit = errors.New("size limit exceeded")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a stream that ends exactly at the limit
		// from one that goes on.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.exceeded = true
			return 0, errLimit
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
