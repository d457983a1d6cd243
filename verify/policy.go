package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"oras.land/oras-go/v2/registry"

	"github.com/kfm-project/kfm/internal/yamlfile"
)

// PolicyVersion is the policy.yaml format version kfm reads.
const PolicyVersion = 1

// maxPolicySize bounds policy.yaml, trusted_root.json and key files (1 MiB
// each).
const maxPolicySize = 1 << 20

// Policy is a trust policy (policy.yaml): which signers kfm accepts for which
// repositories.
//
//	version: 1
//	rules:
//	  # first matching rule decides; a reference no rule matches is refused
//	  - match: registry.example.com/net/experimental/**
//	    deny: true                       # refused whatever the signatures
//	  - match: registry.example.com/net/*
//	    keys:                            # PEM file (relative to this file),
//	      - keys/net-team.pub            # KMS URI, or inline PEM
//	      - awskms:///arn:aws:kms:eu-west-1:123456789012:key/abcd
//	    keyless:                         # Fulcio certificates, verified offline
//	      trustedRoot: trusted_root.json # sigstore trusted root (relative to this file)
//	      identities:                    # any one suffices
//	        - issuer: https://token.actions.githubusercontent.com
//	          subject: https://github.com/example/net/.github/workflows/release.yml@refs/heads/main
//	        - issuerRegexp: ^https://accounts\.google\.com$
//	          subjectRegexp: ^[a-z]+@example\.com$
//	    capabilities:                    # what accepted programs may do (see Capabilities)
//	      modifyPackets: false
//	      allowHelpers: [bpf_trace_printk]
//	localCapabilities:                   # the same, for local object files
//	  readOnlyObserver: true
//
// A match pattern is a repository glob: "*" matches within one path
// segment, "**" across segments, "?" one character other than "/". Patterns
// name repositories ("registry/path"), never tags or digests: what is
// trusted is a signer for a repository, and what is verified is always a
// digest.
type Policy struct {
	// Source names the policy in messages (its file path, or a description
	// such as "--key flag").
	Source string
	Rules  []Rule
	// Local limits what local object files (not from a registry, so no
	// rule matches them) may do; nil applies the built-in default denies
	// only. YAML: top-level `localCapabilities:`.
	Local *Capabilities
}

// Rule is one rule of a Policy.
type Rule struct {
	// Match is the repository glob.
	Match string
	// Deny refuses every matching reference.
	Deny bool
	// Keys are the accepted public keys.
	Keys []*PublicKey
	// Keyless accepts Fulcio certificates of the listed identities,
	// chained to the trusted root's certificate authorities.
	Keyless *Keyless
	// Capabilities limit what accepted programs may do (nil: only the
	// built-in default denies); see Capabilities.
	Capabilities *Capabilities
	// Line is the rule's line in its file (0 for rules built in code).
	Line int

	re *regexp.Regexp
}

// Keyless is the keyless part of a rule.
type Keyless struct {
	// TrustedRootPath is where the trusted root was read from.
	TrustedRootPath string
	// TrustedRoot holds the certificate authorities, transparency logs,
	// timestamp authorities and CT logs to verify against.
	TrustedRoot root.TrustedMaterial
	// Identities are the accepted certificate identities; any one suffices.
	Identities []Identity

	ids sgverify.CertificateIdentities
}

// Identity is an accepted certificate identity: the OIDC issuer and the
// subject (the certificate's subject alternative name: e-mail, URI...), each
// exact or a regular expression (Go RE2 syntax, unanchored unless you anchor
// it).
type Identity struct {
	Issuer        string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	IssuerRegexp  string `yaml:"issuerRegexp,omitempty" json:"issuerRegexp,omitempty"`
	Subject       string `yaml:"subject,omitempty" json:"subject,omitempty"`
	SubjectRegexp string `yaml:"subjectRegexp,omitempty" json:"subjectRegexp,omitempty"`
}

func (id Identity) String() string {
	s, i := id.Subject, id.Issuer
	if s == "" {
		s = "~" + id.SubjectRegexp
	}
	if i == "" {
		i = "~" + id.IssuerRegexp
	}
	return fmt.Sprintf("%s (issuer %s)", s, i)
}

// NewKeyless checks the identities and returns the keyless trust they make
// with tr.
func NewKeyless(trustedRootPath string, tr root.TrustedMaterial, ids ...Identity) (*Keyless, error) {
	if tr == nil {
		return nil, errors.New("keyless verification needs a trusted root (trusted_root.json)")
	}
	if len(ids) == 0 {
		return nil, errors.New("keyless verification needs at least one identity (issuer and subject)")
	}
	k := &Keyless{TrustedRootPath: trustedRootPath, TrustedRoot: tr, Identities: ids}
	for _, id := range ids {
		switch {
		case (id.Issuer == "") == (id.IssuerRegexp == ""):
			return nil, fmt.Errorf("identity %s: give exactly one of issuer and issuerRegexp", id)
		case (id.Subject == "") == (id.SubjectRegexp == ""):
			return nil, fmt.Errorf("identity %s: give exactly one of subject and subjectRegexp", id)
		}
		ci, err := sgverify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegexp, id.Subject, id.SubjectRegexp)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", id, err)
		}
		k.ids = append(k.ids, ci)
	}
	return k, nil
}

