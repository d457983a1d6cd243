package chain_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kfm-project/kfm/chain"
)

// Reading kfm.yaml: chains by interface and hook, programs in the order
// written (kfm sorts them by priority when it applies them).
func ExampleParseManifest() {
	m, err := chain.ParseManifest("kfm.yaml", strings.NewReader(`version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: ratelimit
        ref: registry.example.com/net/xdp-ratelimit:^1.2
        priority: 10
        params: {rate: 1000}
      - name: count
        path: /opt/ebpf/xdp_count.o
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range m.Chain("eth0", "xdp").Programs {
		fmt.Println(p.Name, p.Ref+p.Path, p.Params)
	}
	// Output:
	// ratelimit registry.example.com/net/xdp-ratelimit:^1.2 map[rate:1000]
	// count /opt/ebpf/xdp_count.o map[]
}

// A mistake in kfm.yaml is reported with its line, and callers can tell it
// from other failures with errors.Is.
func ExampleParseManifest_unknownKey() {
	_, err := chain.ParseManifest("kfm.yaml", strings.NewReader(`version: 1
chains:
  - interface: eth0
    hook: xdp
    programs:
      - name: count
        path: /opt/ebpf/xdp_count.o
        priorty: 10
`))
	fmt.Println(errors.Is(err, chain.ErrManifest))
	fmt.Println(err)
	// Output:
	// true
	// kfm.yaml: invalid manifest: line 8: unknown key "priorty": did you mean "priority"?
}
