package chaintest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/kfm-project/kfm/bpf"
)

// crashEnv carries the child's instructions (JSON of crashJob).
const crashEnv = "KFM_CHAINTEST_CRASH_CHILD"

type crashJob struct {
	NSPath  string     `json:"nsPath"`
	Target  bpf.Target `json:"target"`
	BPFFS   string     `json:"bpffs"`
	Backend string     `json:"backend"`
}

// childTB stands in for a testing.TB in the child process, which runs
// outside any test: failures end the process.
type childTB struct{ testing.TB }

func (childTB) Helper()                          {}
func (childTB) Fatal(args ...any)                { fmt.Fprintln(os.Stderr, args...); os.Exit(2) }
func (childTB) Fatalf(format string, a ...any)   { fmt.Fprintf(os.Stderr, format+"\n", a...); os.Exit(2) }
func (c childTB) Errorf(format string, a ...any) { c.Fatalf(format, a...) }

// MaybeCrashChild makes the test binary the child of Crash when the
// environment says so: call it first in TestMain. The child enters the
// namespace and applies the chains AB and BA alternately, forever, until it
// is killed; newBackend makes its backend from Crash's variant. In a
// normal run it returns at once.
func MaybeCrashChild(newBackend func(variant string) Backend) {
	raw := os.Getenv(crashEnv)
	if raw == "" {
		return
	}
	t := childTB{}
	var job crashJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		t.Fatal(err)
	}
	job.Target.BPFFS = job.BPFFS
	runtime.LockOSThread() // this thread stays in the namespace
	ns, err := vnetns.GetFromPath(job.NSPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := vnetns.Set(ns); err != nil {
		t.Fatal(err)
	}
	b := newBackend(job.Backend)
	ctx := context.Background()
	for i := 0; ; i++ {
		ch, err := b.Prepare(ctx, job.Target, crashChain(t, job.Target.Hook, i%2 == 0), bpf.PrepareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		ch.Close()
	}
}

// crashChain is A then B (ab) or B then A, tag programs for hook h.
func crashChain(tb testing.TB, h bpf.Hook, ab bool) []bpf.Component {
	obj := Object(tb, "tag")
	fn := "xdp_tag"
	if h.IsTC() {
		fn = "tc_tag"
	}
	comp := func(name string, prio int) Component {
		return Component{Obj: obj, Name: name, Function: fn, Priority: prio, Params: map[string]string{"tag": fmt.Sprint(int(name[0]))}}
	}
	if ab {
		return Build(tb, comp("A", 1), comp("B", 2))
	}
	return Build(tb, comp("B", 1), comp("A", 2))
}

// Crash kills, at random moments, child processes that keep changing the
// chain on env's hook, first AB, with backend (the test binary re-run; its TestMain
// must call MaybeCrashChild and make a backend of the same kind from
// variant), rounds times. After every kill the hook must run one complete
// chain, AB or BA, for every packet, and Current must list its two
// programs. The caller then checks that a change by this process cleans
// up.
func Crash(t *testing.T, env *Env, b Backend, variant string, rounds int) {
	job, err := json.Marshal(crashJob{NSPath: env.NS.Path(), Target: env.Target, BPFFS: env.Target.BPFFS, Backend: variant})
	if err != nil {
		t.Fatal(err)
	}
	env.Apply(t, b, crashChain(t, env.Target.Hook, true))
	kills := 0
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+string(job))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rand.IntN(180)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			kills++
		} else {
			t.Fatalf("child exited on its own: %v", err)
		}
		c := env.Current(t, b)
		if c == nil {
			t.Fatalf("round %d: no chain after the kill", round)
		}
		// Current names programs by function: tell A and B apart by the
		// traces.
		traces := env.Traces(t, 10, 10)
		var chains []string
		for k := range traces {
			chains = append(chains, k)
		}
		if len(c.Programs) != 2 || len(traces) != 1 || traces["AB"] != 10 && traces["BA"] != 10 {
			t.Fatalf("round %d: after the kill Current lists %d programs, traffic shows %s: want one complete chain of 2", round, len(c.Programs), FormatTraces(traces))
		}
		t.Logf("round %d: killed; runs %v", round, chains)
	}
	if kills < rounds {
		t.Fatalf("only %d of %d children were killed", kills, rounds)
	}
}
