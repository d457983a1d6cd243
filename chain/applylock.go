package chain

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kfm-project/kfm/bpf"
)

// LockApplyOptions tune ApplyLock.
type LockApplyOptions struct {
	// Owner names who asks for the lock's chains ("ChainSet/NAME",
	// "config:/etc/kfm", ...). It is recorded in the host state for every
	// hook the apply changes; hooks recorded for anyone else (kfm.yaml,
	// another owner) or running programs kfm did not install are refused
	// with ErrNotOwner and never touched. Required.
	Owner string
	// Prune empties the hooks recorded for Owner that the lock does not
	// name (a chain the owner no longer wants there). Hooks whose
	// interface is gone are skipped.
	Prune bool
	// Keep, when set, names hooks that Prune leaves as they are (say, a
	// hook two owners claim, which stays as it runs until one gives up).
	Keep func(netns, iface string, hook bpf.Hook) bool
	// DryRun plans and reports and changes nothing.
	DryRun    bool
	ResetMaps bool
}

// ApplyLock makes the kernel run the chains of lk, which comes from memory
// (a node agent's desired state) rather than from the config directory:
// kfm.yaml and kfm.lock are neither read nor written. Every program is
// pulled by its locked digest (from the cache when it is there) and must be
// signed by its locked signer under the node's own trust policy, as with
// `kfm apply --locked`; nothing resolves a tag. Programs with a path are
// read relative to the Sources' BaseDir.
//
// The change is one transaction, as Apply: every program of every hook is
// verified and loaded before the first hook switches, and a failure leaves
// what ran before running. Applying a lock the kernel already runs changes
// nothing, not even program IDs.
func (m *Manager) ApplyLock(ctx context.Context, lk *Lock, opts LockApplyOptions) (*ApplyResult, error) {
	if opts.Owner == "" {
		return nil, errors.New("chain: ApplyLock needs an owner")
	}
	if lk == nil {
		lk = &Lock{Version: LockVersion}
	}
	seen := map[string]bool{}
	for _, c := range lk.Chains {
		k := c.NetnsPath() + "\x00" + c.Interface + "\x00" + string(c.Hook)
		if seen[k] {
			return nil, fmt.Errorf("%s %s: two chains in one lock: %w", c.Interface, c.Hook, ErrManifest)
		}
		seen[k] = true
		if _, err := bpf.ParseHook(string(c.Hook)); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", c.Interface, err, ErrManifest)
		}
		for _, p := range c.Programs {
			if p.Digest == "" && p.Path == "" {
				return nil, fmt.Errorf("%s %s: program %q is not pinned (no digest): %w", c.Interface, c.Hook, p.Name, ErrManifest)
			}
			if !strings.HasPrefix(p.Object, "sha256:") {
				return nil, fmt.Errorf("%s %s: program %q: object must be sha256:<hex>: %w", c.Interface, c.Hook, p.Name, ErrManifest)
			}
		}
	}

	st, release, err := m.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	defer m.beginView()()

	var specs []HookSpec
	for i := range lk.Chains {
		lc := &lk.Chains[i]
		if hs := st.find(lc.NetnsPath(), lc.Interface, lc.Hook); hs != nil && hs.Owner != opts.Owner {
			return nil, fmt.Errorf("%s %s: %w: it runs the chain of %s", lc.Interface, lc.Hook, ErrNotOwner, ownerName(hs.Owner))
		}
		var elements []*Element
		for _, lp := range lc.Programs {
			e, err := m.sources.Element(ctx, lc, lp, true)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", lc.Interface, lc.Hook, err)
			}
			elements = append(elements, e)
		}
		specs = append(specs, HookSpec{
			Netns: lc.NetnsPath(), Interface: lc.Interface, Hook: lc.Hook, Backend: lc.Backend, Mode: lc.Mode,
			Elements: elements, ResetMaps: opts.ResetMaps, Owner: opts.Owner,
		})
	}
	if opts.Prune {
		for _, hs := range st.Hooks {
			if hs.Owner != opts.Owner || lk.ChainIn(hs.Netns, hs.Interface, hs.Hook) != nil || (opts.Keep != nil && opts.Keep(hs.Netns, hs.Interface, hs.Hook)) {
				continue
			}
			if _, err := m.target(hs.Netns, hs.Interface, hs.Hook); errors.Is(err, ErrNoInterface) || errors.Is(err, ErrNoNetns) {
				continue // the interface is gone, and its chain with it
			}
			specs = append(specs, HookSpec{Netns: hs.Netns, Interface: hs.Interface, Hook: hs.Hook, Owner: opts.Owner})
		}
	}

	res := &ApplyResult{Lock: lk}
	if res.Changes, err = m.describe(ctx, st, specs); err != nil {
		return nil, err
	}
	if opts.DryRun {
		return res, nil
	}
	if err := m.apply(ctx, st, specs); err != nil {
		return nil, err
	}
	return res, nil
}

// Owned lists the hooks the host state records for an owner other than
// kfm.yaml, that is the hooks a kfm agent manages, whatever the owner.
func (m *Manager) Owned(ctx context.Context) ([]HookState, error) {
	st, release, err := m.lockState(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var out []HookState
	for _, hs := range st.Hooks {
		if hs.Owner != "" {
			out = append(out, *hs)
		}
	}
	return out, nil
}
