package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2"

	"github.com/kfm-project/kfm/verify"
)

// exitVerifyFailed: kfm verify ran and the bundle is not acceptable
// (unsigned, untrusted signer, invalid signature, tampered content).
const exitVerifyFailed = 3

// verifyRefused marks a refusal of kfm verify (exit status 3).
type verifyRefused struct{ err error }

func (e verifyRefused) Error() string { return e.err.Error() }
func (e verifyRefused) Unwrap() error { return e.err }
func (e verifyRefused) ExitCode() int { return exitVerifyFailed }

func newVerifyCommand(g *globals) *cobra.Command {
	var (
		keys                     []string
		policyPath               string
		trustedRoot              string
		identity, identityRegexp string
		issuer, issuerRegexp     string
		rf                       registryFlags
	)
	cmd := &cobra.Command{
		Use:   "verify REF",
		Short: "Verify the signatures of a published bundle against a trust policy",
		Long: `verify checks that a bundle in a registry carries a signature kfm would accept,
and reports every signature it found, which verified, and the key or identity
that was accepted. REF may be a tag (resolved once; the digest it names is what
is verified) or a digest reference. The manifest, config and layers are read
and checked against their digests too.

Who is accepted comes from, in this order:
  --key PUB (repeatable)           any of these public keys (PEM files or KMS URIs)
  --trusted-root trusted_root.json keyless: a Fulcio certificate chained to this
    --certificate-identity[-regexp] X  sigstore trusted root, of this subject,
    --certificate-oidc-issuer[-regexp] Y  from this OIDC issuer; verified offline,
                                   with a transparency-log entry and an observer
                                   timestamp required
  --policy policy.yaml             a trust policy (default <config-dir>/policy.yaml)
--key and --trusted-root may be combined; --policy excludes both.

Both signature formats are read, whoever wrote them (kfm sign or cosign sign):
sigstore bundles among the manifest's referrers, and the legacy
sha256-<hex>.sig tag. Signatures made with a key are verified without a
transparency log (as cosign verify --insecure-ignore-tlog does). With
--offline the bundle and its signatures are read from the local cache
(--cache-dir) instead of the registry.

Exit status: 0 verified; 3 verification failed (unsigned, no accepted signer,
invalid signature, content not matching its digest, no policy rule); 1 other
errors (registry unreachable, unreadable key); 2 usage errors.`,
		Example: `  kfm verify registry.example.com/net/xdp-ratelimit:1.2.0 --key cosign.pub
  kfm verify registry.example.com/net/xdp-ratelimit:1.2.0 --policy /etc/kfm/policy.yaml -o json
  kfm verify registry.example.com/net/xdp-ratelimit:1.2.0 --trusted-root trusted_root.json \
      --certificate-identity https://github.com/example/net/.github/workflows/release.yml@refs/heads/main \
      --certificate-oidc-issuer https://token.actions.githubusercontent.com`,
		Args: exactArgs(1, "one reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			flags := cmd.Flags()
			idSet := identity != "" || identityRegexp != "" || issuer != "" || issuerRegexp != ""
			switch {
			case flags.Changed("policy") && (len(keys) > 0 || trustedRoot != ""):
				return usageErrorf("--policy excludes --key and --trusted-root: use one or the other")
			case idSet && trustedRoot == "":
				return usageErrorf("--certificate-identity and --certificate-oidc-issuer need --trusted-root (keyless verification is offline, against that file)")
			case trustedRoot != "" && !idSet:
				return usageErrorf("--trusted-root needs --certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp]: which identities are accepted?")
			}
			var policy *verify.Policy
			if len(keys) > 0 || trustedRoot != "" {
				rule := verify.Rule{Match: "**"}
				for _, k := range keys {
					pk, err := verify.LoadPublicKey(ctx, k)
					if err != nil {
						return err
					}
					rule.Keys = append(rule.Keys, pk)
				}
				if trustedRoot != "" {
					tr, err := verify.LoadTrustedRoot(trustedRoot)
					if err != nil {
						return err
					}
					kl, err := verify.NewKeyless(trustedRoot, tr, verify.Identity{
						Subject: identity, SubjectRegexp: identityRegexp, Issuer: issuer, IssuerRegexp: issuerRegexp,
					})
					if err != nil {
						return usageError{err}
					}
					rule.Keyless = kl
				}
				policy = &verify.Policy{Source: "the command line", Rules: []verify.Rule{rule}}
			} else {
				if policyPath == "" {
					policyPath = filepath.Join(g.configDir, "policy.yaml")
				}
				p, err := verify.LoadPolicy(ctx, policyPath)
				if err != nil {
					if errors.Is(err, verify.ErrPolicy) {
						return verifyRefused{err}
					}
					return fmt.Errorf("%w (give --key, --trusted-root or --policy)", err)
				}
				policy = p
			}
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			client, err := g.registryClient(ctx, &rf, rf.offline)
			if err != nil {
				return err
			}
			var (
				src  oras.ReadOnlyGraphTarget
				desc ocispec.Descriptor
				opts verify.VerifyOptions
			)
			if rf.offline {
				// The cache tags by full reference (see registry/cache).
				c := client.Cache()
				key := ref.TagRef()
				if ref.IsPinned() {
					key = ref.Digest.String()
				}
				if desc, err = c.Resolve(ctx, key); err != nil {
					return fmt.Errorf("%s: %w (pull it first)", ref, err)
				}
				src, opts.FullReferenceTags = c, true
			} else {
				repo, err := client.Repository(ctx, ref)
				if err != nil {
					return registryError(err)
				}
				if desc, err = repo.Resolve(ctx, orasReference(ref)); err != nil {
					return fmt.Errorf("resolve %s: %w", ref, err)
				}
				src = repo
			}
			res, verr := verify.Verify(ctx, src, ref.String(), desc, policy, &opts)
			if rerr := g.report(res, func(w io.Writer) error { return printVerifyResult(w, ref.String(), res) }); rerr != nil {
				return rerr
			}
			if verr != nil {
				if isRefusal(verr) {
					return verifyRefused{verr}
				}
				return verr
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&keys, "key", nil, "accepted public key: PEM file or KMS URI (repeatable)")
	f.StringVar(&policyPath, "policy", "", "trust policy file (default <config-dir>/policy.yaml)")
	f.StringVar(&trustedRoot, "trusted-root", "", "sigstore trusted_root.json for keyless verification (offline)")
	f.StringVar(&identity, "certificate-identity", "", "accepted certificate subject (e-mail, URI...), exact")
	f.StringVar(&identityRegexp, "certificate-identity-regexp", "", "accepted certificate subject, regular expression")
	f.StringVar(&issuer, "certificate-oidc-issuer", "", "accepted OIDC issuer of the certificate, exact")
	f.StringVar(&issuerRegexp, "certificate-oidc-issuer-regexp", "", "accepted OIDC issuer of the certificate, regular expression")
	rf.add(cmd, true)
	return cmd
}

func isRefusal(err error) bool {
	for _, e := range []error{verify.ErrUnsigned, verify.ErrUntrusted, verify.ErrInvalidSignature, verify.ErrContent, verify.ErrPolicy} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func printVerifyResult(w io.Writer, ref string, res *verify.Result) error {
	fmt.Fprintf(w, "%s\n  digest: %s\n", ref, res.Digest)
	if res.Rule != "" {
		fmt.Fprintf(w, "  rule:   %s\n", res.Rule)
	}
	if len(res.Signatures) == 0 {
		fmt.Fprintf(w, "  signatures: none\n")
	} else {
		fmt.Fprintf(w, "  signatures:\n")
	}
	for _, s := range res.Signatures {
		where := s.Manifest.String()
		if s.Format == verify.FormatLegacy {
			where += fmt.Sprintf(" layer %d", s.Layer)
		}
		kind := s.Kind
		if s.Claimed != nil {
			kind += " " + s.Claimed.String()
		}
		status := "not accepted: " + s.Problem
		if s.Verified {
			status = "verified: " + s.Signer.String()
		}
		fmt.Fprintf(w, "    %-6s %s (%s)\n      %s\n", s.Format, where, kind, status)
	}
	if res.Signer != nil {
		fmt.Fprintf(w, "Verified: signed by %s\n", res.Signer)
	}
	return nil
}
