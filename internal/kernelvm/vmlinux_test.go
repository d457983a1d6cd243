package kernelvm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// elfWithNote builds a minimal ELF64 x86-64 file with one PT_NOTE segment
// holding a note of the given name and type.
func elfWithNote(name string, typ uint32) []byte {
	var note bytes.Buffer
	le := binary.LittleEndian
	binary.Write(&note, le, uint32(len(name)+1))
	binary.Write(&note, le, uint32(4))
	binary.Write(&note, le, typ)
	note.WriteString(name + "\x00")
	for note.Len()%4 != 0 {
		note.WriteByte(0)
	}
	binary.Write(&note, le, uint32(0x1000000)) // entry address

	const ehsize, phsize = 64, 56
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	binary.Write(&b, le, uint16(2))   // ET_EXEC
	binary.Write(&b, le, uint16(62))  // EM_X86_64
	binary.Write(&b, le, uint32(1))   // version
	binary.Write(&b, le, uint64(0))   // entry
	binary.Write(&b, le, uint64(64))  // phoff
	binary.Write(&b, le, uint64(0))   // shoff
	binary.Write(&b, le, uint32(0))   // flags
	binary.Write(&b, le, uint16(64))  // ehsize
	binary.Write(&b, le, uint16(56))  // phentsize
	binary.Write(&b, le, uint16(1))   // phnum
	binary.Write(&b, le, uint16(64))  // shentsize
	binary.Write(&b, le, [2]uint16{}) // shnum, shstrndx
	binary.Write(&b, le, uint32(4))   // PT_NOTE
	binary.Write(&b, le, uint32(4))   // PF_R
	binary.Write(&b, le, uint64(ehsize+phsize))
	binary.Write(&b, le, [2]uint64{}) // vaddr, paddr
	binary.Write(&b, le, uint64(note.Len()))
	binary.Write(&b, le, uint64(note.Len()))
	binary.Write(&b, le, uint64(4))
	b.Write(note.Bytes())
	return b.Bytes()
}

// fakeBzImage wraps a payload (already compressed, size appended as the
// kernel build does) in a bzImage setup header.
func fakeBzImage(payload []byte) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512+0x100)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 0x100) // payload after 0x100 bytes of decompressor
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(img, payload...)
}

func compress(t *testing.T, tool []string, data []byte) []byte {
	t.Helper()
	cmd := exec.Command(tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v (make deps): %v", tool, err)
	}
	return out
}

func TestExtractVmlinux(t *testing.T) {
	kernel := elfWithNote("Xen", 18)
	if !hasPVHEntry(bytes.NewReader(kernel)) {
		t.Fatal("hasPVHEntry misses the Xen PHYS32_ENTRY note")
	}
	size := binary.LittleEndian.AppendUint32(nil, uint32(len(kernel)))
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"gzip", compress(t, []string{"gzip", "-9nc"}, kernel)}, // carries its size itself
		{"xz", append(compress(t, []string{"xz", "-c", "--check=crc32"}, kernel), size...)},
		{"zstd", append(compress(t, []string{"zstd", "-c", "-q"}, kernel), size...)},
		{"lz4 legacy", append(compress(t, []string{"lz4", "-l", "-c", "-q"}, kernel), size...)},
	} {
		dir := t.TempDir()
		bz, out := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
		os.WriteFile(bz, fakeBzImage(tc.payload), 0o644)
		if err := extractVmlinux(context.Background(), bz, out); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, kernel) {
			t.Errorf("%s: extracted %d bytes, not the kernel", tc.name, len(got))
		}
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	noPVH := elfWithNote("GNU", 3)
	if hasPVHEntry(bytes.NewReader(noPVH)) {
		t.Fatal("hasPVHEntry accepted a GNU note")
	}
	zst := func(b []byte, size int) []byte {
		return append(compress(t, []string{"zstd", "-c", "-q"}, b), binary.LittleEndian.AppendUint32(nil, uint32(size))...)
	}
	for _, tc := range []struct {
		name    string
		image   []byte
		wantErr string
	}{
		{"not a bzImage", []byte("MZ not a kernel"), "no HdrS setup header"},
		{"unknown compression", fakeBzImage([]byte("BZh91AY&SY and then some")), "unknown compression"},
		{"payload outside", fakeBzImage(nil)[:0x300], "outside the file"},
		{"wrong size", fakeBzImage(zst(elfWithNote("Xen", 18), 12345)), "the image says 12345"},
		{"no PVH entry", fakeBzImage(zst(noPVH, len(noPVH))), "no PVH entry point"},
	} {
		dir := t.TempDir()
		bz := filepath.Join(dir, "vmlinuz")
		os.WriteFile(bz, tc.image, 0o644)
		err := extractVmlinux(context.Background(), bz, filepath.Join(dir, "vmlinux"))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
		if _, statErr := os.Stat(filepath.Join(dir, "vmlinux")); statErr == nil {
			t.Errorf("%s: vmlinux written despite the error", tc.name)
		}
	}
	if _, _, _, err := bzPayload([]byte("short")); !errors.Is(err, errBzImage) {
		t.Errorf("short image: error %v, want errBzImage", err)
	}
}

func FuzzBzPayload(f *testing.F) {
	f.Add(fakeBzImage([]byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(fakeBzImage([]byte{0x1f, 0x8b, 0, 0, 0, 0, 0, 0}))
	f.Add(elfWithNote("Xen", 18))
	f.Fuzz(func(t *testing.T, img []byte) {
		p, tool, _, err := bzPayload(img)
		if err == nil && (len(tool) == 0 || len(p) > len(img)) {
			t.Fatalf("payload of %d bytes from a %d-byte image, tool %v", len(p), len(img), tool)
		}
		hasPVHEntry(bytes.NewReader(img))
	})
}
