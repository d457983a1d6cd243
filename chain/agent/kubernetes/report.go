package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

// Condition reasons besides agent's failure reasons.
const (
	reasonApplied     = "Applied"
	reasonProgressing = "Progressing"
	reasonAsExpected  = "AsExpected"
)

// maxMessage is a condition message's length limit (the API's is 32768).
const maxMessage = 4096

// maxRecount bounds the rounds of one ChainSet status recount.
const maxRecount = 8

// Report writes r into this node's ChainSetNodeStatus objects, deletes the
// node's objects for ChainSets that no longer select it, and recounts the
// status of every ChainSet it touched. Results of owners that are not
// ChainSets are ignored. It reads the ChainSets and the Node from the API
// server, so it reports on what selects the node now: a ChainSet the agent
// has not caught up with shows Progressing.
func (s *Source) Report(ctx context.Context, r agent.Result) error {
	s.report.Lock()
	defer s.report.Unlock()

	node := &corev1.Node{}
	if err := s.client.Get(ctx, client.ObjectKey{Name: s.node}, node); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes report: node %s: %w", s.node, err)
	}
	var list v1alpha1.ChainSetList
	if err := s.client.List(ctx, &list); err != nil {
		return fmt.Errorf("kubernetes report: list ChainSets: %w", err)
	}
	var sets []*v1alpha1.ChainSet
	if node.Name != "" {
		sets = selecting(list.Items, node)
	}
	byOwner := map[string][]agent.ChainResult{}
	for _, c := range r.Chains {
		if name, ok := strings.CutPrefix(c.Owner, OwnerPrefix); ok {
			byOwner[name] = append(byOwner[name], c)
		}
	}
	var errs []error
	touched := map[string]bool{}
	keep := map[string]bool{}
	for _, cs := range sets {
		keep[statusName(cs.Name, s.node)] = true
		changed, err := s.writeStatus(ctx, cs, byOwner[cs.Name])
		if err != nil {
			errs = append(errs, err)
		}
		if changed {
			touched[cs.Name] = true
		}
	}
	// Objects of ChainSets that no longer select this node, or are gone.
	var mine v1alpha1.ChainSetNodeStatusList
	if err := s.client.List(ctx, &mine, client.MatchingLabels{LabelNode: labelValue(s.node)}); err != nil {
		errs = append(errs, fmt.Errorf("kubernetes report: list status objects: %w", err))
	}
	for i := range mine.Items {
		st := &mine.Items[i]
		if keep[st.Name] || st.Spec.NodeName != s.node {
			continue
		}
		if err := s.client.Delete(ctx, st); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("kubernetes report: delete %s: %w", st.Name, err))
			continue
		}
		touched[st.Spec.ChainSet] = true
	}
	for _, name := range slices.Sorted(maps.Keys(touched)) {
		if err := s.Recount(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeStatus creates or updates this node's status object for cs from the
// agent's results for it. It writes only when something changed.
func (s *Source) writeStatus(ctx context.Context, cs *v1alpha1.ChainSet, results []agent.ChainResult) (bool, error) {
	name := statusName(cs.Name, s.node)
	cur := &v1alpha1.ChainSetNodeStatus{}
	err := s.client.Get(ctx, client.ObjectKey{Name: name}, cur)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("kubernetes report: %s: %w", name, err)
	}
	if exists && (cur.Spec.ChainSet != cs.Name || cur.Spec.NodeName != s.node) {
		return false, fmt.Errorf("kubernetes report: %s belongs to ChainSet %s on node %s, not to %s on %s", name, cur.Spec.ChainSet, cur.Spec.NodeName, cs.Name, s.node)
	}
	want := cur.DeepCopy()
	want.Name = name
	want.Labels = mergeLabels(want.Labels, map[string]string{LabelChainSet: labelValue(cs.Name), LabelNode: labelValue(s.node)})
	want.OwnerReferences = ownerRefs(want.OwnerReferences, cs)
	want.Spec = v1alpha1.ChainSetNodeStatusSpec{ChainSet: cs.Name, NodeName: s.node}
	nodeStatus(&want.Status, cs, results)
	if !exists {
		if err := s.client.Create(ctx, want, client.FieldOwner(FieldOwner)); err != nil {
			return false, fmt.Errorf("kubernetes report: create %s: %w", name, err)
		}
		return true, nil
	}
	if equality.Semantic.DeepEqual(cur, want) {
		return false, nil
	}
	if err := s.client.Update(ctx, want, client.FieldOwner(FieldOwner)); err != nil {
		return false, fmt.Errorf("kubernetes report: update %s: %w", name, err)
	}
	return true, nil
}

// nodeStatus sets st from the agent's results for cs. Conditions keep their
// lastTransitionTime while their status stays.
func nodeStatus(st *v1alpha1.NodeStatus, cs *v1alpha1.ChainSet, results []agent.ChainResult) {
	results = slices.Clone(results)
	slices.SortFunc(results, func(a, b agent.ChainResult) int {
		return cmpJoin(strings.Compare(a.Netns, b.Netns), strings.Compare(a.Interface, b.Interface), strings.Compare(string(a.Hook), string(b.Hook)))
	})
	st.Chains = st.Chains[:0]
	var observed int64
	var failed []agent.ChainResult
	for _, r := range results {
		c := v1alpha1.ChainStatus{
			Interface: r.Interface, Netns: r.Netns, Hook: string(r.Hook), Backend: r.Backend,
			Applied: r.Applied, Reason: r.Reason, Message: truncate(r.Message),
		}
		for _, p := range r.Programs {
			c.Programs = append(c.Programs, v1alpha1.ProgramStatus{Name: p.Name, Digest: p.Digest, ID: int64(p.ID)})
		}
		st.Chains = append(st.Chains, c)
		if observed == 0 || r.Generation < observed {
			observed = r.Generation // the oldest generation any chain is at
		}
		if !r.Applied {
			failed = append(failed, r)
		}
	}
	if len(st.Chains) == 0 {
		st.Chains = nil
	}
	gen := cs.Generation
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: truncate(msg), ObservedGeneration: gen,
		})
	}
	switch {
	case len(results) == 0 || observed < gen:
		// The agent has not reported on this generation yet. The last
		// report's Degraded stays as it was, it is still what runs.
		if len(results) > 0 {
			st.ObservedGeneration = observed
		}
		msg := fmt.Sprintf("applying generation %d", gen)
		set(v1alpha1.ConditionProgressing, metav1.ConditionTrue, reasonProgressing, msg)
		set(v1alpha1.ConditionApplied, metav1.ConditionFalse, reasonProgressing, msg)
		if meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionDegraded) == nil {
			set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, reasonProgressing, msg)
		}
	case len(failed) > 0:
		st.ObservedGeneration = observed
		reason := failed[0].Reason
		if reason == "" {
			reason = agent.ReasonLoadFailed
		}
		var msgs []string
		for _, f := range failed {
			msgs = append(msgs, fmt.Sprintf("%s: %s", where(f), f.Message))
		}
		msg := strings.Join(msgs, "; ")
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, "the node does not retry until something changes or the next drift check")
		set(v1alpha1.ConditionApplied, metav1.ConditionFalse, reason, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, msg)
	default:
		st.ObservedGeneration = observed
		msg := fmt.Sprintf("%d chains run generation %d", len(results), gen)
		set(v1alpha1.ConditionProgressing, metav1.ConditionFalse, reasonApplied, msg)
		set(v1alpha1.ConditionApplied, metav1.ConditionTrue, reasonApplied, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, reasonAsExpected, "")
	}
}

