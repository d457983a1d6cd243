package chain

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
)

// Programs that stay.
//
// A change that only takes programs away (kfm remove, an apply whose
// kfm.yaml dropped programs) and the programs an install leaves beside the
// new one are not verified against the trust policy again: they run now,
// by the digest the lock recorded together with the signer accepted when
// they were installed. They are reloaded from the cache by that digest
// (fetched by digest, checked against it, when the cache lost them), so
// that removal never depends on the policy: a policy that no longer exists,
// or no longer trusts a program, cannot keep a user from taking programs
// off. The rule holds only for a digest the host state records as running
// on that hook under that name; anything else is verified as before.

// runningDigests maps the element names of iface's hook to the bundle
// digests they run by now, as the host state records them.
func runningDigests(st *State, netns, iface string, hook bpf.Hook) map[string]string {
	out := map[string]string{}
	if st == nil {
		return out
	}
	if hs := st.find(netns, iface, hook); hs != nil && !hs.Changing {
		for _, e := range hs.Elements {
			if e.Digest != "" && e.ProgramID != 0 {
				out[e.Name] = e.Digest
			}
		}
	}
	return out
}

// runsNow reports whether lp runs on its hook by its locked digest.
func runsNow(running map[string]string, lp LockedProgram) bool {
	return lp.Digest != "" && running[lp.Name] == lp.Digest
}

