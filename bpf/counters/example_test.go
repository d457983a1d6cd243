package counters_test

import (
	"fmt"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
)

// Read the verdict counters kfm pinned for a program and print them by
// name.
func Example() {
	c, err := counters.ReadPinned("/sys/fs/bpf/kfm/maps/2/xdp/portfilter/kfm-counters")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range c.Verdicts(bpf.HookXDP) {
		fmt.Printf("%s %d\n", v.Verdict, v.Packets)
	}
	fmt.Println("dropped", c.Dropped(bpf.HookXDP), "of", c.Total())
}

// Hold the kernel's run statistics on while sampling a program twice.
func ExampleEnableStats() {
	stats, err := counters.EnableStats()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stats.Close()
	before, _ := counters.ProgramRunStats(42)
	// ... wait ...
	after, _ := counters.ProgramRunStats(42)
	if runs := after.RunCount - before.RunCount; runs > 0 {
		fmt.Printf("%.1f ns per run\n", float64(after.RunTime-before.RunTime)/float64(runs))
	}
}
