package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ChainSet asks the nodes its nodeSelector picks to run chains of signed
// programs, each pinned by digest like kfm.lock. `kfm lock --chainset NAME`
// writes one from kfm.yaml and kfm.lock.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=kchs,categories=kfm
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Selected",type=integer,JSONPath=`.status.selectedNodes`,description="Nodes the nodeSelector picks"
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.appliedNodes`,description="Nodes that run this generation"
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failedNodes`,description="Nodes that report Degraded"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ChainSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ChainSetSpec `json:"spec"`
	// +optional
	Status ChainSetStatus `json:"status,omitzero"`
}

// ChainSetSpec is what a ChainSet wants.
//
// +kubebuilder:validation:XValidation:rule="self.chains.all(c, self.chains.filter(d, d.hook == c.hook && has(d.netns) == has(c.netns) && (!has(d.netns) || d.netns == c.netns)).size() == 1)",message="two chains of one ChainSet on the same hook and network namespace: merge them into one chain, or use two ChainSets"
type ChainSetSpec struct {
	// NodeSelector picks the nodes by their labels. Empty or absent selects
	// every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Chains, at most one per hook and network namespace.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Chains []ChainSpec `json:"chains"`
}

// ChainSpec is one hook's chain on the interfaces its selector picks.
//
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.hook == 'xdp'",message="only XDP chains have a mode"
// +kubebuilder:validation:XValidation:rule="!has(self.netns) || !has(self.interfaceSelector.primaryNodeInterface) || !self.interfaceSelector.primaryNodeInterface",message="primaryNodeInterface is the node's own interface: it cannot be combined with netns"
type ChainSpec struct {
	// Hook is xdp, tc-ingress or tc-egress.
	// +kubebuilder:validation:Enum=xdp;tc-ingress;tc-egress
	Hook string `json:"hook"`

	// InterfaceSelector picks the interfaces on each node, again whenever a
	// link appears, disappears or is renamed.
	InterfaceSelector InterfaceSelector `json:"interfaceSelector"`

	// Netns is the path of a network namespace (/run/netns/NAME,
	// /proc/PID/ns/net) whose interfaces the selector picks. Empty is the
	// node's own.
	// +optional
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +kubebuilder:validation:MaxLength=4096
	Netns string `json:"netns,omitempty"`

	// Backend is auto (default: chosen per node by feature probe),
	// dispatcher, tailcall, tcx or tc.
	// +optional
	// +kubebuilder:validation:Enum=auto;dispatcher;tailcall;tcx;tc
	Backend string `json:"backend,omitempty"`

	// Mode is the XDP attach mode, native (default) or skb.
	// +optional
	// +kubebuilder:validation:Enum=native;skb
	Mode string `json:"mode,omitempty"`

	// Programs in any order: the chain runs them by priority, ties by name.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	Programs []Program `json:"programs"`
}

// InterfaceSelector picks interfaces by name. A name written /RE/ is a
// regular expression matched against the whole interface name.
//
// +kubebuilder:validation:XValidation:rule="(has(self.names) && size(self.names) > 0) || (has(self.primaryNodeInterface) && self.primaryNodeInterface)",message="interfaceSelector picks nothing: give names (eth0, /^ens[0-9]+$/) or primaryNodeInterface: true"
type InterfaceSelector struct {
	// Names are interface names or /regular expressions/.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.all(n, n.startsWith('/') ? (size(n) > 2 && n.endsWith('/')) : size(n) <= 15)",message="each name is an interface name (at most 15 characters) or a regular expression written /RE/"
	// +listType=set
	Names []string `json:"names,omitempty"`

	// PrimaryNodeInterface picks the interface that carries the Node's
	// InternalIP.
	// +optional
	PrimaryNodeInterface bool `json:"primaryNodeInterface,omitempty"`

	// Exclude drops interfaces the other fields picked: names or /RE/.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.all(n, n.startsWith('/') ? (size(n) > 2 && n.endsWith('/')) : size(n) <= 15)",message="each name is an interface name (at most 15 characters) or a regular expression written /RE/"
	// +listType=set
	Exclude []string `json:"exclude,omitempty"`
}

// Program is one program of a chain, pinned as kfm.lock pins it: every node
// pulls the same digest, checks the same object bytes and signer, and its
// own trust policy must accept that signer.
//
// +kubebuilder:validation:XValidation:rule="has(self.digest)",message="program has no digest: a ChainSet pins every program by the manifest digest in kfm.lock (kfm lock --chainset NAME writes one)"
// +kubebuilder:validation:XValidation:rule="has(self.object)",message="program has no object digest: a ChainSet pins the ELF object's sha256 from kfm.lock (kfm lock --chainset NAME writes one)"
// +kubebuilder:validation:XValidation:rule="has(self.signer)",message="program has no signer: a ChainSet pins the signer that kfm.lock accepted (kfm lock --chainset NAME writes one)"
type Program struct {
	// Name of the program in the chain.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$`
	Name string `json:"name"`

	// Ref is the bundle's repository, as in kfm.yaml
	// (registry.example.com/team/ratelimit:1.2 or a range); the node
	// pulls by Digest only, never by tag.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Ref string `json:"ref"`

	// Resolved is the tag the lock resolved Ref to, for humans and caches.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Resolved string `json:"resolved,omitempty"`

	// Digest is the bundle's manifest digest.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	Digest string `json:"digest,omitempty"`

	// Object is the sha256 of the ELF object.
	// +optional
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	Object string `json:"object,omitempty"`

	// Signer is the signer the lock accepted. The node re-verifies the
	// signature with its own policy and refuses a different signer.
	// +optional
	Signer *Signer `json:"signer,omitempty"`

	// Function is the program's entry function in the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Function string `json:"function"`

	// Priority orders the chain: lower runs first.
	Priority int32 `json:"priority"`

	// ProceedOn are the verdicts on which the packet goes on to the next
	// program.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	ProceedOn []string `json:"proceedOn,omitempty"`

	// Params set the program's volatile const globals.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Params map[string]string `json:"params,omitempty"`
}

// Signer is the signer a lock accepted: a key by its fingerprint, or a
// keyless identity. There is deliberately no way to say "unsigned".
//
// +kubebuilder:validation:XValidation:rule="has(self.key) != has(self.subject)",message="signer is either a key or a keyless identity (subject and issuer)"
// +kubebuilder:validation:XValidation:rule="has(self.subject) == has(self.issuer)",message="a keyless signer needs both subject and issuer"
type Signer struct {
	// Key is the public key's fingerprint.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Key string `json:"key,omitempty"`
	// Subject is the certificate identity of a keyless signature.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject,omitempty"`
	// Issuer is the OIDC issuer of a keyless signature.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Issuer string `json:"issuer,omitempty"`
}

// ChainSetStatus counts the nodes. Node agents keep it current: each
// recounts after it reports (see package kubernetes).
type ChainSetStatus struct {
	// SelectedNodes is the number of Nodes the nodeSelector picks.
	// +optional
	SelectedNodes int32 `json:"selectedNodes"`
	// AppliedNodes is the number of nodes that run this generation.
	// +optional
	AppliedNodes int32 `json:"appliedNodes"`
	// FailedNodes is the number of nodes that report Degraded.
	// +optional
	FailedNodes int32 `json:"failedNodes"`
}

// ChainSetList is a list of ChainSets.
//
// +kubebuilder:object:root=true
type ChainSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChainSet `json:"items"`
}
