package chain

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/yamlfile"
)

// ManifestVersion is the kfm.yaml format version kfm writes and reads.
const ManifestVersion = 1

// ErrManifest wraps every error about the contents of kfm.yaml or kfm.lock;
// messages start with file:line.
var ErrManifest = errors.New("invalid manifest")

// ErrLockMismatch: kfm.lock does not pin what kfm.yaml asks for (apply
// --locked refuses to run).
var ErrLockMismatch = errors.New("kfm.lock does not match kfm.yaml")

// Manifest is kfm.yaml: the chains a host wants.
//
//	version: 1
//	chains:
//	  - interface: eth0
//	    netns: blue            # optional: a network namespace, NAME (/run/netns/NAME) or PATH
//	    hook: xdp
//	    backend: auto          # optional: auto, dispatcher, tailcall, tcx, tc
//	    mode: native           # optional, XDP only: native or skb
//	    programs:
//	      - name: ratelimit
//	        ref: registry.example.com/net/xdp-ratelimit:^1.2   # tag, @digest or semver range
//	        priority: 10
//	        params: {rate: 1000, burst: 50}
//	      - name: count
//	        path: /opt/ebpf/xdp_count.o                        # a local object, for development
type Manifest struct {
	Version int         `yaml:"version" json:"version"`
	Chains  []ChainSpec `yaml:"chains" json:"chains"`

	// doc is the parsed file, kept so that Marshal edits it in place and
	// keeps the user's comments and order; parsed from raw, the file's
	// content, when Marshal first needs it (see parsedDoc).
	doc *yaml.Node
	raw []byte
}

// ChainSpec is the chain wanted on one hook of one interface.
type ChainSpec struct {
	Interface string `yaml:"interface" json:"interface"`
	// Netns is the network namespace of the interface: empty for the
	// namespace kfm runs in, a NAME for /run/netns/NAME, or an absolute
	// path (a bind mount or /proc/PID/ns/net). kfm keeps using the host's
	// BPF filesystem, state and configuration for it.
	Netns   string   `yaml:"netns,omitempty" json:"netns,omitempty"`
	Hook    bpf.Hook `yaml:"hook" json:"hook"`
	Backend string   `yaml:"backend,omitempty" json:"backend,omitempty"`
	Mode    string   `yaml:"mode,omitempty" json:"mode,omitempty"`
	// Counters switches kfm's verdict counters (see package bpf/counters)
	// for the chain's programs; unset means on. A program's own Counters
	// wins.
	Counters *bool         `yaml:"counters,omitempty" json:"counters,omitempty"`
	Programs []ProgramSpec `yaml:"programs" json:"programs"`

	line int
}

// ProgramSpec is one program wanted in a chain. Exactly one of Ref and
// Path is set.
type ProgramSpec struct {
	Name string `yaml:"name" json:"name"`
	// Ref is a registry reference: host/repo:tag, host/repo@sha256:...,
	// or host/repo:RANGE with a semver range (^1.2, ~1.4.0, >=1.0 <2)
	// resolved against the repository's tags. Whatever is not a valid
	// OCI tag after the last ':' is a range.
	Ref string `yaml:"ref,omitempty" json:"ref,omitempty"`
	// Path is a local object file (development).
	Path      string            `yaml:"path,omitempty" json:"path,omitempty"`
	Function  string            `yaml:"function,omitempty" json:"function,omitempty"`
	Priority  *int              `yaml:"priority,omitempty" json:"priority,omitempty"`
	ProceedOn []string          `yaml:"proceedOn,omitempty" json:"proceedOn,omitempty"`
	Params    map[string]string `yaml:"params,omitempty" json:"params,omitempty"`
	// Counters switches kfm's verdict counters for this program; unset
	// means the chain's setting.
	Counters *bool `yaml:"counters,omitempty" json:"counters,omitempty"`

	line int
}

// CountersOn reports whether program p of chain c counts its verdicts:
// p's setting, else c's, else on.
func (c *ChainSpec) CountersOn(p ProgramSpec) bool {
	switch {
	case p.Counters != nil:
		return *p.Counters
	case c.Counters != nil:
		return *c.Counters
	}
	return true
}

// Line is where the program is declared in its file (0 if unknown).
func (p ProgramSpec) Line() int { return p.line }

// ParseManifest reads kfm.yaml from r; name prefixes error messages.
// Unknown keys are errors that name their line.
func ParseManifest(name string, r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	return parseManifest(name, data)
}

// parseManifest is ParseManifest of the file's content. The document's
// node tree, which Marshal edits, is parsed again only when Marshal runs
// (most commands never write kfm.yaml).
func parseManifest(name string, data []byte) (*Manifest, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d KiB: %w", name, maxFileSize>>10, ErrManifest)
	}
	var m Manifest
	root, err := decodeStrict(name, data, &m)
	if err != nil {
		return nil, err
	}
	if root != nil {
		chains := yamlfile.MapValue(root, "chains")
		for i := range m.Chains {
			if c := yamlfile.SeqItem(chains, i); c != nil {
				m.Chains[i].line = c.Line
				progs := yamlfile.MapValue(c, "programs")
				for j := range m.Chains[i].Programs {
					if p := yamlfile.SeqItem(progs, j); p != nil {
						m.Chains[i].Programs[j].line = p.Line
					}
				}
			}
		}
	}
	if err := m.validate(name); err != nil {
		return nil, err
	}
	m.raw = data
	return &m, nil
}

