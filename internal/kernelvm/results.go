package kernelvm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The VM's init script frames everything on the serial console with lines
// that start with markerPrefix:
//
//	KFM-VM: ready <uname -r>
//	KFM-VM: begin <suite>
//	... the test binary's -test.v output ...
//	KFM-VM: end <suite> exit=<status>
//	KFM-VM: dmesg-begin
//	... kernel log ...
//	KFM-VM: dmesg-end
//	KFM-VM: done
const markerPrefix = "KFM-VM: "

// Status is the outcome of one test.
type Status string

// Test outcomes as `go test -v` prints them.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// TestResult is one test (or subtest) of a suite.
type TestResult struct {
	Name    string
	Status  Status
	Elapsed time.Duration
}

// SuiteResult is what one test binary printed inside the VM.
type SuiteResult struct {
	Name         string
	Begun, Ended bool
	Exit         int // exit status of the test binary; valid when Ended
	Tests        []TestResult
	Output       []string            // every line between begin and end
	byTest       map[string][]string // output lines attributed to each test
	current      string              // test the next output line belongs to
	Start, Stop  time.Time           // host times of the begin and end markers
}

// TestOutput returns the lines printed while test name (or one of its
// subtests) ran.
func (s *SuiteResult) TestOutput(name string) []string {
	return s.byTest[name]
}

// Count returns how many tests (subtests included) ended with status st.
func (s *SuiteResult) Count(st Status) int {
	n := 0
	for _, t := range s.Tests {
		if t.Status == st {
			n++
		}
	}
	return n
}

// Elapsed is the host time between the suite's begin and end markers.
func (s *SuiteResult) Elapsed() time.Duration {
	if s.Start.IsZero() || s.Stop.IsZero() {
		return 0
	}
	return s.Stop.Sub(s.Start)
}

// Console collects one VM's serial console, line by line, into results.
// The zero value is not usable; call NewConsole.
type Console struct {
	Start   time.Time // host time the VM was started
	Ready   bool
	ReadyAt time.Time
	Release string   // uname -r reported by the VM
	Boot    []string // lines before the ready marker (kernel and init messages)
	Suites  []*SuiteResult
	Dmesg   []string
	Done    bool
	Errors  []string // init-script errors reported with "KFM-VM: error ..."
	Lines   int

	cur     *SuiteResult
	inDmesg bool
}

// NewConsole returns a Console for a VM started at start.
func NewConsole(start time.Time) *Console {
	return &Console{Start: start}
}

// Line feeds one line of console output received at host time t.
func (c *Console) Line(t time.Time, line string) {
	c.Lines++
	line = strings.TrimRight(line, "\r\n")
	line = strings.TrimLeft(line, "\r")
	if i := strings.Index(line, markerPrefix); i >= 0 {
		// Text before a marker on the same line is output that lacked a
		// final newline.
		if i > 0 {
			c.text(line[:i])
		}
		c.marker(t, strings.Fields(line[i+len(markerPrefix):]))
		return
	}
	c.text(line)
}

func (c *Console) marker(t time.Time, f []string) {
	if len(f) == 0 {
		return
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "ready":
		c.Ready, c.ReadyAt, c.Release = true, t, arg(1)
	case "begin":
		c.cur = &SuiteResult{Name: arg(1), Begun: true, Start: t, byTest: map[string][]string{}}
		c.Suites = append(c.Suites, c.cur)
	case "end":
		s := c.cur
		if s == nil || s.Name != arg(1) {
			c.Errors = append(c.Errors, fmt.Sprintf("end marker for suite %q that did not begin", arg(1)))
			return
		}
		s.Ended, s.Stop, s.Exit = true, t, -1
		if v, ok := strings.CutPrefix(arg(2), "exit="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				s.Exit = n
			}
		}
		c.cur = nil
	case "dmesg-begin":
		c.inDmesg = true
	case "dmesg-end":
		c.inDmesg = false
	case "done":
		c.Done = true
	case "error":
		c.Errors = append(c.Errors, strings.Join(f[1:], " "))
	}
}

func (c *Console) text(line string) {
	switch {
	case c.inDmesg:
		c.Dmesg = append(c.Dmesg, line)
	case c.cur != nil:
		c.cur.output(line)
	case !c.Ready:
		c.Boot = append(c.Boot, line)
	default:
		c.Boot = append(c.Boot, line) // between suites: init messages
	}
}

