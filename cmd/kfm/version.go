package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf/dispatcher"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/registry"
)

// versionInfo is what kfm version reports: the build, and the versions of
// the formats this kfm writes (what a fleet mixing kfm releases needs to
// know before it shares a kfm.lock or a bpffs).
type versionInfo struct {
	// Version is the module version for a released build, else the VCS
	// revision the binary was built from ("-dirty" when the tree had
	// changes), else "(devel)".
	Version    string `json:"version"`
	GoVersion  string `json:"goVersion"`
	Platform   string `json:"platform"`
	BundleType string `json:"bundleArtifactType"`
	// DispatcherVersion is the libxdp dispatcher protocol version kfm
	// writes (it reads 1 to 3).
	DispatcherVersion int `json:"dispatcherVersion"`
	ManifestVersion   int `json:"manifestVersion"`
	LockVersion       int `json:"lockVersion"`
}

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

func currentVersion() versionInfo {
	return versionInfo{
		Version:           buildVersion(),
		GoVersion:         runtime.Version(),
		Platform:          runtime.GOOS + "/" + runtime.GOARCH,
		BundleType:        registry.ArtifactType,
		DispatcherVersion: dispatcher.Version,
		ManifestVersion:   chain.ManifestVersion,
		LockVersion:       chain.LockVersion,
	}
}

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kfm's version and the versions of the formats it writes",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := currentVersion()
			return g.report(v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "kfm %s (%s, %s)\nbundle %s, dispatcher protocol %d, kfm.yaml version %d, kfm.lock version %d\n",
					v.Version, v.GoVersion, v.Platform, v.BundleType, v.DispatcherVersion, v.ManifestVersion, v.LockVersion)
				return err
			})
		},
	}
}
