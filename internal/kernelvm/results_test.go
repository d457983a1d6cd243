package kernelvm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// feed runs a transcript through a Console, one second per line, with the
// serial console's CRLF line ends.
func feed(transcript string) *Console {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewConsole(t0)
	for i, l := range strings.Split(strings.TrimPrefix(transcript, "\n"), "\n") {
		c.Line(t0.Add(time.Duration(i+1)*time.Second), l+"\r\n")
	}
	return c
}

const passingTranscript = `
[    0.000000] Linux version 6.12.117+deb13-cloud-amd64
KFM-VM: ready 6.12.117+deb13-cloud-amd64
KFM-VM: begin bpf/probe
=== RUN   TestEXT
    probe_test.go:19: EXT programs load, attach and re-attach on this kernel
--- PASS: TestEXT (0.11s)
=== RUN   TestTCX
    probe_test.go:37: TCX: <nil>
--- PASS: TestTCX (0.00s)
=== RUN   TestSkipped
    probe_test.go:40: not on this kernel
--- SKIP: TestSkipped (0.00s)
PASS

KFM-VM: end bpf/probe exit=0
KFM-VM: dmesg-begin
[    0.000000] Linux version 6.12.117+deb13-cloud-amd64
[    3.000000] kfm: running suites
[    4.000000] veth: something during the tests
KFM-VM: dmesg-end
KFM-VM: done
[    9.454082] reboot: Power down`

func TestConsolePassing(t *testing.T) {
	c := feed(passingTranscript)
	if p := c.Problems([]string{"bpf/probe"}); len(p) != 0 {
		t.Fatalf("problems in a passing run: %v", p)
	}
	if !c.Ready || c.Release != "6.12.117+deb13-cloud-amd64" || !c.Done {
		t.Errorf("ready=%v release=%q done=%v", c.Ready, c.Release, c.Done)
	}
	if got := c.ReadyAt.Sub(c.Start); got != 2*time.Second {
		t.Errorf("boot time %v, want 2s (the ready marker is line 2)", got)
	}
	if p, f, s := c.Totals(); p != 2 || f != 0 || s != 1 {
		t.Errorf("totals %d/%d/%d, want 2 passed, 0 failed, 1 skipped", p, f, s)
	}
	s := c.Suite("bpf/probe")
	want := []TestResult{{"TestEXT", Pass, 110 * time.Millisecond}, {"TestTCX", Pass, 0}, {"TestSkipped", Skip, 0}}
	if !reflect.DeepEqual(s.Tests, want) {
		t.Errorf("tests %+v, want %+v", s.Tests, want)
	}
	if s.Elapsed() != 12*time.Second {
		t.Errorf("suite elapsed %v, want 12s (begin on line 3, end on line 15)", s.Elapsed())
	}
	if got := c.TestDmesg(); !reflect.DeepEqual(got, []string{"[    4.000000] veth: something during the tests"}) {
		t.Errorf("TestDmesg = %q", got)
	}
	if strings.Contains(strings.Join(s.Output, "\n"), "\r") {
		t.Errorf("carriage returns kept in output")
	}
}

const failingTranscript = `
KFM-VM: ready 5.10.0-32-cloud-amd64
KFM-VM: begin chain
=== RUN   TestA
--- PASS: TestA (0.00s)
=== RUN   TestSub
=== RUN   TestSub/a
    x_test.go:6: in a
=== RUN   TestSub/b
    x_test.go:6: b failed
--- FAIL: TestSub (0.00s)
    --- PASS: TestSub/a (0.00s)
    --- FAIL: TestSub/b (0.00s)
=== RUN   TestPar1
=== PAUSE TestPar1
=== RUN   TestPar2
=== PAUSE TestPar2
=== CONT  TestPar1
    x_test.go:7: p1 log
=== CONT  TestPar2
    x_test.go:8: p2 log
=== NAME  TestPar1
    x_test.go:7: p1 fails
--- FAIL: TestPar1 (0.00s)
--- PASS: TestPar2 (0.00s)
FAIL

KFM-VM: end chain exit=1
KFM-VM: done`

func TestConsoleFailing(t *testing.T) {
	c := feed(failingTranscript)
	p := c.Problems([]string{"chain"})
	if len(p) != 1 || !strings.Contains(p[0], "suite chain failed (exit status 1)") {
		t.Errorf("problems %q", p)
	}
	if pa, f, s := c.Totals(); pa != 3 || f != 3 || s != 0 {
		t.Errorf("totals %d/%d/%d, want 3 passed (TestA, TestSub/a, TestPar2), 3 failed", pa, f, s)
	}
	s := c.Suite("chain")
	sub := strings.Join(s.TestOutput("TestSub"), "\n")
	for _, want := range []string{"=== RUN   TestSub/b", "b failed", "--- FAIL: TestSub/b"} {
		if !strings.Contains(sub, want) {
			t.Errorf("TestSub output lacks %q:\n%s", want, sub)
		}
	}
	par1 := strings.Join(s.TestOutput("TestPar1"), "\n")
	if !strings.Contains(par1, "p1 log") || !strings.Contains(par1, "p1 fails") || strings.Contains(par1, "p2 log") {
		t.Errorf("parallel output misattributed; TestPar1 got:\n%s", par1)
	}
}

