package chain

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kfm-project/kfm/bpf"
)

// LockVersion is the kfm.lock format version kfm writes and reads.
const LockVersion = 1

// Lock is kfm.lock: the chains of kfm.yaml with every program pinned to the
// exact bytes and signer that were accepted. The same lock on a hundred
// hosts gives a hundred identical chains: `kfm apply --locked` pulls by
// digest only and re-verifies the signer.
type Lock struct {
	Version int           `yaml:"version" json:"version"`
	Chains  []LockedChain `yaml:"chains" json:"chains"`
}

// LockedChain is one hook's chain, programs in run order.
type LockedChain struct {
	Interface string `yaml:"interface" json:"interface"`
	// Netns is the manifest chain's network namespace (see ChainSpec).
	Netns string   `yaml:"netns,omitempty" json:"netns,omitempty"`
	Hook  bpf.Hook `yaml:"hook" json:"hook"`
	// Backend is the manifest's backend (auto is decided per host when
	// applied: kernels differ).
	Backend  string          `yaml:"backend,omitempty" json:"backend,omitempty"`
	Mode     string          `yaml:"mode,omitempty" json:"mode,omitempty"`
	Programs []LockedProgram `yaml:"programs" json:"programs"`
}

// LockedProgram is one program, resolved.
type LockedProgram struct {
	Name string `yaml:"name" json:"name"`
	// Ref is the manifest's reference (tag, digest or range) and
	// Resolved the exact tag it resolved to; Digest the bundle's manifest
	// digest, which is what gets pulled and verified.
	Ref      string `yaml:"ref,omitempty" json:"ref,omitempty"`
	Resolved string `yaml:"resolved,omitempty" json:"resolved,omitempty"`
	Digest   string `yaml:"digest,omitempty" json:"digest,omitempty"`
	// Path is the manifest's local object path.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Object is the sha256 of the ELF object ("sha256:<hex>").
	Object    string            `yaml:"object" json:"object"`
	Signer    *Signer           `yaml:"signer,omitempty" json:"signer,omitempty"`
	Function  string            `yaml:"function" json:"function"`
	Priority  int               `yaml:"priority" json:"priority"`
	ProceedOn []string          `yaml:"proceedOn" json:"proceedOn"`
	Params    map[string]string `yaml:"params,omitempty" json:"params,omitempty"`
	// Counters is false when the program runs without kfm's verdict
	// counters (kfm.yaml's counters, of the program or its chain); unset
	// means on.
	Counters *bool `yaml:"counters,omitempty" json:"counters,omitempty"`
}

// CountersOn reports whether the program counts its verdicts.
func (lp LockedProgram) CountersOn() bool { return lp.Counters == nil || *lp.Counters }

// lockCounters is the Counters field of a locked program: nil when on.
func lockCounters(on bool) *bool {
	if on {
		return nil
	}
	off := false
	return &off
}

// Signer is the signer that was accepted for a bundle: a key (by its
// fingerprint) or a keyless identity (certificate subject and issuer).
// Unsigned records an install with --insecure-allow-unsigned.
type Signer struct {
	Key      string `yaml:"key,omitempty" json:"key,omitempty"`
	Subject  string `yaml:"subject,omitempty" json:"subject,omitempty"`
	Issuer   string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	Unsigned bool   `yaml:"unsigned,omitempty" json:"unsigned,omitempty"`
}

func (s *Signer) String() string {
	switch {
	case s == nil:
		return "none"
	case s.Unsigned:
		return "unsigned"
	case s.Key != "":
		return "key " + s.Key
	default:
		return fmt.Sprintf("%s (issuer %s)", s.Subject, s.Issuer)
	}
}

// Equal reports whether two signers are the same.
func (s *Signer) Equal(o *Signer) bool {
	if s == nil || o == nil {
		return s == o
	}
	return *s == *o
}

// ParseLock reads kfm.lock from r.
func ParseLock(name string, r io.Reader) (*Lock, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d KiB: %w", name, maxFileSize>>10, ErrManifest)
	}
	var l Lock
	if _, err := decodeStrictNode(name, data, &l, false); err != nil {
		return nil, err
	}
	if l.Version != LockVersion {
		return nil, fmt.Errorf("%s: version %d: %w: this kfm reads lock version %d (run kfm lock to rewrite it)", name, l.Version, ErrManifest, LockVersion)
	}
	for _, c := range l.Chains {
		if _, err := bpf.ParseHook(string(c.Hook)); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", name, err, ErrManifest)
		}
		if _, err := NetnsPath(c.Netns); err != nil {
			return nil, fmt.Errorf("%s: %s: %w: %w", name, c.Interface, err, ErrManifest)
		}
		for _, p := range c.Programs {
			if err := ValidateName(p.Name); err != nil {
				return nil, fmt.Errorf("%s: %w: %w", name, err, ErrManifest)
			}
			if (p.Digest == "") == (p.Path == "") {
				return nil, fmt.Errorf("%s: %s/%s program %q needs exactly one of digest and path: %w", name, c.Interface, c.Hook, p.Name, ErrManifest)
			}
			if !strings.HasPrefix(p.Object, "sha256:") {
				return nil, fmt.Errorf("%s: %s/%s program %q: object must be sha256:<hex>: %w", name, c.Interface, c.Hook, p.Name, ErrManifest)
			}
		}
	}
	return &l, nil
}

// LoadLock reads the lock at path.
func LoadLock(path string) (*Lock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseLock(path, f)
}

