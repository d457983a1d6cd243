package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a ChainSetNodeStatus.
const (
	// ConditionApplied is True when every chain the ChainSet asks of the
	// node runs as wanted, at status.observedGeneration.
	ConditionApplied = "Applied"
	// ConditionProgressing is True while the node works towards a
	// generation it has not reported on yet.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when a chain is not applied; its reason is
	// one of VerificationFailed, LoadFailed, InterfaceMissing, Conflict
	// (package agent's Reason constants).
	ConditionDegraded = "Degraded"
)

// ChainSetNodeStatus is what one node runs for one ChainSet. The node's agent
// writes it; it is owned by the ChainSet (deleted with it) and named
// CHAINSET.NODE-HASH, with labels kfm.dev/chainset and kfm.dev/node.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=kchsn,categories=kfm
// +kubebuilder:printcolumn:name="ChainSet",type=string,JSONPath=`.spec.chainSet`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="Applied")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].reason`
// +kubebuilder:printcolumn:name="Generation",type=integer,JSONPath=`.status.observedGeneration`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ChainSetNodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ChainSetNodeStatusSpec `json:"spec"`
	// +optional
	Status NodeStatus `json:"status,omitzero"`
}

// ChainSetNodeStatusSpec names the ChainSet and the node; both are fixed
// when the object is created.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="chainSet and nodeName cannot change"
type ChainSetNodeStatusSpec struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ChainSet string `json:"chainSet"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName"`
}

// NodeStatus is the node's report.
type NodeStatus struct {
	// ObservedGeneration is the ChainSet generation this report is about.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Applied, Progressing, Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Chains has one entry per interface and hook.
	// +optional
	// +listType=atomic
	Chains []ChainStatus `json:"chains,omitempty"`
}

// ChainStatus is one chain on one interface of the node.
type ChainStatus struct {
	// Interface is empty when the selector picked none (reason
	// InterfaceMissing).
	// +optional
	Interface string `json:"interface,omitempty"`
	// +optional
	Netns string `json:"netns,omitempty"`
	Hook  string `json:"hook"`
	// Backend is the backend that runs the chain (auto resolved).
	// +optional
	Backend string `json:"backend,omitempty"`
	Applied bool   `json:"applied"`
	// Reason and Message say why a chain is not applied.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Programs in run order.
	// +optional
	// +listType=atomic
	Programs []ProgramStatus `json:"programs,omitempty"`
}

// ProgramStatus is one running program.
type ProgramStatus struct {
	Name   string `json:"name"`
	Digest string `json:"digest,omitempty"`
	// ID is the kernel's program ID.
	// +optional
	ID int64 `json:"id,omitempty"`
}

// ChainSetNodeStatusList is a list of ChainSetNodeStatus objects.
//
// +kubebuilder:object:root=true
type ChainSetNodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChainSetNodeStatus `json:"items"`
}
