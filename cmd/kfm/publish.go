package main

import (
	"fmt"
	"io"
	"os"
	"path"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

type publishResult struct {
	Reference string         `json:"reference"`
	Digest    string         `json:"digest"`
	Size      int64          `json:"size"`
	Name      string         `json:"name"`
	Version   string         `json:"version,omitempty"`
	Signed    *verify.Signed `json:"signed,omitempty"`
}

func newPublishCommand(g *globals) *cobra.Command {
	var (
		rf         registryFlags
		bundleFile string
		opts       registry.PackOptions
		sign       bool
		key        string
		format     string
	)
	cmd := &cobra.Command{
		Use:   "publish PATH.o REF",
		Short: "Pack a BPF object into a bundle and push it to an OCI registry",
		Long: `publish validates a BPF object (it parses, has a licence, what bundle.yaml
declares exists and fits), packs it into a kfm bundle (an OCI artifact of type
application/vnd.kfm.bundle.v1) and pushes it to REF. It prints the reference
pinned to the bundle's digest.

Metadata comes from the flags, then bundle.yaml (--bundle), then the object:
program types, params (volatile const globals), maps, licence and libxdp's
XDP_RUN_CONFIG priorities. The name defaults to the repository's last path
element, the version to the tag. The creation time is SOURCE_DATE_EPOCH
(default 1970-01-01), so the same inputs always give the same digest.

With --sign --key, the pushed digest is signed right away (see kfm sign); the
key is opened before anything is pushed, so a wrong password pushes nothing.`,
		Example: `  kfm publish xdp_count.o registry.example.com/net/xdp-count:1.0.0
  kfm publish ratelimit.o localhost:5000/net/ratelimit:1.2.0 --bundle bundle.yaml -o json
  kfm publish ratelimit.o registry.example.com/net/ratelimit:1.2.0 --sign --key cosign.key`,
		Args: exactArgs(2, "an object file and a reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := parseRef(args[1])
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if len(data) > bpf.MaxObjectSize {
				return fmt.Errorf("%s: %d bytes, more than the %d MiB kfm publishes", args[0], len(data), bpf.MaxObjectSize>>20)
			}
			if bundleFile != "" {
				bf, err := registry.ReadBundleFile(bundleFile)
				if err != nil {
					return err
				}
				opts.BundleFile = bf
			}
			if opts.Name == "" && (opts.BundleFile == nil || opts.BundleFile.Name == "") {
				opts.Name = path.Base(ref.Repository)
			}
			if opts.Version == "" && (opts.BundleFile == nil || opts.BundleFile.Version == "") && ref.Tag != registry.DefaultTag {
				opts.Version = ref.Tag
			}
			if opts.Created, err = registry.SourceDateEpoch(); err != nil {
				return usageError{err}
			}
			opts.ObjectName = args[0]
			b, err := registry.Pack(data, opts)
			if err != nil {
				return err
			}
			var signer *verify.SigningKey
			var sigFormat verify.Format
			switch {
			case sign && key == "":
				return usageErrorf("kfm publish --sign needs --key (a cosign key file or a KMS URI)")
			case !sign && key != "":
				return usageErrorf("--key without --sign: add --sign to sign what is published")
			case sign:
				if sigFormat, err = verify.ParseFormat(format); err != nil {
					return usageError{err}
				}
				if signer, err = verify.LoadSigningKey(ctx, key, verify.PasswordFunc(ttyOf(g.in), g.err)); err != nil {
					return err
				}
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			pinned, err := c.Publish(ctx, b, ref)
			if err != nil {
				return registryError(err)
			}
			res := publishResult{Reference: pinned.String(), Digest: b.Digest.String(), Size: b.Size, Name: b.Config.Name, Version: b.Config.Version}
			if signer != nil {
				repo, err := c.Repository(ctx, ref)
				if err != nil {
					return registryError(err)
				}
				if res.Signed, err = verify.Sign(ctx, repo, ref.Repo()+"@"+b.Digest.String(), b.Descriptor(), signer, verify.SignOptions{Format: sigFormat}); err != nil {
					return fmt.Errorf("published %s, but signing failed: %w", res.Reference, err)
				}
			}
			return g.report(res, func(w io.Writer) error { return printPushed(w, res.Reference, res.Signed) })
		},
	}
	rf.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&bundleFile, "bundle", "", "bundle.yaml with metadata, hooks, priorities, proceed-on verdicts and param descriptions")
	fl.StringVar(&opts.Name, "name", "", "bundle name (default: bundle.yaml, else the repository's last path element)")
	fl.StringVar(&opts.Version, "version", "", "bundle version (default: bundle.yaml, else the tag)")
	fl.StringVar(&opts.Description, "description", "", "one-line description")
	fl.StringVar(&opts.Source, "source", "", "URL of the source code")
	fl.StringVar(&opts.License, "license", "", "SPDX licence expression (default: bundle.yaml, else the object's licence)")
	fl.BoolVar(&sign, "sign", false, "sign the published digest (needs --key)")
	fl.StringVar(&key, "key", "", "private key for --sign: cosign key file or KMS URI")
	fl.StringVar(&format, "signature-format", string(verify.FormatBundle), "with --sign: bundle (sigstore bundle referrer) or legacy (cosign .sig tag)")
	return cmd
}

// printPushed says what publish and push-lock pushed: the pinned reference,
// and the signature when there is one.
func printPushed(w io.Writer, ref string, signed *verify.Signed) error {
	if _, err := fmt.Fprintln(w, ref); err != nil {
		return err
	}
	if signed != nil {
		_, err := fmt.Fprintf(w, "Signed (%s signature, key %s)\n", signed.Format, signed.Key)
		return err
	}
	return nil
}
