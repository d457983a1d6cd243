package chain

import (
	"testing"

	"github.com/Masterminds/semver/v3"
)

// FuzzVersionRange: a program reference in kfm.yaml may end in a semver
// range instead of a tag ("host/repo:^1.2"). Any reference is split or
// left alone without a panic; a split one puts the reference back together
// exactly, its range is never a valid tag, and the range either compiles
// or is refused (as resolveRange does), checking versions without a panic.
func FuzzVersionRange(f *testing.F) {
	for _, s := range []string{
		"registry.example.com/net/count:^1.2", "registry.example.com/net/count:1.0.0", "localhost:5000/x:>=1.0 <2",
		"localhost:5000/x", "r.example/x:~1.2.3-rc.1 || 3.x", "r.example/x@sha256:00:^1", "r.example/x:", "x:>1/y",
	} {
		f.Add(s)
	}
	versions := []*semver.Version{semver.MustParse("0.0.1"), semver.MustParse("1.2.3"), semver.MustParse("1.3.0-rc.1"), semver.MustParse("2.0.0+b")}
	f.Fuzz(func(t *testing.T, ref string) {
		repo, constraint, ok := splitRange(ref)
		if !ok {
			return
		}
		if repo+":"+constraint != ref {
			t.Fatalf("%q split into %q and %q", ref, repo, constraint)
		}
		if ociTag(constraint) {
			t.Fatalf("%q: range %q is a valid tag", ref, constraint)
		}
		c, err := semver.NewConstraint(constraint)
		if err != nil {
			return
		}
		for _, v := range versions {
			c.Check(v)
		}
	})
}
