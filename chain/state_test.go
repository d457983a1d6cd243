package chain

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kfm-project/kfm/bpf"
)

func TestStateRoundTrip(t *testing.T) {
	st := stateStore{dir: t.TempDir()}
	s, err := st.load()
	if err != nil || len(s.Hooks) != 0 {
		t.Fatalf("empty state dir: %+v, %v", s, err)
	}
	s.put(&HookState{Interface: "eth1", Hook: bpf.HookXDP, Backend: "tailcall", Elements: []*ElementState{{Name: "b"}}})
	s.put(&HookState{Interface: "eth0", Hook: bpf.HookTCIngress, Backend: "tcx", Elements: []*ElementState{{Name: "a"}}})
	s.put(&HookState{Interface: "eth0", Hook: bpf.HookXDP, Backend: "tailcall"}) // no elements: not kept
	if err := st.save(s); err != nil {
		t.Fatal(err)
	}
	back, err := st.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Hooks) != 2 || back.Hooks[0].Interface != "eth0" || back.Hooks[1].Interface != "eth1" {
		t.Fatalf("hooks not sorted or empty hook kept: %+v", back.Hooks)
	}
	if back.find("eth1", bpf.HookXDP).element("b") == nil {
		t.Error("element b lost")
	}
	entries, _ := os.ReadDir(st.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestStateCorruptOrNewer(t *testing.T) {
	st := stateStore{dir: t.TempDir()}
	os.WriteFile(st.path(), []byte("{not json"), 0o644)
	if _, err := st.load(); err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), st.path()) {
		t.Errorf("corrupt state: %v", err)
	}
	os.WriteFile(st.path(), []byte(`{"version": 99}`), 0o644)
	if _, err := st.load(); err == nil || !strings.Contains(err.Error(), "newer kfm") {
		t.Errorf("newer state: %v", err)
	}
}

func TestObjectStore(t *testing.T) {
	st := stateStore{dir: t.TempDir()}
	data, err := os.ReadFile("../bpf/testdata/params.o")
	if err != nil {
		t.Fatal(err)
	}
	digest, err := st.putObject(data)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := st.object(digest)
	if err != nil || obj.SHA256 != digest {
		t.Fatalf("object back: %v, %v", obj, err)
	}
	s := &State{}
	if err := st.gcObjects(s); err != nil {
		t.Fatal(err)
	}
	if _, err := st.object(digest); err == nil || !strings.Contains(err.Error(), "reinstall") {
		t.Errorf("unreferenced object not collected: %v", err)
	}
}

func TestLockSerialises(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	l1, err := acquireLock(ctx, dir, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told string
	_, err = acquireLock(ctx, dir, 100*time.Millisecond, func(msg string) { told = msg })
	if !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock: %v, want ErrLockTimeout", err)
	}
	if !strings.Contains(told, filepath.Join(dir, "lock")) || !strings.Contains(told, "kfm pid") {
		t.Errorf("waiting message %q should name the lock and its holder", told)
	}
	done := make(chan error, 1)
	go func() {
		l, err := acquireLock(ctx, dir, 5*time.Second, nil)
		if err == nil {
			l.release()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	l1.release()
	if err := <-done; err != nil {
		t.Errorf("waiter did not get the lock after release: %v", err)
	}
}

func TestInstallRequestDefaults(t *testing.T) {
	data, err := os.ReadFile("../bpf/testdata/params.o")
	if err != nil {
		t.Fatal(err)
	}
	prio := 7
	for _, tc := range []struct {
		name string
		req  InstallRequest
		want func(*Element, bpf.Hook) string // "" when fine
		err  string
	}{
		{"run config", InstallRequest{Function: "with_config"}, func(e *Element, h bpf.Hook) string {
			if h != bpf.HookXDP || e.Name != "with_config" || e.Priority != 20 || len(e.ProceedOn) != 2 {
				return "want XDP_RUN_CONFIG priority 20 and drop,pass"
			}
			return ""
		}, ""},
		{"libxdp defaults", InstallRequest{Function: "without_config", Name: "wo"}, func(e *Element, h bpf.Hook) string {
			if e.Name != "wo" || e.Priority != 50 || len(e.ProceedOn) != 1 || e.ProceedOn[0] != bpf.XDPPass {
				return "want priority 50, pass"
			}
			return ""
		}, ""},
		{"flags win", InstallRequest{Function: "with_config", Priority: &prio, ProceedOn: "pass"}, func(e *Element, h bpf.Hook) string {
			if e.Priority != 7 || len(e.ProceedOn) != 1 {
				return "flags must override metadata"
			}
			return ""
		}, ""},
		{"tc program", InstallRequest{Function: "tc_prog", Params: map[string]string{"p_u16": "0x10"}}, func(e *Element, h bpf.Hook) string {
			if h != bpf.HookTCIngress || e.ProceedOn[0] != bpf.TCOK || e.Params["p_u16"] != "16" {
				return "want tc-ingress, ok, canonical param 16"
			}
			return ""
		}, ""},
		{"ambiguous", InstallRequest{}, nil, "--function"},
		{"wrong hook", InstallRequest{Function: "tc_prog", Hook: bpf.HookXDP}, nil, "cannot run on the xdp hook"},
		{"bad verdict", InstallRequest{Function: "tc_prog", ProceedOn: "pass"}, nil, "unknown TC verdict"},
		{"bad name", InstallRequest{Function: "tc_prog", Name: "a/b"}, nil, "invalid program name"},
		{"bad param", InstallRequest{Function: "tc_prog", Params: map[string]string{"p_u8": "300"}}, nil, "0..255"},
		{"unknown param", InstallRequest{Function: "tc_prog", Params: map[string]string{"rate": "3"}}, nil, "known params are"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Source, tc.req.Data = "params.o", data
			e, h, err := tc.req.Element()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.want(e, h); msg != "" {
				t.Errorf("%s: got %+v on %s", msg, e, h)
			}
		})
	}
}
