package tc_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kfm-project/kfm/bpf/internal/chaintest"
)

// BenchmarkChange measures one chain change on a live hook (Prepare and
// Commit, as kfm apply runs them), in ms/change: reversing a chain of N
// programs (N-1 programs loaded, attached, switched to by the gate and the
// old ones detached), and upgrading one program of five in place (one
// program loaded and swapped into its link or filter, no gate switch).
//
//	KFM_REQUIRE_PRIVILEGED=1 go test -run '^$' -bench Change ./bpf/tc/
func BenchmarkChange(b *testing.B) {
	for _, bc := range cases {
		if bc.name[len(bc.name)-6:] == "egress" {
			continue // the same code as ingress
		}
		for _, n := range []int{2, 5, 10} {
			b.Run(fmt.Sprintf("%s/reverse-%d", bc.name, n), func(b *testing.B) {
				f := newFixture(b, bc)
				var fwd, rev []chaintest.Component
				for i := 0; i < n; i++ {
					name := fmt.Sprintf("p%d", i)
					f.maps[name] = chaintest.NewMaps(b, f.obj)
					fwd = append(fwd, f.comp(name, i))
					rev = append([]chaintest.Component{f.comp(name, n-i)}, rev...)
				}
				f.Apply(b, f.b, chaintest.Build(b, fwd...))
				measure(b, func(i int) {
					if i%2 == 0 {
						f.Apply(b, f.b, chaintest.Build(b, rev...))
					} else {
						f.Apply(b, f.b, chaintest.Build(b, fwd...))
					}
				})
			})
		}
		b.Run(bc.name+"/upgrade-1-of-5", func(b *testing.B) {
			f := newFixture(b, bc)
			chain := func(i int) []chaintest.Component {
				return []chaintest.Component{f.comp("A", 1), f.comp("B", 2), f.comp("C", 3, "port", fmt.Sprint(1000+i%2)), f.comp("D", 4), f.comp("E", 5)}
			}
			f.Apply(b, f.b, chaintest.Build(b, chain(1)...))
			measure(b, func(i int) { f.Apply(b, f.b, chaintest.Build(b, chain(i)...)) })
		})
	}
}

func measure(b *testing.B, change func(i int)) {
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		change(i)
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/change")
}
