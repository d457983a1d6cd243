//go:build !kfm_core

package main

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
)

// chainSet checks the flags before anything is resolved.
func (f *chainSetFlags) check() error {
	if f.name == "" {
		if f.nodeSelector != "" {
			return usageErrorf("--node-selector needs --chainset NAME")
		}
		return nil
	}
	if errs := validation.IsDNS1123Subdomain(f.name); len(errs) > 0 {
		return usageErrorf("--chainset %q is not a Kubernetes object name: %s", f.name, strings.Join(errs, "; "))
	}
	if _, err := metav1.ParseToLabelSelector(f.nodeSelector); err != nil {
		return usageErrorf("--node-selector %q: %v", f.nodeSelector, err)
	}
	return nil
}

// write prints the lock as a ChainSet.
func (f *chainSetFlags) write(g *globals, l *chain.Lock) error {
	var sel *metav1.LabelSelector
	if f.nodeSelector != "" {
		var err error
		if sel, err = metav1.ParseToLabelSelector(f.nodeSelector); err != nil {
			return usageErrorf("--node-selector %q: %v", f.nodeSelector, err)
		}
	}
	cs, err := v1alpha1.FromLock(f.name, l, sel)
	if err != nil {
		return fmt.Errorf("kfm.lock as ChainSet %s: %w", f.name, err)
	}
	if g.output == "json" {
		return printJSON(g.out, cs)
	}
	data, err := yaml.Marshal(cs)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.out, "# ChainSet %s: written by kfm lock --chainset from kfm.lock; kubectl apply -f it.\n%s", f.name, data)
	return err
}
