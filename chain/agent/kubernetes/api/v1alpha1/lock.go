package v1alpha1

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kfm-project/kfm/chain"
)

// ErrNotPinned is returned when a lock cannot become a ChainSet: a program
// is a local object, or was locked without a signer.
var ErrNotPinned = errors.New("program is not pinned to a signed registry digest")

// FromLock turns kfm.lock into a ChainSet named name: one chain per hook,
// with the interfaces the lock names for that hook (a lock names one
// interface per chain; chains on the same hook with the same programs merge
// into one selector). Every program must come from a registry with a digest
// and an accepted signer.
func FromLock(name string, l *chain.Lock, nodeSelector *metav1.LabelSelector) (*ChainSet, error) {
	cs := &ChainSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: "ChainSet"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       ChainSetSpec{NodeSelector: nodeSelector},
	}
	for _, lc := range l.Chains {
		c := ChainSpec{
			Hook:              string(lc.Hook),
			InterfaceSelector: InterfaceSelector{Names: []string{lc.Interface}},
			Backend:           lc.Backend,
			Mode:              lc.Mode,
		}
		for _, lp := range lc.Programs {
			p, err := programFromLock(lp)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", lc.Interface, lc.Hook, err)
			}
			c.Programs = append(c.Programs, p)
		}
		slices.SortFunc(c.Programs, func(a, b Program) int { return strings.Compare(a.Name, b.Name) })
		// A ChainSet has one chain per hook: interfaces that run the
		// same chain share it, different chains on one hook cannot.
		i := slices.IndexFunc(cs.Spec.Chains, func(o ChainSpec) bool { return o.Hook == c.Hook })
		if i < 0 {
			cs.Spec.Chains = append(cs.Spec.Chains, c)
			continue
		}
		o := &cs.Spec.Chains[i]
		if o.Backend != c.Backend || o.Mode != c.Mode || !slices.EqualFunc(o.Programs, c.Programs, programEqual) {
			return nil, fmt.Errorf("%s and %s run different %s chains: a ChainSet has one chain per hook, so write one ChainSet per chain", o.InterfaceSelector.Names[0], lc.Interface, lc.Hook)
		}
		o.InterfaceSelector.Names = append(o.InterfaceSelector.Names, lc.Interface)
	}
	if len(cs.Spec.Chains) == 0 {
		return nil, errors.New("kfm.lock has no chains")
	}
	return cs, nil
}

func programFromLock(lp chain.LockedProgram) (Program, error) {
	switch {
	case lp.Path != "":
		return Program{}, fmt.Errorf("program %q is a local object (%s): %w: publish it, install it from the registry and lock again", lp.Name, lp.Path, ErrNotPinned)
	case lp.Digest == "":
		return Program{}, fmt.Errorf("program %q has no digest: %w: run kfm lock", lp.Name, ErrNotPinned)
	case lp.Signer == nil || lp.Signer.Unsigned:
		return Program{}, fmt.Errorf("program %q was locked without an accepted signature: %w: sign it and lock again", lp.Name, ErrNotPinned)
	}
	return Program{
		Name:      lp.Name,
		Ref:       lp.Ref,
		Resolved:  lp.Resolved,
		Digest:    lp.Digest,
		Object:    lp.Object,
		Signer:    &Signer{Key: lp.Signer.Key, Subject: lp.Signer.Subject, Issuer: lp.Signer.Issuer},
		Function:  lp.Function,
		Priority:  int32(lp.Priority),
		ProceedOn: lp.ProceedOn,
		Params:    lp.Params,
	}, nil
}

func programEqual(a, b Program) bool {
	return a.Name == b.Name && a.Digest == b.Digest && a.Object == b.Object &&
		a.Function == b.Function && a.Priority == b.Priority &&
		slices.Equal(a.ProceedOn, b.ProceedOn) && maps.Equal(a.Params, b.Params)
}

// Locked returns the program as kfm.lock pins it.
func (p *Program) Locked() chain.LockedProgram {
	lp := chain.LockedProgram{
		Name:      p.Name,
		Ref:       p.Ref,
		Resolved:  p.Resolved,
		Digest:    p.Digest,
		Object:    p.Object,
		Function:  p.Function,
		Priority:  int(p.Priority),
		ProceedOn: slices.Clone(p.ProceedOn),
	}
	if p.Signer != nil {
		lp.Signer = &chain.Signer{Key: p.Signer.Key, Subject: p.Signer.Subject, Issuer: p.Signer.Issuer}
	}
	if len(p.Params) > 0 {
		lp.Params = maps.Clone(p.Params)
	}
	return lp
}