// output handles one line of `go test -v` output.
func (s *SuiteResult) output(line string) {
	s.Output = append(s.Output, line)
	trimmed := strings.TrimLeft(line, " ")
	for _, h := range []string{"=== RUN ", "=== CONT ", "=== NAME ", "=== PAUSE "} {
		if name, ok := strings.CutPrefix(trimmed, h); ok {
			name = strings.TrimSpace(name)
			s.current = name
			if h == "=== RUN " || h == "=== NAME " || h == "=== CONT " {
				s.attribute(name, line)
			}
			return
		}
	}
	for _, st := range []Status{Pass, Fail, Skip} {
		if rest, ok := strings.CutPrefix(trimmed, "--- "+string(st)+": "); ok {
			name, elapsed := rest, time.Duration(0)
			if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, "s)") {
				name = rest[:i]
				if d, err := time.ParseDuration(rest[i+2 : len(rest)-1]); err == nil {
					elapsed = d
				}
			}
			s.Tests = append(s.Tests, TestResult{Name: name, Status: st, Elapsed: elapsed})
			s.attribute(name, line)
			if trimmed == line {
				// A top-level test ended; what follows (its subtests'
				// result lines aside) is not its output.
				s.current = ""
			}
			return
		}
	}
	if s.current != "" {
		s.attribute(s.current, line)
	}
}

// attribute records line as output of test name and of its parents.
func (s *SuiteResult) attribute(name, line string) {
	for {
		s.byTest[name] = append(s.byTest[name], line)
		i := strings.LastIndex(name, "/")
		if i < 0 {
			return
		}
		name = name[:i]
	}
}

// Problems lists what went wrong in the suite: a non-zero exit, a missing
// end marker, or no test result at all. Empty means the suite passed.
func (s *SuiteResult) Problems() []string {
	var p []string
	switch {
	case !s.Ended:
		p = append(p, fmt.Sprintf("suite %s did not finish (the VM stopped or timed out while it ran)", s.Name))
	case s.Exit != 0 && s.Count(Fail) == 0:
		p = append(p, fmt.Sprintf("suite %s exited with status %d without a failing test (panic, timeout or TestMain failure; see its output)", s.Name, s.Exit))
	case s.Exit != 0:
		p = append(p, fmt.Sprintf("suite %s failed (exit status %d)", s.Name, s.Exit))
	case s.Count(Fail) > 0:
		p = append(p, fmt.Sprintf("suite %s reported failing tests but exited 0", s.Name))
	}
	if s.Ended && s.Exit == 0 && len(s.Tests) == 0 {
		p = append(p, fmt.Sprintf("suite %s printed no test result (does its Run expression match any test?)", s.Name))
	}
	return p
}

// Suite returns the result of the named suite, or nil when it never began.
func (c *Console) Suite(name string) *SuiteResult {
	for _, s := range c.Suites {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Problems lists everything that makes this VM run a failure, given the
// suites it was supposed to run. Empty means every suite passed.
func (c *Console) Problems(expected []string) []string {
	var p []string
	if !c.Ready {
		p = append(p, "the VM never reported ready (boot or init script failed; see the boot log)")
	}
	p = append(p, c.Errors...)
	for _, name := range expected {
		s := c.Suite(name)
		if s == nil {
			if c.Ready {
				p = append(p, fmt.Sprintf("suite %s never started", name))
			}
			continue
		}
		p = append(p, s.Problems()...)
	}
	if c.Ready && !c.Done {
		p = append(p, "the VM did not reach the end of its init script")
	}
	return p
}

// kmsgSuitesStart is what init writes to /dev/kmsg before the first suite.
const kmsgSuitesStart = "kfm: running suites"

// TestDmesg returns the kernel log lines written while the suites ran (the
// boot messages before them are left out).
func (c *Console) TestDmesg() []string {
	for i, l := range c.Dmesg {
		if strings.Contains(l, kmsgSuitesStart) {
			return c.Dmesg[i+1:]
		}
	}
	return c.Dmesg
}

// Totals adds up the tests of all suites.
func (c *Console) Totals() (passed, failed, skipped int) {
	for _, s := range c.Suites {
		passed += s.Count(Pass)
		failed += s.Count(Fail)
		skipped += s.Count(Skip)
	}
	return passed, failed, skipped
}
