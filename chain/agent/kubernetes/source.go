package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain/agent"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

// ErrNoNodeName is returned by [New] without a node name.
var ErrNoNodeName = errors.New("no node name: pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)")

// OwnerPrefix starts the agent.Chain Owner of every chain this source
// delivers: "ChainSet/NAME".
const OwnerPrefix = "ChainSet/"

// Labels of ChainSetNodeStatus objects.
const (
	LabelChainSet = "kfm.dev/chainset"
	LabelNode     = "kfm.dev/node"
)

// FieldOwner is the field manager of everything the source writes.
const FieldOwner = "kfm-agent"

// Options configure a [Source].
type Options struct {
	// Config reaches the API server (rest.InClusterConfig in a pod).
	Config *rest.Config
	// NodeName is the Node this agent runs on.
	NodeName string
}

// Source delivers the ChainSets that select this node and reports back into
// ChainSetNodeStatus objects. It implements [agent.Source] and
// [agent.Reporter].
type Source struct {
	cfg    *rest.Config
	node   string
	scheme *runtime.Scheme
	client client.Client
	// report serialises Report calls.
	report sync.Mutex
}

var (
	_ agent.Source   = (*Source)(nil)
	_ agent.Reporter = (*Source)(nil)
)

// NewScheme returns a scheme with the types the source reads and writes:
// Nodes, ChainSets and ChainSetNodeStatus objects.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// New returns a source for the node opts.NodeName. It does not contact the
// API server until Run or Report.
func New(opts Options) (*Source, error) {
	if opts.NodeName == "" {
		return nil, ErrNoNodeName
	}
	if opts.Config == nil {
		return nil, errors.New("kubernetes source: no API server configuration")
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(opts.Config)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "kfm-agent/" + opts.NodeName
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %w", err)
	}
	return &Source{cfg: cfg, node: opts.NodeName, scheme: scheme, client: c}, nil
}

// Name says which node the source serves.
func (s *Source) Name() string { return "kubernetes (node " + s.node + ")" }

// Kind is "kubernetes" (agent.Kinder).
func (s *Source) Kind() string { return "kubernetes" }

// Run watches the ChainSets and this node's Node object and calls update
// with the node's desired state at start and whenever it changes, until ctx
// ends. It returns an error when the watches cannot start (the CRDs are not
// installed, the service account may not list ChainSets).
func (s *Source) Run(ctx context.Context, update func(agent.Desired)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := cache.New(s.cfg, cache.Options{
		Scheme: s.scheme,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", s.node)},
		},
	})
	if err != nil {
		return fmt.Errorf("kubernetes source: %w", err)
	}
	poke := make(chan struct{}, 1)
	notify := func() {
		select {
		case poke <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, obj := range []client.Object{&corev1.Node{}, &v1alpha1.ChainSet{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("kubernetes source: watch %T: %w (are the CRDs in manifests/kubernetes/crds installed?)", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
	}
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		cancel()
		if err := <-cacheErr; err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		return ctx.Err()
	}
	var last *agent.Desired
	for {
		d, err := s.desired(ctx, c)
		if ctx.Err() != nil {
			return nil // ended while reading: not a failure
		}
		if err != nil {
			return err
		}
		if last == nil || !reflect.DeepEqual(*last, d) {
			last = &d
			update(d)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheErr:
			if err != nil {
				return fmt.Errorf("kubernetes source: %w", err)
			}
			return nil
		case <-poke:
		}
	}
}

// desired computes the node's desired state from the cached objects.
func (s *Source) desired(ctx context.Context, r client.Reader) (agent.Desired, error) {
	var d agent.Desired
	node := &corev1.Node{}
	if err := r.Get(ctx, client.ObjectKey{Name: s.node}, node); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return d, nil // no Node object: nothing selects this node
		}
		return d, fmt.Errorf("kubernetes source: node %s: %w", s.node, err)
	}
	var list v1alpha1.ChainSetList
	if err := r.List(ctx, &list); err != nil {
		return d, fmt.Errorf("kubernetes source: list ChainSets: %w", err)
	}
	sets := selecting(list.Items, node)
	if len(sets) > 0 {
		d.NodeIPs = internalIPs(node)
	}
	for _, cs := range sets {
		for _, cspec := range cs.Spec.Chains {
			c := agent.Chain{
				Owner:      OwnerPrefix + cs.Name,
				Generation: cs.Generation,
				Interfaces: agent.InterfaceSelector{
					Names:                slices.Clone(cspec.InterfaceSelector.Names),
					PrimaryNodeInterface: cspec.InterfaceSelector.PrimaryNodeInterface,
					Exclude:              slices.Clone(cspec.InterfaceSelector.Exclude),
				},
				Netns:   cspec.Netns,
				Hook:    bpf.Hook(cspec.Hook),
				Backend: cspec.Backend,
				Mode:    cspec.Mode,
			}
			for i := range cspec.Programs {
				c.Programs = append(c.Programs, cspec.Programs[i].Locked())
			}
			d.Chains = append(d.Chains, c)
		}
	}
	return d, nil
}

// selecting returns the ChainSets (not being deleted) whose nodeSelector
// picks node, sorted by name. A ChainSet with an invalid selector selects
// nothing (the API server's schema makes that rare).
func selecting(sets []v1alpha1.ChainSet, node *corev1.Node) []*v1alpha1.ChainSet {
	var out []*v1alpha1.ChainSet
	for i := range sets {
		cs := &sets[i]
		if cs.DeletionTimestamp != nil {
			continue
		}
		sel, err := nodeSelector(cs)
		if err != nil || !sel.Matches(labels.Set(node.Labels)) {
			continue
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b *v1alpha1.ChainSet) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// nodeSelector returns the ChainSet's node selector; absent selects all.
func nodeSelector(cs *v1alpha1.ChainSet) (labels.Selector, error) {
	if cs.Spec.NodeSelector == nil {
		return labels.Everything(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(cs.Spec.NodeSelector)
	if err != nil {
		return nil, fmt.Errorf("ChainSet %s: nodeSelector: %w", cs.Name, err)
	}
	return sel, nil
}

// internalIPs are the node's InternalIP addresses (status.addresses),
// sorted: the agent marks the interface that carries one of them as
// primaryNodeInterface.
func internalIPs(node *corev1.Node) []netip.Addr {
	var ips []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(ips, ip.Unmap()) {
			ips = append(ips, ip.Unmap())
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}
