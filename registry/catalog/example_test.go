package catalog_test

import (
	"fmt"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/catalog"
)

// Versions orders a repository's tags newest first and drops signature
// tags; Latest prefers the highest release over pre-releases.
func ExampleVersions() {
	vs := catalog.Versions([]string{"1.0.0", "latest", "1.1.0", "2.0.0-rc.1", "sha256-0f3a.sig"})
	fmt.Println(vs, catalog.Latest(vs))
	// Output: [2.0.0-rc.1 1.1.0 1.0.0 latest] 1.1.0
}

// Match looks for every term in the name, repository, description,
// keywords and categories.
func ExampleMatch() {
	b := &catalog.Bundle{Repository: "registry.example.com/net/xdp-ratelimit", Config: &registry.Config{
		Name: "xdp-ratelimit", Description: "Drops packets above a rate", Categories: []string{"ratelimit", "ddos"},
	}}
	_, ok1 := catalog.Match(b, []string{"ddos"})
	_, ok2 := catalog.Match(b, []string{"ddos", "firewall"})
	fmt.Println(ok1, ok2)
	// Output: true false
}
