package kernelvm

import (
	"fmt"
	"io"
	"strings"
)

// Summary is the one-line result of a kernel, e.g.
// "kernel 6.12.117: 12 passed, 0 failed, 1 skipped in 41.3s (boot 4.8s)".
// Counts include subtests.
func (r *KernelResult) Summary() string {
	name := r.Spec.Name
	if r.Kernel != nil {
		name = r.Kernel.Short()
	}
	var passed, failed, skipped int
	if r.Console != nil {
		passed, failed, skipped = r.Console.Totals()
	}
	s := fmt.Sprintf("kernel %s: %d passed, %d failed, %d skipped in %.1fs (boot %.1fs)",
		name, passed, failed, skipped, r.Elapsed.Seconds(), r.Boot().Seconds())
	if r.Failed() {
		s += " FAILED"
	}
	return s
}

// WriteReport prints one summary line per kernel, then for every kernel
// that failed: what went wrong and the full output of each failing test (or
// of the whole suite, or the boot log, when no test is to blame). Skipped
// tests are listed with their reason, so that a skip never hides.
func WriteReport(w io.Writer, results []*KernelResult) {
	for _, r := range results {
		fmt.Fprintln(w, r.Summary())
	}
	for _, r := range results {
		if r.Console != nil {
			for _, s := range r.Console.Suites {
				for _, t := range s.Tests {
					if t.Status == Skip {
						fmt.Fprintf(w, "  skipped on %s: %s %s: %s\n", r.Spec.Name, s.Name, t.Name, skipReason(s.TestOutput(t.Name)))
					}
				}
			}
		}
	}
	for _, r := range results {
		problems := r.Problems()
		if len(problems) == 0 {
			continue
		}
		label := r.Spec.Name
		if r.Kernel != nil {
			label = r.Kernel.Release
		}
		fmt.Fprintf(w, "\n=== kernel %s failed:\n", label)
		for _, p := range problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
		c := r.Console
		if c == nil {
			continue
		}
		if !c.Ready {
			fmt.Fprintf(w, "\n--- boot log of kernel %s (last 60 lines):\n", label)
			if len(c.Boot) == 0 {
				fmt.Fprintln(w, "(nothing: the kernel boots with quiet; run with -v, or -shell to look inside)")
			}
			writeLines(w, tail(c.Boot, 60))
		}
		for _, s := range c.Suites {
			if len(s.Problems()) == 0 {
				continue
			}
			blamed := false
			for _, t := range s.Tests {
				if t.Status == Fail && !strings.Contains(t.Name, "/") {
					fmt.Fprintf(w, "\n--- FAIL on kernel %s: %s %s\n", label, s.Name, t.Name)
					writeLines(w, s.TestOutput(t.Name))
					blamed = true
				}
			}
			if !blamed {
				fmt.Fprintf(w, "\n--- output of suite %s on kernel %s:\n", s.Name, label)
				writeLines(w, s.Output)
			}
		}
		if d := c.TestDmesg(); len(d) > 0 {
			fmt.Fprintf(w, "\n--- kernel log of %s while the suites ran (last 100 lines):\n", label)
			writeLines(w, tail(d, 100))
		} else if c.Ready && !c.Done {
			fmt.Fprintf(w, "\n--- last console lines of kernel %s:\n", label)
			var last []string
			if n := len(c.Suites); n > 0 {
				last = c.Suites[n-1].Output
			} else {
				last = c.Boot
			}
			writeLines(w, tail(last, 40))
		}
	}
}

// skipReason is the last log line of a skipped test.
func skipReason(out []string) string {
	for i := len(out) - 1; i >= 0; i-- {
		l := strings.TrimSpace(out[i])
		if l != "" && !strings.HasPrefix(l, "--- ") && !strings.HasPrefix(l, "=== ") {
			return l
		}
	}
	return "(no reason given)"
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

func writeLines(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
