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

// # Statistics
//
// [Manager.Stats] returns a snapshot of every chain ([ChainStats]): per
// program, in run order, the packets per verdict from kfm's verdict
// counters (package bpf/counters; injected at load on every backend, pinned
// with the program's state, switched off with counters: false in kfm.yaml)
// and the kernel's run statistics where the kernel keeps them (tcx and tc
// programs; for the dispatcher and tailcall backends only the program on
// the hook, whose time is the whole chain's). [WithRates] turns two
// snapshots into rates. An exporter calls Stats per scrape; `kfm stats
// --interval` holds counters.EnableStats between its two snapshots.
