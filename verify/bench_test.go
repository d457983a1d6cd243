package verify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
	"github.com/kfm-project/kfm/registry/cache"
)

// What signing and verification add to publishing and installing a bundle,
// against the in-process registry on 127.0.0.1, with a real bundle
// (examples/programs/xdp_count.o). Pull is the reference: pulling the same
// bundle into an empty cache, as an install from a registry does; the cosign
// CLI verifying the same kind of signature is the other reference. Run with
// -count=10 and take the median:
//
//	go test -run '^$' -bench . -count 10 ./verify/
func BenchmarkSignVerify(b *testing.B) {
	ctx := context.Background()
	reg := testregistry.Start(b, testregistry.Options{})
	key := newTestKey(b)
	obj, err := os.ReadFile("../examples/programs/xdp_count.o")
	if err != nil {
		b.Fatal(err)
	}
	newClient := func() *registry.Client {
		c, err := cache.Open(ctx, filepath.Join(b.TempDir(), "oci"))
		if err != nil {
			b.Fatal(err)
		}
		cl, err := registry.NewClient(registry.Options{Cache: c, Credentials: credentials.NewMemoryStore()})
		if err != nil {
			b.Fatal(err)
		}
		return cl
	}
	cl := newClient()
	n := 0
	publish := func() (registry.Reference, ocispec.Descriptor) {
		n++
		bun, err := registry.Pack(obj, registry.PackOptions{Name: "xdp-count", Version: fmt.Sprintf("1.0.%d", n), ObjectName: "xdp_count.o"})
		if err != nil {
			b.Fatal(err)
		}
		ref, _ := registry.ParseReference(fmt.Sprintf("%s/bench/xdp-count:1.0.%d", reg.Host(), n))
		pinned, err := cl.Publish(ctx, bun, ref)
		if err != nil {
			b.Fatal(err)
		}
		return pinned, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: bun.Digest, Size: bun.Size}
	}
	ref, desc := publish()
	repo, err := cl.Repository(ctx, ref)
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []Format{FormatBundle, FormatLegacy} {
		if _, err := Sign(ctx, repo, ref.String(), desc, key.priv, SignOptions{Format: f}); err != nil {
			b.Fatal(err)
		}
	}
	policy := keyPolicy(key.pub)

	for _, f := range []Format{FormatBundle, FormatLegacy} {
		b.Run("sign/"+string(f), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				r, d := publish()
				b.StartTimer()
				if _, err := Sign(ctx, repo, r.String(), d, key.priv, SignOptions{Format: f}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("verify/registry", func(b *testing.B) {
		for b.Loop() {
			if _, err := Verify(ctx, repo, ref.String(), desc, policy, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The cosign CLI on the same signatures, for comparison (process start
	// included, as a user or script would run it).
	cosign := testenv.RequireTool(b, "cosign")
	for _, f := range []Format{FormatBundle, FormatLegacy} {
		b.Run("verify/cosign-cli-"+string(f), func(b *testing.B) {
			r, d := publish()
			if _, err := Sign(ctx, repo, r.String(), d, key.priv, SignOptions{Format: f}); err != nil {
				b.Fatal(err)
			}
			pinned := r.Repo() + "@" + d.Digest.String()
			home := b.TempDir()
			for b.Loop() {
				cmd := exec.Command(cosign, "verify", "--key", key.pubPath, "--insecure-ignore-tlog=true", pinned)
				cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"))
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("cosign verify: %v\n%s", err, out)
				}
			}
		})
	}
	b.Run("pull/registry", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			fresh := newClient()
			b.StartTimer()
			if _, err := fresh.Pull(ctx, ref, registry.PullOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetch-signatures/registry", func(b *testing.B) {
		installer := newClient()
		if _, err := installer.Pull(ctx, ref, registry.PullOptions{}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := installer.FetchReferrers(ctx, ref); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify/cache-offline", func(b *testing.B) {
		installer := newClient()
		if _, err := installer.Pull(ctx, ref, registry.PullOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := installer.FetchReferrers(ctx, ref); err != nil {
			b.Fatal(err)
		}
		opts := &VerifyOptions{FullReferenceTags: true}
		for b.Loop() {
			if _, err := Verify(ctx, installer.Cache(), ref.String(), desc, policy, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
