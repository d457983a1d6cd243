package compat

import "testing"

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want [3]int
		bad  bool
	}{
		{in: "5.10", want: [3]int{5, 10, 0}},
		{in: "6.1.0-37-cloud-amd64", want: [3]int{6, 1, 0}},
		{in: "6.12.117+deb13-cloud-amd64", want: [3]int{6, 12, 117}},
		{in: "6.18.44-fc-v1272", want: [3]int{6, 18, 44}},
		{in: "5.10.0-32-cloud-amd64", want: [3]int{5, 10, 0}},
		{in: "five", bad: true},
		{in: "6", bad: true},
		{in: "x.1", bad: true},
	} {
		got, err := parseVersion(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("parseVersion(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
	if !less([3]int{5, 10, 0}, [3]int{5, 18, 0}) || less([3]int{6, 12, 0}, [3]int{5, 18, 0}) {
		t.Error("less is wrong")
	}
}