// keptElement is Element for a program that runs now by its locked digest:
// the bundle comes from the cache (or, by digest, from the registry) and
// is not verified against the policy again.
func (s *Sources) keptElement(ctx context.Context, c *LockedChain, lp LockedProgram) (*Element, error) {
	if lp.Path != "" || lp.Digest == "" {
		return s.Element(ctx, c, lp, false)
	}
	if s.Registry == nil {
		return nil, fmt.Errorf("%s: no registry client", lp.Name)
	}
	ref, err := lockedRef(lp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	opts := registry.PullOptions{Offline: s.Offline}
	pinned, desc, err := s.Registry.Resolve(ctx, ref, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	b, err := s.memo.opened(pinned.Digest.String(), func() (*registry.Bundle, error) {
		if err := s.Registry.Fetch(ctx, pinned, desc, opts); err != nil {
			return nil, err
		}
		return s.Registry.Open(ctx, pinned)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	return s.lockedElement(c, lp, b.Object, lp.Ref, lockedFrom{policyRef: pinned.String(), bundle: b})
}

// lockedRef is the pinned reference of a locked registry program: the
// locked digest in the repository it came from (the resolved tag stays for
// humans and the cache, never to choose the content).
func lockedRef(lp LockedProgram) (registry.Reference, error) {
	base := lp.Resolved
	if base == "" {
		base = lp.Ref
		if r, _, ok := splitRange(base); ok {
			base = r
		}
	}
	ref, err := registry.ParseReference(base)
	if err != nil {
		return registry.Reference{}, err
	}
	if lp.Resolved == "" {
		ref.Tag = ""
	}
	d, err := digest.Parse(lp.Digest)
	if err != nil {
		return registry.Reference{}, fmt.Errorf("locked digest %q: %w", lp.Digest, err)
	}
	return ref.Pinned(d), nil
}

// lockedFrom is where a locked program's bytes came from, for
// lockedElement.
type lockedFrom struct {
	// policyRef is the reference the capability rules are matched
	// against ("" for a local file: localCapabilities).
	policyRef string
	// bundle is the pulled bundle (nil for a local file): the publisher's
	// minimum kernel and declared metrics.
	bundle *registry.Bundle
	// checkCapabilities runs the capability policy on the object. A
	// program kept running by its locked digest is not checked again,
	// just as its signature is not: removing or adding other programs
	// never depends on the policy's view of the ones that stay.
	checkCapabilities bool
}

// lockedElement builds the element of a locked program from its object
// bytes, checking them against the locked object digest.
func (s *Sources) lockedElement(c *LockedChain, lp LockedProgram, data []byte, source string, from lockedFrom) (*Element, error) {
	obj, err := s.memo.object(source, data)
	if err != nil {
		return nil, err
	}
	if "sha256:"+obj.SHA256 != lp.Object {
		return nil, fmt.Errorf("%s: %s has sha256:%s, the lock says %s: %w (run kfm lock if the change is expected)", lp.Name, source, obj.SHA256, lp.Object, ErrObjectChanged)
	}
	proceed, err := bpf.ParseActions(c.Hook, strings.Join(lp.ProceedOn, ","))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	if _, err := obj.Program(lp.Function); err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	if from.checkCapabilities {
		if err := s.CheckCapabilities(from.policyRef, obj, lp.Function, c.Hook); err != nil {
			return nil, fmt.Errorf("%s: %w", lp.Name, err)
		}
	}
	params, err := canonicalParams(obj, lp.Params)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	metrics, err := s.metrics(obj, lp.Path, from.bundle, lp.Function)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lp.Name, err)
	}
	minKernel := ""
	if from.bundle != nil {
		if defs, err := from.bundle.Config.Program(lp.Function); err == nil {
			minKernel = defs.MinKernel
		}
	}
	return &Element{
		Name: lp.Name, Source: source, Digest: lp.Digest, Object: obj, Data: data,
		Function: lp.Function, Priority: lp.Priority, ProceedOn: proceed, Params: params,
		NoCounters: !lp.CountersOn(),
		MinKernel:  minKernel,
		Metrics:    metrics,
	}, nil
}

// removesOnly checks whether applying man changes nothing but take programs
// away: every program kfm.yaml names is pinned by the lock (as the
// manifest asks), runs now on its hook by the locked digest (its tag, unless
// locked, still names that digest), and at least one running program of
// kfm's is not named any more. Then it returns the elements and locked
// chains to apply, one per manifest chain, loaded as keptElement loads them;
// otherwise ok is false and the apply goes the usual way.
func (m *Manager) removesOnly(ctx context.Context, st *State, man *Manifest, lk *Lock, opts ApplyOptions) (elements [][]*Element, chains []LockedChain, ok bool, err error) {
	if opts.UpdateAll || len(opts.Update) > 0 || st == nil {
		return nil, nil, false, nil
	}
	removes := false
	for _, hs := range st.Hooks {
		if hs.Owner != "" {
			continue // the agent's: kfm.yaml does not speak for it
		}
		cs := man.ChainIn(hs.Netns, hs.Interface, hs.Hook)
		for _, e := range hs.Elements {
			if cs == nil || !slices.ContainsFunc(cs.Programs, func(p ProgramSpec) bool { return p.Name == e.Name }) {
				removes = true
			}
		}
	}
	if !removes {
		return nil, nil, false, nil
	}
	for i := range man.Chains {
		cs := &man.Chains[i]
		old := lk.ChainIn(cs.NetnsPath(), cs.Interface, cs.Hook)
		if old == nil {
			return nil, nil, false, nil
		}
		running := runningDigests(st, cs.NetnsPath(), cs.Interface, cs.Hook)
		lc := LockedChain{Interface: cs.Interface, Netns: cs.Netns, Hook: cs.Hook, Backend: cs.Backend, Mode: cs.Mode}
		var elems []*Element
		for _, p := range cs.Programs {
			j := slices.IndexFunc(old.Programs, func(lp LockedProgram) bool { return lp.Name == p.Name })
			if j < 0 || !satisfiedBy(cs.Hook, p, old.Programs[j]) {
				return nil, nil, false, nil
			}
			lp := old.Programs[j]
			if lp.Path == "" && !runsNow(running, lp) {
				return nil, nil, false, nil
			}
			if lp.Path == "" && !opts.Locked && lp.Resolved != "" {
				// apply follows tags: a moved tag is a change.
				ref, err := registry.ParseReference(lp.Resolved)
				if err != nil {
					return nil, nil, false, nil
				}
				_, desc, err := m.sources.Registry.Resolve(ctx, ref, registry.PullOptions{Offline: m.sources.Offline})
				if err != nil || desc.Digest.String() != lp.Digest {
					return nil, nil, false, nil
				}
			}
			e, err := m.sources.keptElement(ctx, &lc, lp)
			if errors.Is(err, ErrObjectChanged) {
				return nil, nil, false, nil
			}
			if err != nil {
				return nil, nil, false, err
			}
			elems = append(elems, e)
			lc.Programs = append(lc.Programs, lp)
		}
		if opts.Locked {
			lc = *old
		}
		elements = append(elements, elems)
		chains = append(chains, lc)
	}
	return elements, chains, true, nil
}
