// Package testenv holds the rules every privileged kfm test follows.
//
// Tests that need root, a BPF filesystem, network namespaces or
// BPF_PROG_TYPE_EXT call one of the Require functions first. Outside CI they
// skip with a message that says what is missing; when the matching
// environment variable is set they fail instead, so that a missing
// capability can never pass as a skipped test:
//
//	KFM_REQUIRE_PRIVILEGED=1  set by `make test`: root-only tests must run.
//	KFM_REQUIRE_EXT=1         set inside the kernel VMs: freplace tests must run.
//	KFM_REQUIRE_TOOLS=1       set by `make test`: tests that drive external tools
//	                          (RequireTool, e.g. the oras CLI) must find them.
package testenv