// where names a chain result: "eth0/xdp" or "/run/netns/a:eth0/xdp".
func where(r agent.ChainResult) string {
	iface := r.Interface
	if iface == "" {
		iface = "(no interface)"
	}
	s := iface + "/" + string(r.Hook)
	if r.Netns != "" {
		s = r.Netns + ":" + s
	}
	return s
}

// Recount sets the ChainSet's status counts from the Nodes its selector
// picks and the ChainSetNodeStatus objects, with optimistic concurrency. It
// rereads and recounts until what is stored is what it counts, so that of
// concurrent agents the last to write has seen every report before it.
func (s *Source) Recount(ctx context.Context, name string) error {
	for range maxRecount {
		cs := &v1alpha1.ChainSet{}
		if err := s.client.Get(ctx, client.ObjectKey{Name: name}, cs); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("kubernetes report: ChainSet %s: %w", name, err)
		}
		want, err := s.count(ctx, cs)
		if err != nil {
			return err
		}
		if cs.Status == want {
			return nil
		}
		cs.Status = want
		err = s.client.Status().Update(ctx, cs, client.FieldOwner(FieldOwner))
		switch {
		case err == nil, apierrors.IsConflict(err):
			// Read back (or again) and count once more.
		case apierrors.IsNotFound(err):
			return nil
		default:
			return fmt.Errorf("kubernetes report: ChainSet %s status: %w", name, err)
		}
	}
	return fmt.Errorf("kubernetes report: ChainSet %s status: still changing after %d recounts", name, maxRecount)
}

