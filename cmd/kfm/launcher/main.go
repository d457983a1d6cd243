// Command launcher is what `make build` installs as bin/kfm: a small
// front-end that answers `kfm version`, `kfm --version` and `kfm --help`
// itself and hands every other command line to kfm's CLI (package cmd/kfm)
// by exec, so that the process, its exit status, signals and standard
// streams are the CLI's own. The CLI is installed beside it twice:
//
//   - kfm-full, the complete CLI, for the command lines that name the agent
//     or the catalog commands, ask for shell completion, or use kfm lock
//     --chainset (any argument "agent", "catalog", "completion" or
//     "--chainset...": a program that happens to be called so goes there
//     too, which is only slower);
//   - kfm-core, the CLI built with the tag kfm_core, for all others: it
//     leaves out client-go, controller-runtime and the Markdown renderer,
//     half of the binary, and with them about 20 MiB of resident memory
//     and 20 ms of start-up per command (see cmd/kfm/full.go).
//
// When the one chosen is missing the other runs (kfm-full can do
// everything; kfm-core says which command it lacks).
//
// Why: Go runs the initialiser of every package a binary links before main,
// whatever the command. The complete CLI links sigstore-go, oras-go,
// client-go and controller-runtime (kfm agent --source kubernetes), the
// catalog's Markdown renderer and more; their initialisers and the faulting
// in of a large binary cost about 50 ms per start. The launcher links only
// the standard library, so a question about kfm itself is answered in a few
// milliseconds; the commands that do work pay one extra exec (about a
// millisecond) on top of the complete CLI's start-up.
//
// What the launcher prints is the complete CLI's output, not its own idea of
// it: help.txt and formats.json are written from cmd/kfm by
// `go test ./cmd/kfm -run TestLauncher -update`, and TestLauncher fails when
// they differ from what cmd/kfm prints. Any command line the launcher does
// not recognise exactly goes to the CLI, which also reports usage errors.
package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// The file names of kfm's CLI, looked for in the directory of the
// launcher's own executable: CoreName for most commands, FullName (the
// complete CLI) for the rest (see needsFull).
const (
	CoreName = "kfm-core"
	FullName = "kfm-full"
)

// needsFull reports whether a command line needs the complete CLI: it
// names one of the commands kfm-core lacks, or kfm lock's --chainset.
func needsFull(args []string) bool {
	for _, a := range args {
		switch {
		case a == "agent", a == "catalog", a == "completion", strings.HasPrefix(a, "--chainset"):
			return true
		}
	}
	return false
}

// help is `kfm --help` as cmd/kfm prints it, with each path flag's default
// replaced by @ENV@ (the variable that sets it).
//
//go:embed help.txt
var help string

// formatsJSON holds the format versions kfm version reports (the fields of
// versionInfo that are constants of the complete CLI).
//
//go:embed formats.json
var formatsJSON []byte

// pathDefaults are the path flags whose defaults help shows: each an
// environment variable and the default without it (as in cmd/kfm/root.go).
var pathDefaults = []struct{ env, def string }{
	{"KFM_CONFIG_DIR", "/etc/kfm"},
	{"KFM_CACHE_DIR", "/var/cache/kfm"},
	{"KFM_STATE_DIR", "/run/kfm"},
	{"KFM_BPFFS", "/sys/fs/bpf"},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0 || len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help"):
		// With no command, cobra prints the root help too.
		io.WriteString(stdout, helpText())
		return 0
	case len(args) == 1 && (args[0] == "--version" || args[0] == "-v"):
		fmt.Fprintf(stdout, "kfm %s\n", buildVersion())
		return 0
	}
	if output, ok := versionArgs(args); ok {
		if err := printVersion(stdout, output); err != nil {
			fmt.Fprintf(stderr, "kfm: %v\n", err)
			return 1
		}
		return 0
	}
	return execCore(args, stderr)
}

// execCore replaces the launcher with kfm-core or kfm-full (see
// needsFull), given the same arguments and environment. It returns only
// when that fails.
func execCore(args []string, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "kfm: find the kfm executable: %v\n", err)
		return 1
	}
	names := []string{CoreName, FullName}
	if needsFull(args) {
		names = []string{FullName, CoreName}
	}
	for _, name := range names {
		bin := filepath.Join(filepath.Dir(self), name)
		err = syscall.Exec(bin, append([]string{"kfm"}, args...), os.Environ())
		if !os.IsNotExist(err) {
			fmt.Fprintf(stderr, "kfm: run %s: %v\n", bin, err)
			return 1
		}
	}
	dir := filepath.Dir(self)
	fmt.Fprintf(stderr, "kfm: %s and %s are missing from %s: this kfm is the launcher built by `make build`, and it runs kfm's CLI from the same directory; install all three (bin/kfm, bin/%s and bin/%s), or build the complete CLI alone with `go build ./cmd/kfm`\n", CoreName, FullName, dir, CoreName, FullName)
	return 1
}

// helpText is help with the path defaults as the complete CLI computes
// them (the environment variable, else the built-in default), quoted as
// pflag quotes a string default.
func helpText() string {
	s := help
	for _, p := range pathDefaults {
		v := os.Getenv(p.env)
		if v == "" {
			v = p.def
		}
		s = strings.ReplaceAll(s, strconv.Quote("@"+p.env+"@"), strconv.Quote(v))
	}
	return s
}

// versionArgs recognises `version` with at most an output flag
// (-o/--output text|json, in any of pflag's spellings, before or after
// the command). Anything else is left to the complete CLI.
func versionArgs(args []string) (output string, ok bool) {
	output = "text"
	seen := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "version" && !seen:
			seen = true
		case a == "-o" || a == "--output":
			if i+1 == len(args) {
				return "", false
			}
			i++
			output = args[i]
		case strings.HasPrefix(a, "--output="):
			output = strings.TrimPrefix(a, "--output=")
		case strings.HasPrefix(a, "-o="):
			output = strings.TrimPrefix(a, "-o=")
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--"):
			output = strings.TrimPrefix(a, "-o")
		default:
			return "", false
		}
	}
	if !seen || output != "text" && output != "json" {
		return "", false
	}
	return output, true
}

// versionInfo is cmd/kfm's versionInfo: the same fields in the same order.
type versionInfo struct {
	Version           string `json:"version"`
	GoVersion         string `json:"goVersion"`
	Platform          string `json:"platform"`
	BundleType        string `json:"bundleArtifactType"`
	DispatcherVersion int    `json:"dispatcherVersion"`
	ManifestVersion   int    `json:"manifestVersion"`
	LockVersion       int    `json:"lockVersion"`
}

func printVersion(w io.Writer, output string) error {
	var v versionInfo
	if err := json.Unmarshal(formatsJSON, &v); err != nil {
		return fmt.Errorf("formats.json: %w", err)
	}
	v.Version, v.GoVersion, v.Platform = buildVersion(), runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprintf(w, "kfm %s (%s, %s)\nbundle %s, dispatcher protocol %d, kfm.yaml version %d, kfm.lock version %d\n",
		v.Version, v.GoVersion, v.Platform, v.BundleType, v.DispatcherVersion, v.ManifestVersion, v.LockVersion)
	return err
}

// buildVersion is cmd/kfm's buildVersion: both binaries are built from the
// same tree by the same go build.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}