// Marshal writes the lock as YAML, sorted and stable: chains by interface
// and hook, programs in run order, map keys sorted.
func (l *Lock) Marshal() ([]byte, error) {
	out := Lock{Version: LockVersion, Chains: slices.Clone(l.Chains)}
	slices.SortStableFunc(out.Chains, func(a, b LockedChain) int {
		if c := strings.Compare(a.Netns, b.Netns); c != 0 {
			return c
		}
		if c := strings.Compare(a.Interface, b.Interface); c != 0 {
			return c
		}
		return strings.Compare(string(a.Hook), string(b.Hook))
	})
	for i := range out.Chains {
		progs := slices.Clone(out.Chains[i].Programs)
		slices.SortStableFunc(progs, func(a, b LockedProgram) int {
			if a.Priority != b.Priority {
				return a.Priority - b.Priority
			}
			return strings.Compare(a.Name, b.Name)
		})
		out.Chains[i].Programs = progs
	}
	var buf bytes.Buffer
	buf.WriteString("# kfm.lock: generated by kfm from kfm.yaml; do not edit. Commit it next to kfm.yaml.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&out); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// Chain returns the locked chain for iface and hook in the host's network
// namespace, nil if none.
func (l *Lock) Chain(iface string, hook bpf.Hook) *LockedChain {
	return l.ChainIn("", iface, hook)
}

// ChainIn returns the locked chain for iface and hook in the network
// namespace netns (a path as NetnsPath returns it, "" for the host), nil if
// none.
func (l *Lock) ChainIn(netns, iface string, hook bpf.Hook) *LockedChain {
	for i := range l.Chains {
		if l.Chains[i].NetnsPath() == netns && l.Chains[i].Interface == iface && l.Chains[i].Hook == hook {
			return &l.Chains[i]
		}
	}
	return nil
}

// NetnsPath is the chain's namespace as a path ("" for the host).
func (c LockedChain) NetnsPath() string {
	p, _ := NetnsPath(c.Netns)
	return p
}

// where names a chain in messages: iface/hook, with its namespace.
func where(netns, iface string, hook bpf.Hook) string {
	if netns == "" {
		return iface + "/" + string(hook)
	}
	return netns + ":" + iface + "/" + string(hook)
}

// Satisfies reports whether the lock pins exactly the manifest: the same
// chains, the same programs with the same references or paths, and every
// priority, verdict, function and param the manifest states. It returns nil
// or an error listing the first differences.
func (l *Lock) Satisfies(m *Manifest) error {
	var diffs []string
	for _, c := range m.Chains {
		lc := l.ChainIn(c.NetnsPath(), c.Interface, c.Hook)
		if lc == nil {
			diffs = append(diffs, where(c.Netns, c.Interface, c.Hook)+" is not locked")
			continue
		}
		if c.Backend != lc.Backend || c.Mode != lc.Mode {
			diffs = append(diffs, fmt.Sprintf("%s: backend or mode changed", where(c.Netns, c.Interface, c.Hook)))
		}
		if len(c.Programs) != len(lc.Programs) {
			diffs = append(diffs, fmt.Sprintf("%s: %d programs wanted, %d locked", where(c.Netns, c.Interface, c.Hook), len(c.Programs), len(lc.Programs)))
		}
		for _, p := range c.Programs {
			i := slices.IndexFunc(lc.Programs, func(lp LockedProgram) bool { return lp.Name == p.Name })
			if i < 0 {
				diffs = append(diffs, fmt.Sprintf("%s: %s is not locked", where(c.Netns, c.Interface, c.Hook), p.Name))
				continue
			}
			lp := lc.Programs[i]
			switch {
			case p.Ref != lp.Ref || p.Path != lp.Path:
				diffs = append(diffs, fmt.Sprintf("%s: %s: source changed", where(c.Netns, c.Interface, c.Hook), p.Name))
			case p.Function != "" && p.Function != lp.Function:
				diffs = append(diffs, fmt.Sprintf("%s: %s: function changed", where(c.Netns, c.Interface, c.Hook), p.Name))
			case p.Priority != nil && *p.Priority != lp.Priority:
				diffs = append(diffs, fmt.Sprintf("%s: %s: priority %d wanted, %d locked", where(c.Netns, c.Interface, c.Hook), p.Name, *p.Priority, lp.Priority))
			case len(p.ProceedOn) > 0 && !sameActions(c.Hook, p.ProceedOn, lp.ProceedOn):
				diffs = append(diffs, fmt.Sprintf("%s: %s: proceed-on changed", where(c.Netns, c.Interface, c.Hook), p.Name))
			case !maps.Equal(p.Params, lp.Params) && !(len(p.Params) == 0 && len(lp.Params) == 0):
				diffs = append(diffs, fmt.Sprintf("%s: %s: params changed", where(c.Netns, c.Interface, c.Hook), p.Name))
			case c.CountersOn(p) != lp.CountersOn():
				diffs = append(diffs, fmt.Sprintf("%s: %s: counters switched", where(c.Netns, c.Interface, c.Hook), p.Name))
			}
		}
	}
	for _, lc := range l.Chains {
		if m.ChainIn(lc.NetnsPath(), lc.Interface, lc.Hook) == nil {
			diffs = append(diffs, fmt.Sprintf("%s is locked but no longer wanted", where(lc.Netns, lc.Interface, lc.Hook)))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return fmt.Errorf("%w: %s (run kfm lock)", ErrLockMismatch, strings.Join(diffs, "; "))
}

func sameActions(h bpf.Hook, a, b []string) bool {
	x, err1 := bpf.ParseActions(h, strings.Join(a, ","))
	y, err2 := bpf.ParseActions(h, strings.Join(b, ","))
	return err1 == nil && err2 == nil && slices.Equal(x, y)
}
