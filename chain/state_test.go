package chain

import (
	"bytes"
	"context"
	"encoding/json"
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
	if back.find("", "eth1", bpf.HookXDP).element("b") == nil {
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

func TestLockProgramDefaults(t *testing.T) {
	src := &Sources{BaseDir: "../bpf/testdata"}
	prio := 7
	for _, tc := range []struct {
		name string
		hook bpf.Hook
		p    ProgramSpec
		want func(LockedProgram, *Element, bpf.Hook) string // "" when fine
		err  string
	}{
		{"run config", "", ProgramSpec{Path: "params.o", Function: "with_config"}, func(lp LockedProgram, e *Element, h bpf.Hook) string {
			if h != bpf.HookXDP || e.Name != "with_config" || e.Priority != 20 || len(e.ProceedOn) != 2 || lp.Object != "sha256:"+e.Object.SHA256 {
				return "want XDP_RUN_CONFIG priority 20 and drop,pass"
			}
			return ""
		}, ""},
		{"libxdp defaults", "", ProgramSpec{Path: "params.o", Function: "without_config", Name: "wo"}, func(lp LockedProgram, e *Element, h bpf.Hook) string {
			if e.Name != "wo" || e.Priority != 50 || len(e.ProceedOn) != 1 || e.ProceedOn[0] != bpf.XDPPass {
				return "want priority 50, pass"
			}
			return ""
		}, ""},
		{"manifest wins", "", ProgramSpec{Path: "params.o", Function: "with_config", Priority: &prio, ProceedOn: []string{"pass"}}, func(lp LockedProgram, e *Element, h bpf.Hook) string {
			if e.Priority != 7 || len(e.ProceedOn) != 1 || lp.Priority != 7 {
				return "manifest values must override metadata"
			}
			return ""
		}, ""},
		{"tc program", "", ProgramSpec{Path: "params.o", Function: "tc_prog", Params: map[string]string{"p_u16": "0x10"}}, func(lp LockedProgram, e *Element, h bpf.Hook) string {
			if h != bpf.HookTCIngress || e.ProceedOn[0] != bpf.TCOK || e.Params["p_u16"] != "16" || lp.Params["p_u16"] != "0x10" {
				return "want tc-ingress, ok, canonical param 16 in the element and 0x10 (as written) in the lock"
			}
			return ""
		}, ""},
		{"ambiguous", "", ProgramSpec{Path: "params.o"}, nil, "--function"},
		{"wrong hook", bpf.HookXDP, ProgramSpec{Path: "params.o", Function: "tc_prog"}, nil, "cannot run on the xdp hook"},
		{"bad verdict", "", ProgramSpec{Path: "params.o", Function: "tc_prog", ProceedOn: []string{"pass"}}, nil, "unknown TC verdict"},
		{"bad name", "", ProgramSpec{Path: "params.o", Function: "tc_prog", Name: "a/b"}, nil, "invalid program name"},
		{"bad param", "", ProgramSpec{Path: "params.o", Function: "tc_prog", Params: map[string]string{"p_u8": "300"}}, nil, "0..255"},
		{"unknown param", "", ProgramSpec{Path: "params.o", Function: "tc_prog", Params: map[string]string{"rate": "3"}}, nil, "known params are"},
		{"missing file", "", ProgramSpec{Path: "nope.o"}, nil, "no such file"},
		{"registry without client", "", ProgramSpec{Ref: "127.0.0.1:5000/kfm/x:1.0.0"}, nil, "no registry client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp, e, h, err := src.lockProgram(context.Background(), tc.hook, tc.p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				if tc.p.Path != "" && strings.Count(err.Error(), tc.p.Path) > 1 {
					t.Errorf("the error names the object more than once: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.want(lp, e, h); msg != "" {
				t.Errorf("%s: got %+v %+v on %s", msg, lp, e, h)
			}
		})
	}
}

// FuzzLoadState: state.json is on disk between runs, where a crash, a full
// disk or a hand edit can leave anything. Every command loads it and walks
// its hooks and elements, so load must refuse what they cannot walk (with
// the "corrupt" message that says how to recover), and what it accepts must
// survive the walk and a save/load round trip unchanged.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"hooks":[{"interface":"eth0","ifindex":2,"hook":"xdp","backend":"tailcall","rootId":7,` +
		`"elements":[{"name":"a","source":"a.o","object":"sha256:00","function":"f","priority":1,"proceedOn":["pass"],"key":"k","programId":9,` +
		`"metrics":[{"name":"m","type":"counter","layout":{"map":"x","keys":[{"offset":4294967295,"size":8}],"value":{"offset":0,"size":3}}}]}],` +
		`"pending":[{"name":"a","key":"k","programId":10}],"changing":true,"owner":"ChainSet/x"}]}`))
	f.Add([]byte(`{"version":1,"hooks":[null]}`))
	f.Add([]byte(`{"version":1,"hooks":[{"interface":"eth0","hook":"xdp","elements":[null]}]}`))
	f.Add([]byte(`{"version":-1,"hooks":null}`))
	f.Add([]byte(`null`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		st := stateStore{dir: dir}
		if err := os.WriteFile(st.path(), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := st.load()
		if err != nil {
			if !strings.Contains(err.Error(), st.path()) {
				t.Fatalf("refusal does not name the file: %v", err)
			}
			return
		}
		fresh := &State{Version: StateVersion}
		for _, h := range s.Hooks {
			if s.find(h.Netns, h.Interface, h.Hook) == nil {
				t.Fatalf("hook %s %s not found", h.Interface, h.Hook)
			}
			for _, e := range h.Elements {
				h.element(e.Name)
			}
			for _, p := range h.Pending {
				h.element(p.Name)
			}
			fresh.put(h)
		}
		if err := st.save(s); err != nil {
			t.Fatal(err)
		}
		again, err := st.load()
		if err != nil {
			t.Fatalf("saved state does not load: %v", err)
		}
		s.Version = StateVersion
		before, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("loaded state does not marshal: %v", err)
		}
		after, _ := json.Marshal(again)
		if !bytes.Equal(before, after) {
			t.Fatalf("state changed in a save/load round trip:\n%s\n%s", before, after)
		}
	})
}