// parsedDoc is the document Marshal edits: the file m was read from,
// parsed into nodes; nil for a manifest not read from a file.
func (m *Manifest) parsedDoc() *yaml.Node {
	if m.doc == nil && m.raw != nil {
		var doc yaml.Node
		if err := yaml.Unmarshal(m.raw, &doc); err == nil && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
			m.doc = &doc
		}
		m.raw = nil
	}
	return m.doc
}

// LoadManifest reads the manifest at path.
func LoadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseManifest(path, f)
}

// maxFileSize bounds kfm.yaml and kfm.lock (1 MiB).
const maxFileSize = 1 << 20

// decodeStrict decodes YAML into v, refusing unknown keys, and returns the
// document's root mapping node for line lookups.
func decodeStrict(name string, data []byte, v any) (*yaml.Node, error) {
	return decodeStrictNode(name, data, v, true)
}

// decodeStrictNode is decodeStrict, returning no node (and parsing the
// document once) unless withNode.
func decodeStrictNode(name string, data []byte, v any, withNode bool) (*yaml.Node, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: empty file: %w", name, ErrManifest)
	}
	var root *yaml.Node
	var err error
	if withNode {
		root, err = yamlfile.DecodeStrict(data, v)
	} else {
		err = yamlfile.DecodeStrictValue(data, v)
	}
	if err != nil {
		line, msg := yamlfile.ErrorLine(err)
		if line > 0 {
			msg = fmt.Sprintf("line %d: %s", line, msg)
		}
		return nil, fmt.Errorf("%s: %w: %s", name, ErrManifest, msg)
	}
	return root, nil
}

func at(name string, line int) string {
	if line > 0 {
		return name + ":" + strconv.Itoa(line)
	}
	return name
}

var validBackends = []string{"", BackendAuto, "dispatcher", "tailcall", "tcx", "tc"}

func (m *Manifest) validate(name string) error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("%s: version %d: %w: this kfm reads version %d (add `version: %d`)", name, m.Version, ErrManifest, ManifestVersion, ManifestVersion)
	}
	hooks := map[string]int{}
	for _, c := range m.Chains {
		where := at(name, c.line)
		if c.Interface == "" {
			return fmt.Errorf("%s: chain without interface: %w", where, ErrManifest)
		}
		if _, err := bpf.ParseHook(string(c.Hook)); err != nil {
			return fmt.Errorf("%s: %w: %w", where, err, ErrManifest)
		}
		key := c.Interface + "/" + string(c.Hook)
		if c.Netns != "" {
			path, err := NetnsPath(c.Netns)
			if err != nil {
				return fmt.Errorf("%s: %w: %w", where, err, ErrManifest)
			}
			key = path + ":" + key
		}
		if prev, dup := hooks[key]; dup {
			return fmt.Errorf("%s: a second chain for %s (the first is on line %d): %w", where, key, prev, ErrManifest)
		}
		hooks[key] = c.line
		if !slices.Contains(validBackends, c.Backend) {
			return fmt.Errorf("%s: unknown backend %q (use auto, dispatcher, tailcall, tcx or tc): %w", where, c.Backend, ErrManifest)
		}
		if c.Mode != "" && (c.Hook != bpf.HookXDP || (c.Mode != "native" && c.Mode != "skb")) {
			return fmt.Errorf("%s: mode %q: only XDP chains have a mode, native or skb: %w", where, c.Mode, ErrManifest)
		}
		names := map[string]int{}
		for _, p := range c.Programs {
			where := at(name, p.line)
			if err := ValidateName(p.Name); err != nil {
				return fmt.Errorf("%s: %w: %w", where, err, ErrManifest)
			}
			if prev, dup := names[p.Name]; dup {
				return fmt.Errorf("%s: a second program named %q in the %s chain (the first is on line %d): %w", where, p.Name, key, prev, ErrManifest)
			}
			names[p.Name] = p.line
			if (p.Ref == "") == (p.Path == "") {
				return fmt.Errorf("%s: program %q needs exactly one of ref and path: %w", where, p.Name, ErrManifest)
			}
			if len(p.ProceedOn) > 0 {
				if _, err := bpf.ParseActions(c.Hook, strings.Join(p.ProceedOn, ",")); err != nil {
					return fmt.Errorf("%s: program %q: %w: %w", where, p.Name, err, ErrManifest)
				}
			}
		}
	}
	return nil
}

// Chain returns the chain for iface and hook in the host's network
// namespace, nil if there is none.
func (m *Manifest) Chain(iface string, hook bpf.Hook) *ChainSpec {
	return m.ChainIn("", iface, hook)
}

