package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/verify"
)

type pushLockResult struct {
	Reference string         `json:"reference"`
	Digest    string         `json:"digest"`
	Chains    int            `json:"chains"`
	Signed    *verify.Signed `json:"signed,omitempty"`
}

func newPushLockCommand(g *globals) *cobra.Command {
	var (
		rf            registryFlags
		lockPath, key string
		format        string
		unsigned      bool
	)
	cmd := &cobra.Command{
		Use:   "push-lock REGISTRY/REPO:TAG --key KEY",
		Short: "Push kfm.lock as a signed artifact that node agents follow (kfm agent --source oci://REF)",
		Long: `push-lock pushes kfm.lock (of --config-dir, or --lock FILE) to a registry as an
artifact of type application/vnd.kfm.lock.v1, tags it, and signs it like a
bundle. Agents following the tag verify the signature with their own trust
policy before they apply anything. Every program must be pinned by digest
(a lock naming local object files cannot go to a fleet).`,
		Args: exactArgs(1, "one reference (registry/repository:tag)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := registry.ParseReference(args[0])
			if err != nil {
				return usageError{err}
			}
			if ref.Tag == "" || ref.Digest != "" {
				return usageErrorf("%s: push a lock to a tag (registry/repository:tag)", args[0])
			}
			if key == "" && !unsigned {
				return usageErrorf("push-lock needs --key to sign the lock (agents refuse an unsigned lock)")
			}
			if lockPath == "" {
				lockPath = filepath.Join(g.configDir, "kfm.lock")
			}
			data, err := os.ReadFile(lockPath)
			if err != nil {
				return err
			}
			lk, err := chain.ParseLock(lockPath, bytes.NewReader(data))
			if err != nil {
				return err
			}
			for _, c := range lk.Chains {
				for _, p := range c.Programs {
					if p.Digest == "" {
						return fmt.Errorf("%s: %s %s program %q is the local file %s: publish it and lock it from the registry before pushing the lock to a fleet", lockPath, c.Interface, c.Hook, p.Name, p.Path)
					}
				}
			}
			var signer *verify.SigningKey
			f, err := verify.ParseFormat(format)
			if err != nil {
				return usageError{err}
			}
			if key != "" {
				if signer, err = verify.LoadSigningKey(ctx, key, verify.PasswordFunc(ttyOf(g.in), g.err)); err != nil {
					return err
				}
			}
			c, err := g.registryClient(ctx, &rf, false)
			if err != nil {
				return err
			}
			var res pushLockResult
			desc, err := c.PushLock(ctx, ref, data, func(desc ocispec.Descriptor) error {
				if signer == nil {
					return nil
				}
				repo, err := c.Repository(ctx, ref)
				if err != nil {
					return err
				}
				if res.Signed, err = verify.Sign(ctx, repo, ref.Repo()+"@"+desc.Digest.String(), desc, signer, verify.SignOptions{Format: f}); err != nil {
					return fmt.Errorf("sign the lock (the tag was not moved): %w", err)
				}
				return nil
			})
			if err != nil {
				return registryError(err)
			}
			res.Reference, res.Digest, res.Chains = ref.Pinned(desc.Digest).String(), desc.Digest.String(), len(lk.Chains)
			return g.report(res, func(w io.Writer) error { return printPushed(w, res.Reference, res.Signed) })
		},
	}
	rf.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&lockPath, "lock", "", "the lock to push (default <config-dir>/kfm.lock)")
	fl.StringVar(&key, "key", "", "private key that signs the lock: cosign key file or KMS URI")
	fl.StringVar(&format, "signature-format", string(verify.FormatBundle), "bundle (sigstore bundle referrer) or legacy (cosign .sig tag)")
	fl.BoolVar(&unsigned, "insecure-unsigned", false, "push without a signature (agents refuse it; for tests of that refusal)")
	return cmd
}