// LoadTrustedRoot reads a sigstore trusted root (trusted_root.json, media
// type application/vnd.dev.sigstore.trustedroot+json). Nothing is fetched:
// keyless verification is offline against exactly this file.
func LoadTrustedRoot(path string) (*root.TrustedRoot, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not a sigstore trusted root: %w", path, err)
	}
	return tr, nil
}

// readCapped reads the regular file path, at most maxPolicySize bytes.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("%s: larger than %d KiB", path, maxPolicySize>>10)
	}
	return data, nil
}

// Match returns the first rule matching ref (a reference such as
// "registry.example.com/net/ratelimit:1.2.0" or "...@sha256:..."; only its
// repository counts). Without one it fails with ErrUntrusted.
func (p *Policy) Match(ref string) (*Rule, error) {
	repo, err := repositoryOf(ref)
	if err != nil {
		return nil, err
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.re == nil {
			re, err := compileGlob(r.Match)
			if err != nil {
				return nil, fmt.Errorf("%s: rule %q: %w", p.Source, r.Match, err)
			}
			r.re = re
		}
		if r.re.MatchString(repo) {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: no rule of %s matches %s: add a rule whose match covers it", ErrUntrusted, p.Source, repo)
}

// Where names the rule for messages: "policy.yaml:12 (registry.example.com/net/*)".
func (r *Rule) where(source string) string {
	if r.Line > 0 {
		return fmt.Sprintf("%s:%d (%s)", source, r.Line, r.Match)
	}
	return fmt.Sprintf("%s (%s)", source, r.Match)
}

// repositoryOf returns "registry/repository" of a reference.
func repositoryOf(ref string) (string, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	return r.Registry + "/" + r.Repository, nil
}

// compileGlob turns a repository glob into an anchored regular expression.
func compileGlob(pattern string) (*regexp.Regexp, error) {
	if pattern == "" {
		return nil, errors.New("empty match pattern")
	}
	if strings.ContainsAny(pattern, "@ \t\n") {
		return nil, fmt.Errorf("match %q: a pattern names repositories: no digests, no blanks", pattern)
	}
	if i := strings.IndexByte(pattern, '/'); i >= 0 && strings.Contains(pattern[i:], ":") {
		return nil, fmt.Errorf("match %q: a pattern names repositories, not tags (drop the :tag)", pattern)
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			if i+1 < len(pattern) && pattern[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// The YAML form. Decoding is strict (unknown keys are errors); lines come
// from a parallel walk of the node tree.
type policyFile struct {
	Version           int           `yaml:"version"`
	Rules             []ruleFile    `yaml:"rules"`
	LocalCapabilities *Capabilities `yaml:"localCapabilities"`
}

type ruleFile struct {
	Match   string       `yaml:"match"`
	Deny    bool         `yaml:"deny"`
	Keys    []string     `yaml:"keys"`
	Keyless *keylessFile `yaml:"keyless"`
	// Capabilities limit what accepted programs may do.
	Capabilities *Capabilities `yaml:"capabilities"`
}

type keylessFile struct {
	TrustedRoot string     `yaml:"trustedRoot"`
	Identities  []Identity `yaml:"identities"`
}

// LoadPolicy reads the trust policy at path. Key files and trusted roots it
// names are read relative to its directory; KMS keys are resolved now. A
// missing or unreadable file is an error wrapping fs.ErrNotExist or
// fs.ErrPermission; anything wrong inside it wraps ErrPolicy.
func LoadPolicy(ctx context.Context, path string) (*Policy, error) {
	data, err := readCapped(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("trust policy: %w", err)
		}
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return ParsePolicy(ctx, path, data, filepath.Dir(path))
}

// ParsePolicy parses a trust policy. name prefixes messages ("name:line:
// ..."); dir is where relative paths in it are resolved.
func ParsePolicy(ctx context.Context, name string, data []byte, dir string) (*Policy, error) {
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("%s: %w: larger than %d KiB", name, ErrPolicy, maxPolicySize>>10)
	}
	fail := func(line int, format string, args ...any) error {
		where := name
		if line > 0 {
			where += ":" + strconv.Itoa(line)
		}
		return fmt.Errorf("%s: %w: %s", where, ErrPolicy, fmt.Sprintf(format, args...))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fail(0, "empty file (a policy needs `version: %d` and rules)", PolicyVersion)
	}
	var pf policyFile
	top, err := yamlfile.DecodeStrict(data, &pf)
	if err != nil {
		line, msg := yamlfile.ErrorLine(err)
		return nil, fail(line, "%s", msg)
	}
	if top == nil {
		return nil, fail(0, "not a YAML mapping")
	}
	if pf.Version != PolicyVersion {
		return nil, fail(yamlfile.LineOf(yamlfile.MapValue(top, "version"), top), "version %d: this kfm reads version %d (add `version: %d`)", pf.Version, PolicyVersion, PolicyVersion)
	}
	if len(pf.Rules) == 0 {
		return nil, fail(yamlfile.LineOf(yamlfile.MapValue(top, "rules"), top), "no rules: every reference would be refused (add rules, see `kfm verify --help`)")
	}
	rulesNode := yamlfile.MapValue(top, "rules")
	p := &Policy{Source: name, Local: pf.LocalCapabilities}
	if p.Local != nil {
		if err := p.Local.check(); err != nil {
			return nil, fail(yamlfile.LineOf(yamlfile.MapValue(top, "localCapabilities"), top), "localCapabilities: %v", err)
		}
	}
	for i, rf := range pf.Rules {
		rn := yamlfile.SeqItem(rulesNode, i)
		line := yamlfile.LineOf(rn, top)
		r := Rule{Match: rf.Match, Deny: rf.Deny, Line: line, Capabilities: rf.Capabilities}
		if c := rf.Capabilities; c != nil {
			if err := c.check(); err != nil {
				return nil, fail(yamlfile.LineOf(yamlfile.MapValue(rn, "capabilities"), rn), "rule %d (%s): capabilities: %v", i+1, rf.Match, err)
			}
		}
		re, err := compileGlob(rf.Match)
		if err != nil {
			return nil, fail(yamlfile.LineOf(yamlfile.MapValue(rn, "match"), rn), "rule %d: %v", i+1, err)
		}
		r.re = re
		if rf.Deny {
			if len(rf.Keys) > 0 || rf.Keyless != nil || rf.Capabilities != nil {
				return nil, fail(line, "rule %d (%s): deny: true takes no keys, keyless or capabilities", i+1, rf.Match)
			}
			p.Rules = append(p.Rules, r)
			continue
		}
		if len(rf.Keys) == 0 && rf.Keyless == nil {
			return nil, fail(line, "rule %d (%s): accepts nothing: add keys or keyless (or `deny: true`)", i+1, rf.Match)
		}
		keysNode := yamlfile.MapValue(rn, "keys")
		for j, k := range rf.Keys {
			kl := yamlfile.LineOf(yamlfile.SeqItem(keysNode, j), rn)
			pk, err := loadPolicyKey(ctx, k, dir)
			if err != nil {
				return nil, fail(kl, "rule %d (%s): key %d: %v", i+1, rf.Match, j+1, err)
			}
			r.Keys = append(r.Keys, pk)
		}
		if kf := rf.Keyless; kf != nil {
			kn := yamlfile.MapValue(rn, "keyless")
			if kf.TrustedRoot == "" {
				return nil, fail(yamlfile.LineOf(kn, rn), "rule %d (%s): keyless needs trustedRoot (a sigstore trusted_root.json)", i+1, rf.Match)
			}
			trPath := kf.TrustedRoot
			if !filepath.IsAbs(trPath) {
				trPath = filepath.Join(dir, trPath)
			}
			tr, err := LoadTrustedRoot(trPath)
			if err != nil {
				return nil, fail(yamlfile.LineOf(yamlfile.MapValue(kn, "trustedRoot"), kn), "rule %d (%s): %v", i+1, rf.Match, err)
			}
			idsNode := yamlfile.MapValue(kn, "identities")
			if len(kf.Identities) == 0 {
				return nil, fail(yamlfile.LineOf(idsNode, kn), "rule %d (%s): keyless needs identities (issuer and subject)", i+1, rf.Match)
			}
			for j, id := range kf.Identities {
				if _, err := NewKeyless(trPath, tr, id); err != nil {
					return nil, fail(yamlfile.LineOf(yamlfile.SeqItem(idsNode, j), kn), "rule %d (%s): %v", i+1, rf.Match, err)
				}
			}
			r.Keyless, _ = NewKeyless(trPath, tr, kf.Identities...)
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func loadPolicyKey(ctx context.Context, k, dir string) (*PublicKey, error) {
	k = strings.TrimSpace(k)
	switch {
	case k == "":
		return nil, errors.New("empty key")
	case strings.HasPrefix(k, "-----BEGIN"):
		return ParsePublicKey("inline", []byte(k))
	case isKMS(k):
		return LoadPublicKey(ctx, k)
	}
	if !filepath.IsAbs(k) {
		k = filepath.Join(dir, k)
	}
	return LoadPublicKey(ctx, k)
}
