package chain

import (
	"regexp"
	"testing"
)

// TestNamePatterns: the hand-written checks that replaced start-up
// regexps accept exactly what the patterns they document accept.
func TestNamePatterns(t *testing.T) {
	name := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$`)
	tag := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, s := range []string{"", "a", "_x", "-x", ".x", "x-", "x.y", "x_y-z", "1.0.0", "v1.2.3-rc.1", "a b", "é", "x/y", "x:y", "^1.0", ">=1.0 <2", long(63), long(64), long(128), long(129)} {
		if got, want := nameOK(s), name.MatchString(s); got != want {
			t.Errorf("nameOK(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := ociTag(s), tag.MatchString(s); got != want {
			t.Errorf("ociTag(%q) = %v, the pattern says %v", s, got, want)
		}
	}
}

func FuzzNamePatterns(f *testing.F) {
	name := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$`)
	tag := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	f.Add("ratelimit")
	f.Add("1.0.0")
	f.Fuzz(func(t *testing.T, s string) {
		if nameOK(s) != name.MatchString(s) || ociTag(s) != tag.MatchString(s) {
			t.Errorf("%q: nameOK %v ociTag %v, patterns %v %v", s, nameOK(s), ociTag(s), name.MatchString(s), tag.MatchString(s))
		}
	})
}
