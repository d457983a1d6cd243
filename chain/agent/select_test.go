package agent_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/chain/agent"
)

func TestSelect(t *testing.T) {
	links := []agent.Link{{Name: "lo"}, {Name: "eth0", Primary: true}, {Name: "eth1"}, {Name: "veth12ab"}, {Name: "veth99"}, {Name: "cni0"}}
	for _, tc := range []struct {
		name         string
		sel          agent.InterfaceSelector
		links        []agent.Link
		picked, miss []string
		wantErr      bool
	}{
		{"names", agent.InterfaceSelector{Names: []string{"eth1", "eth0"}}, links, []string{"eth0", "eth1"}, nil, false},
		{"missing name", agent.InterfaceSelector{Names: []string{"eth1", "eth7"}}, links, []string{"eth1"}, []string{"eth7"}, false},
		{"regex whole name", agent.InterfaceSelector{Names: []string{"/veth[0-9]+/"}}, links, []string{"veth99"}, nil, false},
		{"regex and exclusion", agent.InterfaceSelector{Names: []string{"/veth.*/", "/eth.*/"}, Exclude: []string{"eth1", "/veth9.*/"}}, links, []string{"eth0", "veth12ab"}, nil, false},
		{"primary", agent.InterfaceSelector{PrimaryNodeInterface: true}, links, []string{"eth0"}, nil, false},
		{"primary and a name, once each", agent.InterfaceSelector{PrimaryNodeInterface: true, Names: []string{"eth0", "cni0"}}, links, []string{"cni0", "eth0"}, nil, false},
		{"no primary", agent.InterfaceSelector{PrimaryNodeInterface: true}, []agent.Link{{Name: "eth0"}}, nil, []string{"primaryNodeInterface"}, false},
		{"excluded primary", agent.InterfaceSelector{PrimaryNodeInterface: true, Exclude: []string{"eth0"}}, links, nil, nil, false},
		{"empty selector picks nothing", agent.InterfaceSelector{}, links, nil, nil, false},
		{"bad regex", agent.InterfaceSelector{Names: []string{"/veth[/"}}, links, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			picked, missing, err := tc.sel.Select(tc.links)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(picked, tc.picked) || !slices.Equal(missing, tc.miss) {
				t.Errorf("picked %v missing %v, want %v and %v", picked, missing, tc.picked, tc.miss)
			}
		})
	}
}

func ExampleInterfaceSelector_Select() {
	sel := agent.InterfaceSelector{Names: []string{"/eth[0-9]+/", "bond0"}, Exclude: []string{"eth1"}}
	picked, missing, _ := sel.Select([]agent.Link{{Name: "eth0"}, {Name: "eth1"}, {Name: "eth2"}, {Name: "lo"}})
	fmt.Println(picked, missing)
	// Output: [eth0 eth2] [bond0]
}

// FuzzSelect: interface selectors come from ChainSets and lockfiles (names
// and /RE/ patterns, excludes); links from the node. Any selector either
// fails to compile with an error or picks a sorted, duplicate-free subset
// of the links that no exclude matches, and reports as missing only
// literal names the node lacks.
func FuzzSelect(f *testing.F) {
	f.Add("eth0\n/veth.*/", "/veth9.*/", "lo\neth0\nveth12\nveth99\neth0", true)
	f.Add("/(/\n/a{1001}/", "", "a", false)
	f.Add("//\n/^$/\n/.*/", "/x|/", "\nx", false)
	f.Fuzz(func(t *testing.T, names, exclude, links string, primary bool) {
		sel := agent.InterfaceSelector{PrimaryNodeInterface: primary}
		if names != "" {
			sel.Names = strings.Split(names, "\n")
		}
		if exclude != "" {
			sel.Exclude = strings.Split(exclude, "\n")
		}
		var ls []agent.Link
		have := map[string]bool{}
		for i, n := range strings.Split(links, "\n") {
			ls = append(ls, agent.Link{Name: n, Primary: i == 1})
			have[n] = true
		}
		picked, missing, err := sel.Select(ls)
		if err != nil {
			if picked != nil || missing != nil {
				t.Fatalf("error %v with picks %q, missing %q", err, picked, missing)
			}
			return
		}
		if !slices.IsSorted(picked) || len(slices.Compact(slices.Clone(picked))) != len(picked) {
			t.Fatalf("picked %q: not sorted or duplicated", picked)
		}
		for _, p := range picked {
			if !have[p] {
				t.Fatalf("picked %q, which the node does not have", p)
			}
			isPattern := len(p) >= 2 && strings.HasPrefix(p, "/") && strings.HasSuffix(p, "/")
			if !isPattern && slices.Contains(sel.Exclude, p) {
				t.Fatalf("picked excluded %q", p)
			}
		}
		for _, m := range missing {
			if m != "primaryNodeInterface" && (have[m] || !slices.Contains(sel.Names, m)) {
				t.Fatalf("missing %q: the node has it or the selector does not name it", m)
			}
		}
	})
}
