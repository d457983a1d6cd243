package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

// Errors of Sources.
var (
	// ErrNoPolicy: a registry program needs a trust policy and there is
	// none (and --insecure-allow-unsigned was not given).
	ErrNoPolicy = errors.New("no trust policy")
	// ErrSignerChanged: apply --locked found the locked digest signed, but
	// not by the signer the lock recorded.
	ErrSignerChanged = errors.New("signer changed since the lock was written")
	// ErrObjectChanged: a local object file no longer has the locked
	// content.
	ErrObjectChanged = errors.New("object changed since the lock was written")
	// ErrNoVersion: no tag of the repository satisfies a semver range.
	ErrNoVersion = errors.New("no version satisfies the range")
)

// Sources fetches, verifies and reads the programs that kfm.yaml names:
// local object files, and bundles from OCI registries, verified against the
// trust policy before anything is loaded.
type Sources struct {
	// Registry pulls bundles into the local cache; nil allows local files
	// only.
	Registry *registry.Client
	// Policy decides whose signatures are accepted. Without a policy every
	// registry program is refused unless AllowUnsigned is set.
	Policy *verify.Policy
	// PolicyPath names the policy in messages.
	PolicyPath string
	// AllowUnsigned installs registry programs whose signatures do not
	// verify (--insecure-allow-unsigned), with a warning every time.
	AllowUnsigned bool
	// Offline uses only the cache: tags resolve to the digest they were
	// last pulled at.
	Offline bool
	// BaseDir is where relative paths of kfm.yaml start (its directory).
	BaseDir string
	// Warn receives warnings for the user.
	Warn func(msg string)

	// memo keeps what one run learnt per reference and object (see
	// memo.go) for as long as this Sources lives: make a Sources per
	// command or per reconcile, never one for a process's lifetime, or a
	// changed trust policy or tag would not be seen.
	memo memo
}

func (s *Sources) warn(format string, args ...any) {
	if s.Warn != nil {
		s.Warn(fmt.Sprintf(format, args...))
	}
}

// ociTag reports whether tag is what the distribution spec allows as a
// tag: ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ (no regexp compiled at start-up).
func ociTag(tag string) bool {
	if len(tag) == 0 || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// splitRange splits "host/repo:RANGE" into "host/repo" and the range when
// the part after the last ':' of the last path element is not a valid tag.
func splitRange(ref string) (repo, constraint string, ok bool) {
	if strings.Contains(ref, "@") {
		return "", "", false
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon < 0 || colon < slash {
		return "", "", false
	}
	tag := ref[colon+1:]
	if ociTag(tag) {
		return "", "", false
	}
	return ref[:colon], tag, true
}

// resolveRange picks the newest tag of repo that satisfies constraint.
func (s *Sources) resolveRange(ctx context.Context, repo, constraint string) (string, error) {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("%s:%s: %q is neither a tag nor a semver range: %w", repo, constraint, constraint, err)
	}
	tags, err := s.tags(ctx, repo)
	if err != nil {
		return "", err
	}
	var best *semver.Version
	var bestTag string
	for _, t := range tags {
		v, err := semver.NewVersion(t)
		if err != nil || !c.Check(v) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestTag = v, t
		}
	}
	if best == nil {
		return "", fmt.Errorf("%s: none of its %d tags satisfies %s: %w", repo, len(tags), constraint, ErrNoVersion)
	}
	return bestTag, nil
}

// tags lists the tags of repo: from the registry, or from the cache when
// offline.
func (s *Sources) tags(ctx context.Context, repo string) ([]string, error) {
	ref, err := registry.ParseReference(repo)
	if err != nil {
		return nil, err
	}
	if s.Offline {
		all, err := s.Registry.Cache().Tags(ctx)
		if err != nil {
			return nil, err
		}
		var out []string
		prefix := ref.Repo() + ":"
		for _, t := range all {
			if strings.HasPrefix(t, prefix) {
				out = append(out, strings.TrimPrefix(t, prefix))
			}
		}
		return out, nil
	}
	r, err := s.Registry.Repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	var out []string
	if err := r.Tags(ctx, "", func(ts []string) error { out = append(out, ts...); return nil }); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", ref.Repo(), err)
	}
	return out, nil
}

