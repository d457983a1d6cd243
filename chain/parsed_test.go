package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const parsedTestManifest = `# the user's comment
version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - {name: a, path: a.o, priority: 10}   # first
      - {name: b, path: b.o, priority: 20}
`

const parsedTestLock = `version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: a
        path: a.o
        object: sha256:00
        function: f
        priority: 10
        proceedOn: [pass]
        counters: false
`

func newParsedTestManager(t *testing.T) *Manager {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"state", "conf"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Options{BPFFS: filepath.Join(dir, "bpffs"), StateDir: filepath.Join(dir, "state"), ConfigDir: filepath.Join(dir, "conf")})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func writeConf(t *testing.T, m *Manager, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(m.configDir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestParsedEntries: kfm.yaml and kfm.lock read through the state
// directory's entries are what parsing them gives, every time, and an
// edit, a damaged entry or an entry of other types is never used.
func TestParsedEntries(t *testing.T) {
	m := newParsedTestManager(t)
	writeConf(t, m, "kfm.yaml", parsedTestManifest)
	writeConf(t, m, "kfm.lock", parsedTestLock)
	wantMan, err := LoadManifest(m.manifestPath())
	if err != nil {
		t.Fatal(err)
	}
	wantLock, err := LoadLock(m.lockPath())
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		man, err := m.loadManifest()
		if err != nil {
			t.Fatalf("%s: loadManifest: %v", when, err)
		}
		if !reflect.DeepEqual(man.Chains, wantMan.Chains) || man.Version != wantMan.Version {
			t.Errorf("%s: loadManifest = %+v, parsing gives %+v", when, man.Chains, wantMan.Chains)
		}
		if got := man.Chains[0].Programs[1].Line(); got != 8 {
			t.Errorf("%s: program b is on line %d, want 8", when, got)
		}
		out, err := man.Marshal()
		if err != nil || !strings.Contains(string(out), "# the user's comment") || !strings.Contains(string(out), "# first") {
			t.Errorf("%s: Marshal lost the user's comments (%v):\n%s", when, err, out)
		}
		lk, err := m.loadLock()
		if err != nil {
			t.Fatalf("%s: loadLock: %v", when, err)
		}
		if !reflect.DeepEqual(lk, wantLock) {
			t.Errorf("%s: loadLock = %+v, parsing gives %+v", when, lk, wantLock)
		}
		if lk.Chains[0].Programs[0].CountersOn() {
			t.Errorf("%s: counters: false was lost", when)
		}
	}
	check("first read")
	for _, f := range []string{"kfm.yaml", "kfm.lock"} {
		if _, err := os.Stat(m.parsedEntryPath(f)); err != nil {
			t.Fatalf("no entry for %s after a read: %v", f, err)
		}
	}
	check("read from the entries")

	// An edit that keeps the size and the modification time is seen.
	st, _ := os.Stat(m.lockPath())
	writeConf(t, m, "kfm.lock", strings.Replace(parsedTestLock, "priority: 10", "priority: 11", 1))
	os.Chtimes(m.lockPath(), st.ModTime(), st.ModTime())
	lk, err := m.loadLock()
	if err != nil || lk.Chains[0].Programs[0].Priority != 11 {
		t.Fatalf("after an edit of the same size and time: %+v, %v; want priority 11", lk, err)
	}
	writeConf(t, m, "kfm.lock", parsedTestLock)

	// A damaged entry, or one written for other types, is parsed again.
	entry := m.parsedEntryPath("kfm.lock")
	b, _ := os.ReadFile(entry)
	head, body, _ := strings.Cut(string(b), "\n")
	for name, text := range map[string]string{
		"truncated":   head + "\n" + body[:len(body)/2],
		"other types": strings.Fields(head)[0] + " 0000000000000000\n" + strings.Replace(body, `"priority":10`, `"priority":99`, 1),
		"other file":  strings.Repeat("0", 64) + " " + strings.Fields(head)[1] + "\n" + strings.Replace(body, `"priority":10`, `"priority":99`, 1),
	} {
		if err := os.WriteFile(entry, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		check("entry " + name)
	}

	// A file that fails to parse fails every time, with the parser's error.
	writeConf(t, m, "kfm.yaml", parsedTestManifest+"  - bogus: 1\n")
	for range 2 {
		if _, err := m.loadManifest(); !errors.Is(err, ErrManifest) {
			t.Fatalf("loadManifest of a broken kfm.yaml: %v, want ErrManifest", err)
		}
	}
}

// TestParsedEntriesOnSave: the files a change writes (saveProject) have
// their entries written with them, holding what parsing them gives, so the
// next command parses nothing.
func TestParsedEntriesOnSave(t *testing.T) {
	m := newParsedTestManager(t)
	writeConf(t, m, "kfm.yaml", parsedTestManifest)
	writeConf(t, m, "kfm.lock", parsedTestLock)
	man, lk, err := m.loadProject()
	if err != nil {
		t.Fatal(err)
	}
	lk.Chains[0].Programs[0].Priority = 12
	if err := m.saveProject(man, lk); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kfm.yaml", "kfm.lock"} {
		data, err := os.ReadFile(filepath.Join(m.configDir, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(m.parsedEntryPath(name))
		if err != nil {
			t.Fatalf("no entry for %s after saving it: %v", name, err)
		}
		sum := sha256.Sum256(data)
		if !strings.HasPrefix(string(b), hex.EncodeToString(sum[:])+" ") {
			t.Errorf("the entry of %s is not for the file just written", name)
		}
	}
	got, err := m.loadLock()
	if err != nil || got.Chains[0].Programs[0].Priority != 12 {
		t.Errorf("loadLock after saving: %+v, %v; want priority 12", got, err)
	}
	want, err := LoadLock(m.lockPath())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the entry gives %+v, parsing the file %+v", got, want)
	}
}

// TestParsedEntriesNeedTheStateDir: without a state directory the files
// are parsed every time, and no directory is created for the entries.
func TestParsedEntriesNeedTheStateDir(t *testing.T) {
	m := newParsedTestManager(t)
	if err := os.Remove(m.state.dir); err != nil {
		t.Fatal(err)
	}
	writeConf(t, m, "kfm.lock", parsedTestLock)
	for range 2 {
		if _, err := m.loadLock(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(m.state.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the state directory was created: %v", err)
	}
}
