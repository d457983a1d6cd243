package testprogs_test

import (
	"fmt"

	"github.com/kfm-project/kfm/internal/testprogs"
)

func ExampleSpec() {
	spec, err := testprogs.Spec("xdp_frags")
	if err != nil {
		panic(err)
	}
	p := spec.Programs["xdp_frags"]
	fmt.Println(p.Type, p.SectionName)
	// Output: XDP xdp.frags
}
