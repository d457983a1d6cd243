package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/verify"
)

func newGenerateKeyPairCommand(g *globals) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "generate-key-pair",
		Short: "Write a new cosign-compatible signing key pair (PREFIX.key, PREFIX.pub)",
		Long: `generate-key-pair writes a new ECDSA P-256 key pair in cosign's formats:
PREFIX.key, the private key encrypted with a password ("ENCRYPTED SIGSTORE
PRIVATE KEY", mode 0600), and PREFIX.pub, the public key (PEM). Both kfm and
the cosign CLI sign and verify with them.

The password comes from KFM_PASSWORD or COSIGN_PASSWORD (an empty value is an
empty password), or is asked for twice on a terminal. Existing files are
never overwritten.`,
		Example: `  kfm generate-key-pair
  KFM_PASSWORD=... kfm generate-key-pair --output-key-prefix keys/net-team`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kp, err := verify.WriteKeyPair(prefix, verify.PasswordFunc(ttyOf(g.in), g.err))
			if err != nil {
				return err
			}
			out := map[string]string{"privateKey": prefix + ".key", "publicKey": prefix + ".pub", "fingerprint": kp.Fingerprint}
			return g.report(out, func(w io.Writer) error {
				fmt.Fprintf(w, "Private key written to %s.key\nPublic key written to %s.pub\nFingerprint: %s\n", prefix, prefix, kp.Fingerprint)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "path prefix of the key files")
	return cmd
}
