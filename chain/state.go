package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
)

// StateVersion is the version of the host state file kfm writes.
const StateVersion = 1

// State is what kfm knows about the chains it manages on this host, kept in
// <state-dir>/state.json (default /run/kfm, so it goes with a reboot, as the
// kernel's chains and pins do). The kernel is the truth about what runs;
// the state adds what the kernel cannot hold: element names, where each
// program came from, its parameters, and why a backend was chosen.
type State struct {
	Version int          `json:"version"`
	Hooks   []*HookState `json:"hooks"`
}

// HookState is kfm's record of one target.
type HookState struct {
	// Netns is the network namespace of the interface as the chain names
	// it: "" for the namespace kfm runs in, else a path (/run/netns/NAME).
	// NetnsID is the identity that path led to when the state was
	// written (see netnsID): a path can later lead to another namespace,
	// whose interfaces are not this entry's. Entries written before kfm
	// knew namespaces have neither: they are the host's.
	Netns     string   `json:"netns,omitempty"`
	NetnsID   string   `json:"netnsId,omitempty"`
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	Hook      bpf.Hook `json:"hook"`
	// HWAddr is the interface's hardware address when the chain was
	// applied. With Ifindex it identifies the interface (see
	// sameInterface): a new interface that got the same ifindex is not
	// the one kfm chained.
	HWAddr string `json:"hwaddr,omitempty"`
	// RootID is the program attached to the hook ahead of the chain (the
	// dispatcher: its libxdp pin directory is dispatch-IFINDEX-ROOTID).
	RootID  ebpf.ProgramID `json:"rootId,omitempty"`
	Backend string         `json:"backend"`
	// Reason says why the backend was chosen ("auto: ..." or "requested").
	Reason string `json:"reason,omitempty"`
	// Mode is the XDP attach mode.
	Mode     string          `json:"mode,omitempty"`
	Elements []*ElementState `json:"elements"`
	// Pending lists the program IDs of a change that was prepared but
	// whose commit was not confirmed (the process may have died in
	// between). Programs found running with these IDs are kfm's.
	Pending []PendingElement `json:"pending,omitempty"`
	// Changing is set, before anything is loaded, on a hook an apply is
	// about to change, and cleared with the final state. A run that finds
	// it set knows that a killed predecessor may have left pins on the
	// hook (a prepared chain) and commits the hook again even when the
	// kernel already runs what is wanted: the backend's commit removes
	// such leftovers.
	Changing bool `json:"changing,omitempty"`
	// Owner is who manages the hook: empty for kfm.yaml (the CLI), else
	// the kfm agent's name for the source that asked for the chain
	// ("ChainSet/NAME", "config:/etc/kfm", "oci://..."). kfm apply leaves
	// the agent's hooks alone, and the agent never touches a hook it does
	// not own.
	Owner string `json:"owner,omitempty"`
}

// ElementState is one program kfm installed on a target.
type ElementState struct {
	Name string `json:"name"`
	// Source is what the user installed: a file path or a reference.
	Source string `json:"source"`
	// Digest is the bundle manifest digest for registry installs.
	Digest string `json:"digest,omitempty"`
	// Object is the sha256 of the ELF object.
	Object    string            `json:"object"`
	Function  string            `json:"function"`
	Priority  int               `json:"priority"`
	ProceedOn []string          `json:"proceedOn"`
	Params    map[string]string `json:"params,omitempty"`
	// Key identifies code and parameters; equal keys mean an unchanged
	// program.
	Key string `json:"key"`
	// ProgramID is the kernel program running this element (0: unknown).
	ProgramID ebpf.ProgramID `json:"programId"`
	// Counters: the program counts its verdicts (kfm's verdict counters,
	// pinned with its maps).
	Counters bool `json:"counters,omitempty"`
	// Metrics are the declared metrics of the program, resolved at
	// install (read by chain/metrics).
	Metrics []Metric `json:"metrics,omitempty"`
}

// PendingElement maps a name to a prepared program ID.
type PendingElement struct {
	Name      string         `json:"name"`
	Key       string         `json:"key"`
	ProgramID ebpf.ProgramID `json:"programId"`
}

// find returns the entry of a hook, or nil. Hooks are kept sorted (put,
// load), so it is a binary search: status and apply look up every hook of
// every interface.
func (s *State) find(netns, iface string, hook bpf.Hook) *HookState {
	want := &HookState{Netns: netns, Interface: iface, Hook: hook}
	if i, ok := slices.BinarySearchFunc(s.Hooks, want, hookOrder); ok {
		return s.Hooks[i]
	}
	return nil
}

// hookOrder orders hook entries by namespace, interface and hook.
func hookOrder(a, b *HookState) int {
	if c := strings.Compare(a.Netns, b.Netns); c != 0 {
		return c
	}
	if c := strings.Compare(a.Interface, b.Interface); c != 0 {
		return c
	}
	return strings.Compare(string(a.Hook), string(b.Hook))
}

func (s *State) put(h *HookState) {
	s.Hooks = slices.DeleteFunc(s.Hooks, func(o *HookState) bool {
		return o.Netns == h.Netns && o.Interface == h.Interface && o.Hook == h.Hook
	})
	if len(h.Elements) > 0 || len(h.Pending) > 0 || h.Changing {
		s.Hooks = append(s.Hooks, h)
	}
	slices.SortFunc(s.Hooks, hookOrder)
}

func (h *HookState) element(name string) *ElementState {
	for _, e := range h.Elements {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// stateStore reads and writes the state directory.
type stateStore struct {
	dir string
}

func (st stateStore) path() string { return filepath.Join(st.dir, "state.json") }

func (st stateStore) load() (*State, error) {
	b, err := os.ReadFile(st.path())
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: StateVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("host state %s is corrupt (%v): remove it and run kfm apply to rebuild it", st.path(), err)
	}
	if s.Version > StateVersion {
		return nil, fmt.Errorf("host state %s has version %d; this kfm understands up to %d: use a newer kfm", st.path(), s.Version, StateVersion)
	}
	// JSON null where a hook or an element belongs would panic every
	// command that walks the state (found by FuzzLoadState).
	for i, h := range s.Hooks {
		if h == nil {
			return nil, fmt.Errorf("host state %s is corrupt (hook %d is null): remove it and run kfm apply to rebuild it", st.path(), i)
		}
		if slices.Contains(h.Elements, nil) {
			return nil, fmt.Errorf("host state %s is corrupt (a null element on %s %s): remove it and run kfm apply to rebuild it", st.path(), h.Interface, h.Hook)
		}
	}
	// (kfm writes them sorted; one edited by hand may not be.)
	slices.SortStableFunc(s.Hooks, hookOrder)
	return &s, nil
}

func (st stateStore) save(s *State) error {
	s.Version = StateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(st.path(), append(b, '\n'), 0o644); err != nil {
		return stateDirError(st.dir, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see the old or the new content, never a
// part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
