// Package objset serves a set of compiled BPF objects embedded in a Go
// package (the sample programs, the test programs) by name, so that tests
// anywhere (also inside the kernel VMs, which have no source tree) get the
// objects without file paths.
package objset
