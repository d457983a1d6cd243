package programs_test

import (
	"fmt"

	"github.com/kfm-project/kfm/examples/programs"
)

func ExampleNames() {
	fmt.Println(programs.Names())
	// Output: [tc_count tc_mark xdp_count xdp_icmpdrop xdp_portfilter xdp_ratelimit]
}

// Set the parameters of a sample before loading it with ebpf.NewCollection.
func ExampleSpec() {
	spec, err := programs.Spec("xdp_ratelimit")
	if err != nil {
		panic(err)
	}
	var rate, burst uint32
	if err := spec.Variables["rate"].Get(&rate); err != nil {
		panic(err)
	}
	if err := spec.Variables["burst"].Get(&burst); err != nil {
		panic(err)
	}
	fmt.Printf("%v program, default rate %d/s, burst %d\n", spec.Programs["xdp_ratelimit"].Type, rate, burst)

	// ebpf.NewCollection(spec) now loads it with rate 50.
	if err := spec.Variables["rate"].Set(uint32(50)); err != nil {
		panic(err)
	}
	// Output: XDP program, default rate 1000/s, burst 100
}

func ExampleObject() {
	elf, err := programs.Object("tc_mark")
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", elf[:4])

	_, err = programs.Object("tc_nope")
	fmt.Println(err)
	// Output:
	// "\x7fELF"
	// sample program "tc_nope": unknown sample program (known: tc_count, tc_mark, xdp_count, xdp_icmpdrop, xdp_portfilter, xdp_ratelimit)
}
