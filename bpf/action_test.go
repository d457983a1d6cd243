package bpf_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/bpf"
)

func TestParseActions(t *testing.T) {
	for _, tc := range []struct {
		hook bpf.Hook
		in   string
		want bpf.Actions
		err  string
	}{
		{bpf.HookXDP, "pass", bpf.Actions{bpf.XDPPass}, ""},
		{bpf.HookXDP, "drop,pass,drop", bpf.Actions{bpf.XDPDrop, bpf.XDPPass}, ""},
		{bpf.HookXDP, "XDP_PASS, XDP_TX", bpf.Actions{bpf.XDPPass, bpf.XDPTx}, ""},
		{bpf.HookXDP, "ok", nil, "unknown XDP verdict \"ok\": use one of aborted, drop, pass, tx, redirect"},
		{bpf.HookXDP, "", nil, "empty verdict list"},
		{bpf.HookTCIngress, "ok,unspec", bpf.Actions{bpf.TCUnspec, bpf.TCOK}, ""},
		{bpf.HookTCEgress, "TC_ACT_SHOT", bpf.Actions{bpf.TCShot}, ""},
		{bpf.HookTCEgress, "pass", nil, "unknown TC verdict"},
	} {
		got, err := bpf.ParseActions(tc.hook, tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseActions(%s, %q) error %v, want %q", tc.hook, tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseActions(%s, %q) = %v, %v; want %v", tc.hook, tc.in, got, err, tc.want)
		}
	}
}

func TestXDPMask(t *testing.T) {
	as := bpf.Actions{bpf.XDPDrop, bpf.XDPPass}
	if m := as.XDPMask(); m != 0b110 {
		t.Errorf("mask %b, want 110", m)
	}
	// Bit 31 is libxdp's "no program attached" marker, not a verdict.
	if got := bpf.ActionsFromXDPMask(1<<31 | 1<<2); !reflect.DeepEqual(got, bpf.Actions{bpf.XDPPass}) {
		t.Errorf("ActionsFromXDPMask = %v", got)
	}
	if got := (bpf.Actions{bpf.TCOK, bpf.TCShot}).Names(bpf.HookTCIngress); !reflect.DeepEqual(got, []string{"ok", "shot"}) {
		t.Errorf("names %v", got)
	}
}

func TestParseHook(t *testing.T) {
	for _, s := range []string{"xdp", "TC-Ingress", "tc-egress"} {
		if _, err := bpf.ParseHook(s); err != nil {
			t.Errorf("ParseHook(%q): %v", s, err)
		}
	}
	if _, err := bpf.ParseHook("ingress"); err == nil || !strings.Contains(err.Error(), "tc-ingress") {
		t.Errorf("ParseHook(ingress): %v", err)
	}
}
