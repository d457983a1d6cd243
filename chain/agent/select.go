package agent

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Link is an interface of the node, as the selector sees it.
type Link struct {
	Name string
	// Primary is set on the interface that carries the node's
	// InternalIP.
	Primary bool
}

// Select evaluates s on the node's links: the interfaces it picks, in
// name order, and the names it lists literally that the node does not have
// (so the chain reports InterfaceMissing for them). A name written /RE/
// matches when RE matches the whole interface name; Exclude takes
// interfaces out again (names or /RE/). A selector that picks nothing
// picks nothing: there is no "every interface" default.
func (s InterfaceSelector) Select(links []Link) (picked, missing []string, err error) {
	include, err := compileAll(s.Names)
	if err != nil {
		return nil, nil, err
	}
	exclude, err := compileAll(s.Exclude)
	if err != nil {
		return nil, nil, err
	}
	have := map[string]bool{}
	for _, l := range links {
		have[l.Name] = true
		if slices.ContainsFunc(exclude, func(m matcher) bool { return m.match(l.Name) }) {
			continue
		}
		if (s.PrimaryNodeInterface && l.Primary) || slices.ContainsFunc(include, func(m matcher) bool { return m.match(l.Name) }) {
			picked = append(picked, l.Name)
		}
	}
	for _, m := range include {
		if m.re == nil && !have[m.name] {
			missing = append(missing, m.name)
		}
	}
	if s.PrimaryNodeInterface && !slices.ContainsFunc(links, func(l Link) bool { return l.Primary }) {
		missing = append(missing, "primaryNodeInterface")
	}
	slices.Sort(picked)
	return slices.Compact(picked), missing, nil
}

type matcher struct {
	name string
	re   *regexp.Regexp
}

func (m matcher) match(name string) bool {
	if m.re != nil {
		return m.re.MatchString(name)
	}
	return m.name == name
}

func compileAll(names []string) ([]matcher, error) {
	var out []matcher
	for _, n := range names {
		if len(n) >= 2 && strings.HasPrefix(n, "/") && strings.HasSuffix(n, "/") {
			re, err := regexp.Compile("^(?:" + n[1:len(n)-1] + ")$")
			if err != nil {
				return nil, fmt.Errorf("interface selector %s: %w", n, err)
			}
			out = append(out, matcher{name: n, re: re})
			continue
		}
		if n == "" {
			return nil, fmt.Errorf("interface selector: an empty name")
		}
		out = append(out, matcher{name: n})
	}
	return out, nil
}
