package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of this package's types.
var GroupVersion = schema.GroupVersion{Group: "kfm.dev", Version: "v1alpha1"}

// AddToScheme registers ChainSet and ChainSetNodeStatus (and their lists)
// with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ChainSet{}, &ChainSetList{},
		&ChainSetNodeStatus{}, &ChainSetNodeStatusList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
