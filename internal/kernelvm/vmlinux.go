package kernelvm

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// A bzImage boots through the firmware and decompresses itself, which costs
// about a second under TCG. Debian's kernels (CONFIG_PVH=y) can instead be
// booted as the uncompressed ELF vmlinux through its PVH entry point, which
// qemu finds in an ELF note. The runner extracts vmlinux once per cached
// kernel and falls back to the bzImage when that fails.

// errBzImage is wrapped by errors about malformed bzImage files.
var errBzImage = errors.New("not a usable bzImage")

// bzPayload returns the compressed kernel inside a bzImage, the tool that
// decompresses it and the uncompressed size the kernel build appended.
func bzPayload(img []byte) (payload []byte, tool []string, size uint32, err error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, nil, 0, fmt.Errorf("%w: no HdrS setup header", errBzImage)
	}
	if v := binary.LittleEndian.Uint16(img[0x206:]); v < 0x208 {
		return nil, nil, 0, fmt.Errorf("%w: boot protocol %#x has no payload fields", errBzImage, v)
	}
	setupSects := int(img[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects + 1) * 512
	pOff := int(binary.LittleEndian.Uint32(img[0x248:]))
	pLen := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if pLen < 8 || off+pOff < off || off+pOff+pLen > len(img) || off+pOff+pLen < off {
		return nil, nil, 0, fmt.Errorf("%w: payload %d+%d outside the file", errBzImage, pOff, pLen)
	}
	p := img[off+pOff : off+pOff+pLen]
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return p, []string{"gzip", "-dc"}, binary.LittleEndian.Uint32(p[len(p)-4:]), nil
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		tool = []string{"zstd", "-dc"}
	case bytes.HasPrefix(p, []byte("\xfd7zXZ\x00")):
		tool = []string{"xz", "-dc"}
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		tool = []string{"lz4", "-dc"}
	default:
		return nil, nil, 0, fmt.Errorf("%w: unknown compression (magic % x)", errBzImage, p[:4])
	}
	// The build appends the uncompressed size (size_append) to every
	// format but gzip, which carries it in its own trailer.
	return p[:len(p)-4], tool, binary.LittleEndian.Uint32(p[len(p)-4:]), nil
}

// extractVmlinux writes the uncompressed kernel of bzImage to out, checking
// its size and that it has a PVH entry point.
func extractVmlinux(ctx context.Context, bzImage, out string) error {
	img, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	payload, tool, size, err := bzPayload(img)
	if err != nil {
		return fmt.Errorf("%s: %w", bzImage, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool[0], tool[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(payload), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %s: %w: %s (make deps installs it)", bzImage, strings.Join(tool, " "), err, strings.TrimSpace(stderr.String()))
	}
	if uint32(stdout.Len()) != size {
		return fmt.Errorf("%s: decompressed %d bytes, the image says %d", bzImage, stdout.Len(), size)
	}
	if !hasPVHEntry(bytes.NewReader(stdout.Bytes())) {
		return fmt.Errorf("%s: the kernel has no PVH entry point (CONFIG_PVH)", bzImage)
	}
	return writeFileAtomic(out, func(w io.Writer) error {
		_, err := w.Write(stdout.Bytes())
		return err
	})
}

// maxNoteSegment bounds the ELF note segment hasPVHEntry reads.
const maxNoteSegment = 1 << 20

// hasPVHEntry reports whether an ELF kernel carries the Xen note
// XEN_ELFNOTE_PHYS32_ENTRY (18) that qemu's PVH boot uses.
func hasPVHEntry(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		// A kernel's notes take a few KiB; a segment header claiming more
		// (found by FuzzBzPayload: an exabyte) must not size an allocation.
		if p.Type != elf.PT_NOTE || p.Filesz > maxNoteSegment {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			continue
		}
		for len(b) >= 12 {
			nameSz := int(binary.LittleEndian.Uint32(b[0:]))
			descSz := int(binary.LittleEndian.Uint32(b[4:]))
			typ := binary.LittleEndian.Uint32(b[8:])
			nameEnd := 12 + (nameSz+3)&^3
			end := nameEnd + (descSz+3)&^3
			if nameSz < 0 || descSz < 0 || end > len(b) || end < 12 {
				break
			}
			if typ == 18 && strings.TrimRight(string(b[12:12+nameSz]), "\x00") == "Xen" {
				return true
			}
			b = b[end:]
		}
	}
	return false
}