// pulled is a bundle in the cache with what verification said of it.
type pulled struct {
	bundle *registry.Bundle
	signer *Signer
}

// pull brings ref into the cache with its signatures, verifies it, and
// opens it. strict, when set, is the signer the lock recorded and must be
// among those that verified.
func (s *Sources) pull(ctx context.Context, ref registry.Reference, strict *Signer) (*pulled, error) {
	// A reference is resolved, fetched, verified and opened once per run,
	// however many chains use it (and a tag names the same digest in
	// all of them).
	return s.memo.pulled(ref.String()+"\x00"+signerKey(strict), func() (*pulled, error) { return s.pullOnce(ctx, ref, strict) })
}

func (s *Sources) pullOnce(ctx context.Context, ref registry.Reference, strict *Signer) (*pulled, error) {
	if s.Registry == nil {
		return nil, fmt.Errorf("%s: no registry client", ref)
	}
	// The signatures come at the same time as a bundle not cached yet,
	// when they are to be verified.
	opts := registry.PullOptions{Offline: s.Offline, Signatures: s.Policy != nil && (strict == nil || !strict.Unsigned)}
	pinned, desc, err := s.Registry.Resolve(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	if err := s.Registry.Fetch(ctx, pinned, desc, opts); err != nil {
		return nil, err
	}
	signer, err := s.verify(ctx, pinned, desc, strict)
	if err != nil {
		return nil, err
	}
	b, err := s.Registry.Open(ctx, pinned)
	if err != nil {
		return nil, err
	}
	return &pulled{bundle: b, signer: signer}, nil
}

// Verify checks the signatures of a bundle that is in the cache (pinned by
// digest) against the policy, fetching signatures from the registry first
// unless offline. It returns the accepted signer; with AllowUnsigned a
// refusal becomes a warning and an unsigned signer.
func (s *Sources) Verify(ctx context.Context, pinned registry.Reference, desc ocispec.Descriptor) (*Signer, error) {
	return s.verify(ctx, pinned, desc, nil)
}

// verify checks the cached bundle's signatures against the policy. It
// fetches the signatures from the registry unless offline; when the cache
// already holds an accepted signature no network is needed.
func (s *Sources) verify(ctx context.Context, pinned registry.Reference, desc ocispec.Descriptor, strict *Signer) (*Signer, error) {
	if strict != nil && strict.Unsigned {
		if !s.AllowUnsigned {
			return nil, fmt.Errorf("%s was locked unsigned (installed with --insecure-allow-unsigned): pass --insecure-allow-unsigned again or re-lock it signed: %w", pinned, verify.ErrUnsigned)
		}
		s.warn("WARNING: %s is accepted WITHOUT signature verification (--insecure-allow-unsigned)", pinned)
		return &Signer{Unsigned: true}, nil
	}
	if s.Policy == nil {
		if s.AllowUnsigned {
			s.warn("WARNING: %s is accepted WITHOUT signature verification (--insecure-allow-unsigned; no trust policy at %s)", pinned, s.PolicyPath)
			return &Signer{Unsigned: true}, nil
		}
		return nil, fmt.Errorf("%s: %w at %s: write one that trusts the publisher's key (see `kfm verify --help`), or pass --insecure-allow-unsigned", pinned, ErrNoPolicy, s.PolicyPath)
	}
	check := func() (*verify.Result, error) {
		return verify.Verify(ctx, s.Registry.Cache(), pinned.String(), desc, s.Policy, &verify.VerifyOptions{FullReferenceTags: true})
	}
	res, err := check()
	if (err != nil || (strict != nil && !res.Accepts(toVerifySigner(strict)))) && !s.Offline {
		// The cache may lack signatures added since: fetch them.
		if _, ferr := s.Registry.FetchReferrers(ctx, pinned); ferr != nil {
			return nil, fmt.Errorf("%s: fetch signatures: %w", pinned, ferr)
		}
		res, err = check()
	}
	if err != nil {
		if s.AllowUnsigned {
			s.warn("WARNING: %s is accepted WITHOUT an accepted signature (--insecure-allow-unsigned): %v", pinned, err)
			return &Signer{Unsigned: true}, nil
		}
		return nil, err
	}
	if strict != nil && !res.Accepts(toVerifySigner(strict)) {
		return nil, fmt.Errorf("%s: kfm.lock pins signer %s, but no signature of that signer is among those the trust policy accepts now (accepted: %s): %w; run kfm lock if the change is expected", pinned, strict, res.Signer, ErrSignerChanged)
	}
	if strict != nil {
		return strict, nil
	}
	return &Signer{Key: res.Signer.Key, Subject: res.Signer.Subject, Issuer: res.Signer.Issuer}, nil
}

func toVerifySigner(s *Signer) verify.Signer {
	return verify.Signer{Key: s.Key, Subject: s.Subject, Issuer: s.Issuer}
}

func (s *Sources) path(p string) string {
	if filepath.IsAbs(p) || s.BaseDir == "" {
		return p
	}
	return filepath.Join(s.BaseDir, p)
}

// LockProgram resolves program p of chain c: a range to its newest tag, a
// tag to a digest; it pulls and verifies the bundle (or reads the local
// file) and returns the locked program and the element to install.
func (s *Sources) LockProgram(ctx context.Context, c *ChainSpec, p ProgramSpec) (LockedProgram, *Element, error) {
	lp, e, _, err := s.lockProgram(ctx, c.Hook, p)
	return lp, e, err
}

// lockProgram is LockProgram for a hook that may be empty: then the
// program's own hook is used (xdp, or tc-ingress for TC programs) and
// returned. An empty p.Name becomes the function name.
func (s *Sources) lockProgram(ctx context.Context, hook bpf.Hook, p ProgramSpec) (LockedProgram, *Element, bpf.Hook, error) {
	fail := func(err error) (LockedProgram, *Element, bpf.Hook, error) {
		what := p.Name
		if what == "" {
			what = p.Path + p.Ref
		}
		if p.Name == "" && strings.Contains(err.Error(), what) {
			return LockedProgram{}, nil, "", err // the path is in the message already
		}
		return LockedProgram{}, nil, "", fmt.Errorf("%s: %w", what, err)
	}
	lp := LockedProgram{Ref: p.Ref, Path: p.Path}
	var (
		data   []byte
		source string
		bundle *registry.Bundle
	)
	switch {
	case p.Path != "":
		var err error
		if data, err = readObject(s.path(p.Path)); err != nil {
			return fail(err)
		}
		source = p.Path
	default:
		refText := p.Ref
		if repo, constraint, ok := splitRange(p.Ref); ok {
			tag, err := s.resolveRange(ctx, repo, constraint)
			if err != nil {
				return fail(err)
			}
			refText = repo + ":" + tag
		}
		ref, err := registry.ParseReference(refText)
		if err != nil {
			return fail(err)
		}
		got, err := s.pull(ctx, ref, nil)
		if err != nil {
			return fail(err)
		}
		bundle = got.bundle
		data, source = bundle.Object, p.Ref
		lp.Resolved = ref.TagRef()
		lp.Digest = bundle.Digest.String()
		lp.Signer = got.signer
	}
	obj, err := s.memo.object(source, data)
	if err != nil {
		return LockedProgram{}, nil, "", err
	}
	prog, err := obj.Program(p.Function)
	if err != nil {
		return fail(err)
	}
	if len(prog.Hooks) == 0 {
		return fail(fmt.Errorf("%s is a %s program; kfm chains xdp and sched_cls (tc) programs", prog.Function, prog.Type))
	}
	if hook == "" {
		hook = prog.Hooks[0]
	}
	if !slices.Contains(prog.Hooks, hook) {
		return fail(fmt.Errorf("%s is a %s program and cannot run on the %s hook", prog.Function, prog.Type, hook))
	}
	policyRef := ""
	if bundle != nil {
		policyRef = lp.Resolved
	}
	if err := s.CheckCapabilities(policyRef, obj, prog.Function, hook); err != nil {
		return fail(err)
	}
	name := p.Name
	if name == "" {
		name = prog.Function
	}
	if err := ValidateName(name); err != nil {
		return fail(err)
	}
	e := &Element{
		Name: name, Source: source, Digest: lp.Digest, Object: obj, Data: data,
		Function: prog.Function, Priority: bpf.DefaultPriority, ProceedOn: bpf.DefaultProceedOn(hook),
	}
	switch {
	case bundle != nil:
		defs, err := bundle.Config.Program(prog.Function)
		if err != nil {
			return fail(err)
		}
		e.MinKernel = defs.MinKernel
		e.Priority = defs.Priority
		if len(defs.ProceedOn) > 0 {
			if e.ProceedOn, err = defs.ProceedOnActions(hook); err != nil {
				return fail(fmt.Errorf("bundle default: %w", err))
			}
		}
	case hook == bpf.HookXDP:
		rc, _ := obj.RunConfigFor(prog.Function)
		e.Priority, e.ProceedOn = rc.Priority, rc.ProceedOn
	}
	if e.Metrics, err = s.metrics(obj, p.Path, bundle, prog.Function); err != nil {
		return fail(err)
	}
	if p.Priority != nil {
		e.Priority = *p.Priority
	}
	if len(p.ProceedOn) > 0 {
		if e.ProceedOn, err = bpf.ParseActions(hook, strings.Join(p.ProceedOn, ",")); err != nil {
			return fail(err)
		}
	}
	if e.Params, err = canonicalParams(obj, p.Params); err != nil {
		return fail(err)
	}
	lp.Name = name
	lp.Object = "sha256:" + obj.SHA256
	lp.Function, lp.Priority = e.Function, e.Priority
	// The lock keeps params as kfm.yaml writes them (validated), so that
	// it compares equal with the manifest; the element gets the canonical
	// form.
	lp.ProceedOn, lp.Params = e.ProceedOn.Names(hook), p.Params
	return lp, e, hook, nil
}

// Element turns a locked program back into the element to install: the
// bundle by its locked digest (from the cache when it is there, else from
// the registry), verified against the policy; with strict, the locked
// signer must be among those that verified.
func (s *Sources) Element(ctx context.Context, c *LockedChain, lp LockedProgram, strict bool) (*Element, error) {
	var (
		data   []byte
		bundle *registry.Bundle
	)
	source := lp.Path
	policyRef := ""
	if lp.Path != "" {
		var err error
		if data, err = readObject(s.path(lp.Path)); err != nil {
			return nil, fmt.Errorf("%s: %w", lp.Name, err)
		}
	} else {
		// Pull by the locked digest only; the resolved tag stays for
		// humans (and the cache), never to choose the content.
		ref, err := lockedRef(lp)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", lp.Name, err)
		}
		var want *Signer
		if strict {
			want = lp.Signer
			if want == nil {
				want = &Signer{Unsigned: true}
			}
		}
		got, err := s.pull(ctx, ref, want)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", lp.Name, err)
		}
		data, source = got.bundle.Object, lp.Ref
		policyRef = ref.String()
		bundle = got.bundle
	}
	return s.lockedElement(c, lp, data, source, lockedFrom{policyRef: policyRef, bundle: bundle, checkCapabilities: true})
}