// count computes a ChainSet's status.
func (s *Source) count(ctx context.Context, cs *v1alpha1.ChainSet) (v1alpha1.ChainSetStatus, error) {
	var st v1alpha1.ChainSetStatus
	sel, err := nodeSelector(cs)
	if err != nil {
		return st, err
	}
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := s.client.List(ctx, nodes, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return st, fmt.Errorf("kubernetes report: list Nodes: %w", err)
	}
	selected := map[string]bool{}
	for _, n := range nodes.Items {
		selected[n.Name] = true
	}
	st.SelectedNodes = int32(len(selected))
	var reports v1alpha1.ChainSetNodeStatusList
	if err := s.client.List(ctx, &reports, client.MatchingLabels{LabelChainSet: labelValue(cs.Name)}); err != nil {
		return st, fmt.Errorf("kubernetes report: list status objects: %w", err)
	}
	for _, r := range reports.Items {
		if r.Spec.ChainSet != cs.Name || !selected[r.Spec.NodeName] || !ownedBy(&r, cs) {
			continue // a leftover of a node that left, or of an older ChainSet of that name
		}
		switch {
		case meta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ConditionDegraded):
			st.FailedNodes++
		case meta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ConditionApplied) && r.Status.ObservedGeneration == cs.Generation:
			st.AppliedNodes++
		}
	}
	return st, nil
}

// statusName is the name of node's status object for ChainSet cs:
// CS.NODE-HASH, shortened to fit 253 characters. The hash of both names
// keeps apart pairs that would otherwise read the same ("a.b"+"c" and
// "a"+"b.c").
func statusName(cs, node string) string {
	h := sha256.Sum256([]byte(cs + "\x00" + node))
	suffix := "-" + hex.EncodeToString(h[:4])
	prefix := cs + "." + node
	if max := 253 - len(suffix); len(prefix) > max {
		prefix = strings.TrimRight(prefix[:max], ".-")
	}
	return prefix + suffix
}

func ownerRefs(refs []metav1.OwnerReference, cs *v1alpha1.ChainSet) []metav1.OwnerReference {
	ref := metav1.OwnerReference{
		APIVersion: v1alpha1.GroupVersion.String(),
		Kind:       "ChainSet",
		Name:       cs.Name,
		UID:        cs.UID,
	}
	out := slices.DeleteFunc(slices.Clone(refs), func(r metav1.OwnerReference) bool {
		return r.APIVersion == ref.APIVersion && r.Kind == ref.Kind
	})
	return append(out, ref)
}

func ownedBy(obj metav1.Object, cs *v1alpha1.ChainSet) bool {
	return slices.ContainsFunc(obj.GetOwnerReferences(), func(r metav1.OwnerReference) bool { return r.UID == cs.UID })
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := maps.Clone(have)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, want)
	return out
}

// labelValue fits a name (a DNS subdomain of up to 253 characters) into a
// label value (at most 63): longer names are cut and end in a hash of the
// whole name. Readers filter on the spec's full names as well.
func labelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	h := sha256.Sum256([]byte(name))
	return strings.TrimRight(name[:54], ".-") + "-" + hex.EncodeToString(h[:4])
}

func cmpJoin(cs ...int) int {
	for _, c := range cs {
		if c != 0 {
			return c
		}
	}
	return 0
}

func truncate(msg string) string {
	if len(msg) > maxMessage {
		return strings.ToValidUTF8(msg[:maxMessage-3], "") + "..."
	}
	return msg
}
