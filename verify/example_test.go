package verify_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"

	"github.com/kfm-project/kfm/verify"
)

// Sign a bundle in both formats and verify it against a policy that trusts
// the key. The store here is an OCI layout directory (as kfm's cache is);
// a registry repository (oras-go remote.Repository) works the same way.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kfm-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := oci.New(dir)
	if err != nil {
		panic(err)
	}

	// A bundle to sign: any OCI manifest.
	const ref = "registry.example.com/net/xdp-count:1.0.0"
	layer, _ := oras.PushBytes(ctx, store, "application/vnd.kfm.bpf.object.v1+elf", []byte("an ELF object"))
	desc, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.kfm.bundle.v1",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		panic(err)
	}

	// A cosign-compatible key pair.
	kp, err := verify.GenerateKeyPair(verify.StaticPassword("s3cret"))
	if err != nil {
		panic(err)
	}
	key, err := verify.ParseSigningKey("cosign.key", kp.PrivatePEM, verify.StaticPassword("s3cret"))
	if err != nil {
		panic(err)
	}
	for _, f := range []verify.Format{verify.FormatBundle, verify.FormatLegacy} {
		if _, err := verify.Sign(ctx, store, ref, desc, key, verify.SignOptions{Format: f, FullReferenceTags: true}); err != nil {
			panic(err)
		}
	}

	// The policy a host would keep in /etc/kfm/policy.yaml.
	policy, err := verify.ParsePolicy(ctx, "policy.yaml", []byte(`version: 1
rules:
  - match: registry.example.com/net/*
    keys:
      - |
`+indent(string(kp.PublicPEM), "        ")), ".")
	if err != nil {
		panic(err)
	}
	res, err := verify.Verify(ctx, store, ref, desc, policy, &verify.VerifyOptions{FullReferenceTags: true})
	if err != nil {
		panic(err)
	}
	fmt.Println("rule:", res.Rule)
	fmt.Println("accepted key is ours:", res.Signer.Key == kp.Fingerprint)
	for _, s := range res.Signatures {
		fmt.Println(s.Format, "verified:", s.Verified)
	}
	// Output:
	// rule: policy.yaml:3 (registry.example.com/net/*)
	// accepted key is ours: true
	// bundle verified: true
	// legacy verified: true
}

func ExampleLegacyTag() {
	d := digest.Digest("sha256:8013905bbab445ec3aec70b1a68b8949a701290536a55627dcd3948f5c2843b0")
	fmt.Println(verify.LegacyTag(d))
	// Output: sha256-8013905bbab445ec3aec70b1a68b8949a701290536a55627dcd3948f5c2843b0.sig
}

func ExamplePolicy_Match() {
	policy, err := verify.ParsePolicy(context.Background(), "policy.yaml", []byte(`version: 1
rules:
  - match: registry.example.com/net/experimental/**
    deny: true
  - match: registry.example.com/net/**
    keys:
      - |
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJctsMQPNQpJQqD6P4YXOPUGp0472
        vWZ57EMlRkmZx4opG1Jp8EQGHNoFWkgDQ5TWmSmfR0R4TuvpQdVIPiI+7w==
        -----END PUBLIC KEY-----
`), ".")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ref := range []string{
		"registry.example.com/net/ratelimit:1.2.0",
		"registry.example.com/net/experimental/fast:0.1",
		"ghcr.io/someone/else:latest",
	} {
		r, err := policy.Match(ref)
		switch {
		case err != nil:
			fmt.Printf("%s: refused: no rule\n", ref)
		case r.Deny:
			fmt.Printf("%s: refused by the rule at line %d\n", ref, r.Line)
		default:
			fmt.Printf("%s: rule at line %d, %d key(s)\n", ref, r.Line, len(r.Keys))
		}
	}
	// Output:
	// registry.example.com/net/ratelimit:1.2.0: rule at line 5, 1 key(s)
	// registry.example.com/net/experimental/fast:0.1: refused by the rule at line 3
	// ghcr.io/someone/else:latest: refused: no rule
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}
