package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

func newSignCommand(g *globals) *cobra.Command {
	var (
		key         string
		format      string
		annotations []string
		rf          registryFlags
	)
	cmd := &cobra.Command{
		Use:   "sign REF --key cosign.key",
		Short: "Sign a published bundle (sigstore bundle or legacy cosign signature)",
		Long: `sign signs the manifest digest of a bundle in a registry and stores the
signature next to it, in a format the cosign CLI reads too:

  bundle (default)  a sigstore bundle v0.3 (DSSE in-toto statement over the
                    manifest digest) stored as an OCI 1.1 referrer
                    (artifactType application/vnd.dev.sigstore.bundle.v0.3+json)
  legacy            cosign's sha256-<hex>.sig tag with a simple-signing payload

REF may be a tag or a digest reference; a tag is resolved once and the digest
it names is what gets signed (the output says which).

The key is a cosign key file (kfm generate-key-pair or cosign
generate-key-pair; its password comes from KFM_PASSWORD or COSIGN_PASSWORD, or
is asked for on a terminal) or a KMS URI handled by sigstore (a KMS plugin
"sigstore-kms-<scheme>" on PATH).`,
		Example: `  kfm sign registry.example.com/net/xdp-ratelimit:1.2.0 --key cosign.key
  kfm sign registry.example.com/net/xdp-ratelimit@sha256:... --key cosign.key --signature-format legacy -a team=net`,
		Args: exactArgs(1, "one reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if key == "" {
				return usageErrorf("kfm sign needs --key (a cosign key file or a KMS URI)")
			}
			f, err := verify.ParseFormat(format)
			if err != nil {
				return usageError{err}
			}
			ann, err := parseAnnotations(annotations)
			if err != nil {
				return err
			}
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			signer, err := verify.LoadSigningKey(ctx, key, verify.PasswordFunc(ttyOf(g.in), g.err))
			if err != nil {
				return err
			}
			client, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			repo, err := client.Repository(ctx, ref)
			if err != nil {
				return registryError(err)
			}
			desc, err := repo.Resolve(ctx, orasReference(ref))
			if err != nil {
				return fmt.Errorf("resolve %s: %w", ref, err)
			}
			pinned := ref.Repo() + "@" + desc.Digest.String()
			signed, err := verify.Sign(ctx, repo, pinned, desc, signer, verify.SignOptions{Format: f, Annotations: ann})
			if err != nil {
				return err
			}
			out := struct {
				Reference string `json:"reference"`
				*verify.Signed
			}{pinned, signed}
			return g.report(out, func(w io.Writer) error {
				if !ref.IsPinned() {
					fmt.Fprintf(w, "%s resolved to %s\n", ref, desc.Digest)
				}
				where := "referrer " + signed.Manifest.Digest.String()
				if signed.Tag != "" {
					where = "tag " + signed.Tag
				}
				fmt.Fprintf(w, "Signed %s (%s signature, key %s, %s)\n", pinned, signed.Format, signed.Key, where)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "private key: cosign key file or KMS URI")
	cmd.Flags().StringVar(&format, "signature-format", string(verify.FormatBundle), "bundle (sigstore bundle referrer) or legacy (cosign .sig tag)")
	cmd.Flags().StringArrayVarP(&annotations, "annotation", "a", nil, "signed annotation key=value (repeatable)")
	rf.add(cmd, false)
	return cmd
}

func parseAnnotations(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("annotation %q: want key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

// orasReference is what to resolve in the repository: the digest when
// pinned, else the tag.
func orasReference(ref registry.Reference) string {
	if ref.IsPinned() {
		return ref.Digest.String()
	}
	return ref.Tag
}

// ttyOf returns in as a file when it is one (for password prompts).
func ttyOf(in io.Reader) *os.File {
	f, _ := in.(*os.File)
	return f
}
