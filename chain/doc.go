// Package chain turns what a host wants (programs on hooks, in priority
// order) into what the kernel runs: it resolves programs, plans changes,
// applies them through a Backend, and keeps host state.
//
// A Backend realises chains on one kind of hook attachment: the libxdp
// dispatcher, tail calls, TCX links or classic cls_bpf filters. Backends live
// under bpf/ and share the vocabulary of package bpf (Target, Component,
// Chain, Change); this package only depends on them through the Backend
// interface.
package chain
