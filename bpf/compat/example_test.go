package compat_test

import (
	"fmt"

	"github.com/kfm-project/kfm/bpf/compat"
	"github.com/kfm-project/kfm/internal/testprogs"
)

func ExampleCheck() {
	spec, err := testprogs.Spec("xdp_buff_len")
	if err != nil {
		panic(err)
	}
	r, err := compat.Check(spec, "xdp_buff_len", "5.10")
	if err != nil {
		panic(err)
	}
	if err := r.Err(); err != nil {
		fmt.Println(err) // names the missing helper or kernel version
		return
	}
	fmt.Println("runs on", r.Kernel)
}