// CheckCapabilities analyses function of obj (the bytes that will load)
// and checks what it does against the capability policy: the rules of the
// policy matching ref, the policy's localCapabilities for local files (ref
// ""), and the built-in default denies always (even without a policy, and
// for programs accepted with --insecure-allow-unsigned). A refusal wraps
// verify.ErrCapability.
func (s *Sources) CheckCapabilities(ref string, obj *bpf.Object, function string, hook bpf.Hook) error {
	caps, err := s.memo.capabilities(obj, function)
	if err != nil {
		return err
	}
	return s.Policy.CheckCapabilities(ref, function, caps, hook)
}

// metrics finds the metric declarations of function: in the bundle's
// config, or in the bundle.yaml beside a local object (see BundleFileFor).
func (s *Sources) metrics(obj *bpf.Object, path string, bundle *registry.Bundle, function string) ([]Metric, error) {
	if bundle != nil {
		return bundleDeclarations(obj, bundle.Config, function, s.Warn), nil
	}
	if path == "" {
		return nil, nil
	}
	return localDeclarations(obj, s.path(path), function)
}

func readObject(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", path, bpf.ErrInvalidObject)
	}
	if st.Size() > bpf.MaxObjectSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d MiB limit: %w", path, st.Size(), bpf.MaxObjectSize>>20, bpf.ErrInvalidObject)
	}
	return os.ReadFile(path)
}
