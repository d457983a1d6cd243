// Package progenv lets programs that are not tests (the demo, bench-scale)
// use kfm's test environments (internal/netns, internal/testregistry),
// which take the subset of testing.TB that [Env] implements.
//
// Fatal and Fatalf panic with a [Failure]; the program recovers it at the
// top, reports its message, and calls [Env.Close], which runs the cleanups
// in reverse order, as testing does.
package progenv