// ChainIn returns the chain for iface and hook in the network namespace
// netns (a path as NetnsPath returns it, "" for the host), nil if there is
// none.
func (m *Manifest) ChainIn(netns, iface string, hook bpf.Hook) *ChainSpec {
	for i := range m.Chains {
		if m.Chains[i].NetnsPath() == netns && m.Chains[i].Interface == iface && m.Chains[i].Hook == hook {
			return &m.Chains[i]
		}
	}
	return nil
}

// NetnsPath is the chain's namespace as a path ("" for the host); a
// manifest that validated has a valid one.
func (c ChainSpec) NetnsPath() string {
	p, _ := NetnsPath(c.Netns)
	return p
}

// Marshal writes the manifest as YAML. A manifest read from a file is
// written back as an edit of that file: comments, key order and the order
// of chains and programs stay, changed programs are rewritten, new ones are
// added at the end of their chain. A new manifest has its chains sorted by
// interface and hook.
func (m *Manifest) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if doc := m.parsedDoc(); doc != nil {
		if err := m.edit(doc.Content[0]); err != nil {
			return nil, err
		}
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		return buf.Bytes(), enc.Close()
	}
	out := *m
	out.Version = ManifestVersion
	out.Chains = slices.Clone(m.Chains)
	slices.SortStableFunc(out.Chains, func(a, b ChainSpec) int {
		if c := strings.Compare(a.Netns, b.Netns); c != 0 {
			return c
		}
		if c := strings.Compare(a.Interface, b.Interface); c != 0 {
			return c
		}
		return strings.Compare(string(a.Hook), string(b.Hook))
	})
	buf.WriteString("# kfm.yaml: the chains this host wants. `kfm install` and `kfm remove` edit it;\n# `kfm apply` makes the kernel match it (see kfm.lock for what exactly runs).\n")
	if err := enc.Encode(&out); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// edit makes the mapping node root say what m says, touching only what
// differs.
func (m *Manifest) edit(root *yaml.Node) error {
	setScalar(root, "version", strconv.Itoa(ManifestVersion), "!!int")
	chains := yamlfile.MapValue(root, "chains")
	if chains == nil {
		chains = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "chains"}, chains)
	}
	done := map[string]bool{}
	var kept []*yaml.Node
	for _, cn := range chains.Content {
		var old ChainSpec
		if err := cn.Decode(&old); err != nil {
			return err
		}
		want := m.ChainIn(old.NetnsPath(), old.Interface, old.Hook)
		if want == nil {
			continue // removed
		}
		if err := editChain(cn, old, want); err != nil {
			return err
		}
		kept = append(kept, cn)
		done[old.NetnsPath()+":"+old.Interface+"/"+string(old.Hook)] = true
	}
	for i := range m.Chains {
		c := &m.Chains[i]
		if done[c.NetnsPath()+":"+c.Interface+"/"+string(c.Hook)] {
			continue
		}
		var n yaml.Node
		if err := n.Encode(c); err != nil {
			return err
		}
		kept = append(kept, &n)
	}
	chains.Content = kept
	if len(kept) > 0 {
		chains.Style = 0 // block style once there is something in it
	}
	return nil
}

func editChain(cn *yaml.Node, old ChainSpec, want *ChainSpec) error {
	setScalar(cn, "backend", want.Backend, "!!str")
	setScalar(cn, "mode", want.Mode, "!!str")
	counters := ""
	if want.Counters != nil {
		counters = strconv.FormatBool(*want.Counters)
	}
	setScalar(cn, "counters", counters, "!!bool")
	progs := yamlfile.MapValue(cn, "programs")
	if progs == nil {
		progs = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		cn.Content = append(cn.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "programs"}, progs)
	}
	done := map[string]bool{}
	var kept []*yaml.Node
	for i, pn := range progs.Content {
		if i >= len(old.Programs) {
			break
		}
		was := old.Programs[i]
		j := slices.IndexFunc(want.Programs, func(p ProgramSpec) bool { return p.Name == was.Name })
		if j < 0 {
			continue // removed
		}
		done[was.Name] = true
		now := want.Programs[j]
		was.line, now.line = 0, 0
		if reflect.DeepEqual(was, now) {
			kept = append(kept, pn)
			continue
		}
		var n yaml.Node
		if err := n.Encode(now); err != nil {
			return err
		}
		n.HeadComment, n.LineComment, n.FootComment = pn.HeadComment, pn.LineComment, pn.FootComment
		kept = append(kept, &n)
	}
	for _, p := range want.Programs {
		if done[p.Name] {
			continue
		}
		var n yaml.Node
		if err := n.Encode(p); err != nil {
			return err
		}
		kept = append(kept, &n)
	}
	progs.Content = kept
	if len(kept) > 0 {
		progs.Style = 0
	}
	return nil
}

// setScalar sets key to value in mapping n, adding the key when it is
// missing, and removes it when value is empty.
func setScalar(n *yaml.Node, key, value, tag string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != key {
			continue
		}
		if value == "" {
			n.Content = append(n.Content[:i], n.Content[i+2:]...)
			return
		}
		n.Content[i+1].Kind, n.Content[i+1].Tag, n.Content[i+1].Value = yaml.ScalarNode, tag, value
		return
	}
	if value != "" {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
	}
}