func TestConsoleProblems(t *testing.T) {
	for _, tc := range []struct {
		name       string
		transcript string
		expected   []string
		want       []string // substrings, one per problem
	}{
		{"never ready", "[    1.0] Kernel panic - not syncing: no init found", []string{"a"},
			[]string{"never reported ready"}},
		{"VM died inside a suite", "KFM-VM: ready 6.1\nKFM-VM: begin a\n=== RUN   TestX\n[  9.0] BUG: kernel NULL pointer", []string{"a", "b"},
			[]string{"suite a did not finish", "suite b never started", "did not reach the end"}},
		{"panic without FAIL line", "KFM-VM: ready 6.1\nKFM-VM: begin a\n=== RUN   TestX\npanic: boom\nKFM-VM: end a exit=2\nKFM-VM: done", []string{"a"},
			[]string{"exited with status 2 without a failing test"}},
		{"no tests ran", "KFM-VM: ready 6.1\nKFM-VM: begin a\nPASS\nKFM-VM: end a exit=0\nKFM-VM: done", []string{"a"},
			[]string{"printed no test result"}},
		{"init error", "KFM-VM: error insmod veth.ko\nKFM-VM: ready 6.1\nKFM-VM: begin a\n--- PASS: TestX (0.00s)\nKFM-VM: end a exit=0\nKFM-VM: done", []string{"a"},
			[]string{"insmod veth.ko"}},
		{"end of a suite that did not begin", "KFM-VM: ready 6.1\nKFM-VM: end a exit=0\nKFM-VM: done", []string{},
			[]string{"did not begin"}},
		{"marker after unterminated output", "KFM-VM: ready 6.1\nKFM-VM: begin a\n--- PASS: TestX (0.00s)\nno newline hereKFM-VM: end a exit=0\nKFM-VM: done", []string{"a"},
			nil},
	} {
		c := feed(tc.transcript)
		got := c.Problems(tc.expected)
		if len(got) != len(tc.want) {
			t.Errorf("%s: problems %q, want %d", tc.name, got, len(tc.want))
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tc.want[i]) {
				t.Errorf("%s: problem %d = %q, want %q", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func TestReport(t *testing.T) {
	pass := &KernelResult{
		Spec:     KernelSpec{Name: "6.12"},
		Kernel:   &Kernel{Release: "6.12.117+deb13-cloud-amd64", Version: "6.12.117-1"},
		Expected: []string{"bpf/probe"},
		Console:  feed(passingTranscript),
		Elapsed:  41300 * time.Millisecond,
	}
	fail := &KernelResult{
		Spec:     KernelSpec{Name: "5.10"},
		Kernel:   &Kernel{Release: "5.10.0-32-cloud-amd64", Version: "5.10.223-1"},
		Expected: []string{"chain"},
		Console:  feed(failingTranscript),
		Elapsed:  9 * time.Second,
	}
	var buf bytes.Buffer
	WriteReport(&buf, []*KernelResult{pass, fail})
	out := buf.String()
	for _, want := range []string{
		"kernel 6.12.117: 2 passed, 0 failed, 1 skipped in 41.3s (boot 2.0s)\n",
		"kernel 5.10.223: 3 passed, 3 failed, 0 skipped in 9.0s (boot 1.0s) FAILED\n",
		"skipped on 6.12: bpf/probe TestSkipped: probe_test.go:40: not on this kernel\n",
		"=== kernel 5.10.0-32-cloud-amd64 failed:\n  - suite chain failed (exit status 1)\n",
		"--- FAIL on kernel 5.10.0-32-cloud-amd64: chain TestSub\n",
		"    x_test.go:6: b failed\n",
		"--- FAIL on kernel 5.10.0-32-cloud-amd64: chain TestPar1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL on kernel 5.10.0-32-cloud-amd64: chain TestSub/b") {
		t.Errorf("subtest failure printed separately; its output is part of its parent's")
	}
	if strings.Contains(out, "=== kernel 6.12") {
		t.Errorf("passing kernel reported as failed:\n%s", out)
	}
	if !pass.Failed() == false || !fail.Failed() {
		t.Errorf("Failed: pass=%v fail=%v", pass.Failed(), fail.Failed())
	}

	timedOut := &KernelResult{Spec: KernelSpec{Name: "6.1"}, Expected: []string{"a"}, Console: feed("KFM-VM: ready 6.1\nKFM-VM: begin a\n=== RUN   TestHang"), Err: ErrVMTimeout}
	buf.Reset()
	WriteReport(&buf, []*KernelResult{timedOut})
	for _, want := range []string{"kernel 6.1: 0 passed, 0 failed, 0 skipped", "FAILED", "kernel VM timed out", "suite a did not finish", "=== RUN   TestHang"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("timed-out report lacks %q:\n%s", want, buf.String())
		}
	}
}

func FuzzConsole(f *testing.F) {
	f.Add(passingTranscript)
	f.Add(failingTranscript)
	f.Add("KFM-VM: begin\nKFM-VM: end\nKFM-VM: \n--- PASS: \n=== RUN \n--- FAIL: x (s)")
	f.Fuzz(func(t *testing.T, transcript string) {
		c := feed(transcript)
		p, fl, s := c.Totals()
		if p+fl+s > c.Lines {
			t.Fatalf("%d results from %d lines", p+fl+s, c.Lines)
		}
		_ = c.Problems([]string{"a"})
		var buf bytes.Buffer
		WriteReport(&buf, []*KernelResult{{Spec: KernelSpec{Name: "x"}, Console: c, Expected: []string{"a"}}})
	})
}
