package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

var variants = []struct {
	name string
	opts testregistry.Options
}{
	{"plain", testregistry.Options{}},
	{"basic-auth", testregistry.Options{Auth: testregistry.AuthBasic}},
	{"tls", testregistry.Options{TLS: true}},
	{"tls+basic-auth", testregistry.Options{TLS: true, Auth: testregistry.AuthBasic}},
	{"token-auth", testregistry.Options{Auth: testregistry.AuthToken}},
}

func TestPublishPullRoundTrip(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ctx := context.Background()
			r := testregistry.Start(t, v.opts)
			packed, pinned := publish(t, r, "kfm/params", "1.0.0", registry.PackOptions{})
			if pinned.Digest != packed.Digest || pinned.Tag != "1.0.0" {
				t.Fatalf("publish returned %s, bundle digest %s", pinned, packed.Digest)
			}

			c := newClient(t, r)
			b, err := c.Pull(ctx, mustRef(t, r.Ref("kfm/params", "1.0.0")), registry.PullOptions{})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if b.Digest != packed.Digest || b.Reference.String() != pinned.String() {
				t.Errorf("pulled %s (%s), published %s", b.Reference, b.Digest, pinned)
			}
			if !bytes.Equal(b.Object, readObject(t)) {
				t.Error("pulled object differs from the published one")
			}
			if b.Format != registry.FormatKFM || b.ObjectName != "params.o" {
				t.Errorf("format %s, object name %q", b.Format, b.ObjectName)
			}
			want, _ := json.Marshal(packed.Config)
			got, _ := json.Marshal(b.Config)
			if !bytes.Equal(want, got) {
				t.Errorf("config changed on the way:\n got %s\nwant %s", got, want)
			}
			if _, err := b.Describe(); err != nil {
				t.Errorf("pulled object does not parse: %v", err)
			}

			// Open reads the same bundle from the cache by digest.
			again, err := c.Open(ctx, b.Reference)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if again.Digest != b.Digest || !bytes.Equal(again.Object, b.Object) {
				t.Error("open returned another bundle")
			}
			// The cache knows the tag.
			tags, err := c.Cache().Tags(ctx)
			if err != nil || len(tags) != 1 || tags[0] != r.Ref("kfm/params", "1.0.0") {
				t.Errorf("cache tags %v, %v", tags, err)
			}
		})
	}
}

func TestPulledConfigHasWhatInstallNeeds(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	publish(t, r, "kfm/params", "1.0.0", registry.PackOptions{})
	b, err := newClient(t, r).Pull(ctx, mustRef(t, r.Ref("kfm/params", "1.0.0")), registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config
	if cfg.Name != "params-demo" || cfg.Version != "1.0.0" || cfg.License != "GPL-2.0-only OR BSD-2-Clause" || cfg.Source != "https://example.com/kfm/params" {
		t.Errorf("metadata %+v", cfg)
	}
	wc, err := cfg.Program("with_config")
	if err != nil {
		t.Fatal(err)
	}
	// From XDP_RUN_CONFIG: priority 20, continue on pass and drop.
	if wc.Priority != 20 || strings.Join(wc.ProceedOn, ",") != "drop,pass" {
		t.Errorf("with_config run config %d %v", wc.Priority, wc.ProceedOn)
	}
	as, err := wc.ProceedOnActions(bpf.HookXDP)
	if err != nil || !as.Contains(bpf.XDPDrop) || !as.Contains(bpf.XDPPass) {
		t.Errorf("proceed-on actions %v, %v", as, err)
	}
	var desc string
	var def any
	for _, p := range wc.Params {
		if p.Name == "p_u32" {
			desc, def = p.Description, p.Default
		}
	}
	if desc != "key looked up in the seen map" || def != json.Number("100") {
		t.Errorf("p_u32: description %q default %v (%T)", desc, def, def)
	}
	// p_u64's default does not fit a float64: it must stay exact.
	for _, p := range wc.Params {
		if p.Name == "p_u64" && p.Default != json.Number("1099511627776") {
			t.Errorf("p_u64 default %v", p.Default)
		}
	}
	if len(wc.Maps) != 1 || wc.Maps[0].Name != "seen" || wc.Maps[0].Type != "lru_hash" {
		t.Errorf("with_config maps %+v", wc.Maps)
	}

	woc, _ := cfg.Program("without_config")
	if woc.Priority != bpf.DefaultPriority || strings.Join(woc.ProceedOn, ",") != "pass" || len(woc.Params) != 0 || len(woc.Maps) != 0 {
		t.Errorf("without_config %+v", woc)
	}
	tc, _ := cfg.Program("tc_prog")
	if tc.Priority != 7 || strings.Join(tc.ProceedOn, ",") != "ok,shot" || len(tc.Hooks) != 1 || tc.Hooks[0] != bpf.HookTCIngress {
		t.Errorf("tc_prog %+v", tc)
	}
	if len(tc.Params) != 1 || tc.Params[0].Name != "p_u16" {
		t.Errorf("tc_prog params %+v (it reads p_u16 only)", tc.Params)
	}
}

func TestSameInputSameDigest(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	b1, p1 := publish(t, r, "kfm/repro", "a", registry.PackOptions{})
	b2, p2 := publish(t, r, "kfm/repro", "b", registry.PackOptions{})
	if b1.Digest != b2.Digest || p1.Digest != p2.Digest {
		t.Fatalf("same input, digests %s and %s", p1.Digest, p2.Digest)
	}
	if !bytes.Equal(b1.ManifestJSON(), b2.ManifestJSON()) || !bytes.Equal(b1.ConfigJSON(), b2.ConfigJSON()) {
		t.Fatal("same input, different bytes")
	}
	// The registry stores exactly the manifest kfm computed.
	rp, err := newClient(t, r).Repository(ctx, p1)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := rp.Resolve(ctx, "a")
	if err != nil || desc.Digest != b1.Digest {
		t.Fatalf("registry has %s for tag a, %v", desc.Digest, err)
	}

	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	created, err := registry.SourceDateEpoch()
	if err != nil {
		t.Fatal(err)
	}
	b3 := pack(t, registry.PackOptions{Created: created})
	if b3.Digest == b1.Digest {
		t.Fatal("another SOURCE_DATE_EPOCH gave the same digest")
	}
	if got := b3.Manifest.Annotations[registry.AnnotationCreated]; got != "2023-11-14T22:13:20Z" {
		t.Errorf("created annotation %q", got)
	}
	if got := b1.Manifest.Annotations[registry.AnnotationCreated]; got != "1970-01-01T00:00:00Z" {
		t.Errorf("default created annotation %q", got)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := registry.SourceDateEpoch(); err == nil {
		t.Error("SOURCE_DATE_EPOCH=yesterday accepted")
	}
}

func TestTamperedRegistryContentIsRefused(t *testing.T) {
	for _, part := range []string{"layer", "config", "manifest"} {
		t.Run(part, func(t *testing.T) {
			ctx := context.Background()
			r := testregistry.Start(t, testregistry.Options{})
			b, _ := publish(t, r, "kfm/tamper", "1.0.0", registry.PackOptions{})
			var d digest.Digest
			switch part {
			case "layer":
				d = b.Manifest.Layers[0].Digest
			case "config":
				d = b.Manifest.Config.Digest
			case "manifest":
				d = b.Digest
			}
			// Same size, other bytes: only the digest can tell.
			path := r.BlobPath(d)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 0x55
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			c := newClient(t, r)
			_, err = c.Pull(ctx, mustRef(t, r.Ref("kfm/tamper", "1.0.0")), registry.PullOptions{})
			if !errors.Is(err, registry.ErrDigestMismatch) {
				t.Fatalf("pull of tampered %s: %v, want ErrDigestMismatch", part, err)
			}
			t.Logf("%s: %v", part, err)
			if blobs := cacheBlobs(t, c.Cache()); len(blobs) != 0 {
				t.Errorf("a refused pull left %d blobs in the cache: %v", len(blobs), blobs)
			}
			if tags, _ := c.Cache().Tags(ctx); len(tags) != 0 {
				t.Errorf("a refused pull left tags %v", tags)
			}
		})
	}
}

// pushManifest pushes raw manifest bytes (and nothing else) as repo:tag.
func pushManifest(t testing.TB, r *testregistry.Registry, repo, tag string, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	rp, err := newClient(t, r).Repository(ctx, mustRef(t, r.Ref(repo, tag)))
	if err != nil {
		t.Fatal(err)
	}
	rp.MaxMetadataBytes = 8 << 20
	desc := content.NewDescriptorFromBytes(mediaType, data)
	if err := rp.PushReference(ctx, desc, bytes.NewReader(data), tag); err != nil {
		t.Fatalf("push manifest: %v", err)
	}
	return desc
}

// pushBlob pushes a blob to repo.
func pushBlob(t testing.TB, r *testregistry.Registry, repo string, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	rp, err := newClient(t, r).Repository(ctx, mustRef(t, r.Ref(repo, "x")))
	if err != nil {
		t.Fatal(err)
	}
	desc := content.NewDescriptorFromBytes(mediaType, data)
	if err := rp.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("push blob: %v", err)
	}
	return desc
}

func TestOversizedManifestIsRefused(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	b, _ := publish(t, r, "kfm/big", "small", registry.PackOptions{})
	// A valid bundle manifest inflated to 2 MiB by an annotation: the
	// registry accepts up to 4 MiB, kfm only 1 MiB.
	m := b.Manifest
	m.Annotations = map[string]string{"padding": strings.Repeat("x", 2<<20)}
	data, _ := json.Marshal(m)
	pushManifest(t, r, "kfm/big", "huge", ocispec.MediaTypeImageManifest, data)
	c := newClient(t, r)
	_, err := c.Pull(ctx, mustRef(t, r.Ref("kfm/big", "huge")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrTooLarge) {
		t.Fatalf("pull of a 2 MiB manifest: %v, want ErrTooLarge", err)
	}
	if blobs := cacheBlobs(t, c.Cache()); len(blobs) != 0 {
		t.Errorf("refused pull cached %v", blobs)
	}
	// A lower configured limit applies to configs and layers too.
	small := newClient(t, r, func(o *registry.Options) { o.Limits.MaxObjectSize = 100 })
	_, err = small.Pull(ctx, mustRef(t, r.Ref("kfm/big", "small")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrTooLarge) || !strings.Contains(err.Error(), "layer") {
		t.Fatalf("pull with a 100-byte object limit: %v", err)
	}
}

func TestMissingTagAndRepository(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
	publish(t, r, "kfm/present", "1.0.0", registry.PackOptions{})
	c := newClient(t, r)
	for _, ref := range []string{r.Ref("kfm/present", "2.0.0"), r.Ref("kfm/absent", "1.0.0"), r.Host() + "/kfm/present@" + digest.FromString("nothing").String()} {
		_, err := c.Pull(ctx, mustRef(t, ref), registry.PullOptions{})
		if !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("pull %s: %v, want ErrNotFound", ref, err)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	for _, a := range []testregistry.Auth{testregistry.AuthBasic, testregistry.AuthToken} {
		t.Run(a.String(), func(t *testing.T) {
			ctx := context.Background()
			r := testregistry.Start(t, testregistry.Options{Auth: a})
			publish(t, r, "kfm/secret", "1.0.0", registry.PackOptions{})
			ref := mustRef(t, r.Ref("kfm/secret", "1.0.0"))
			for name, store := range map[string]func(*registry.Options){
				"wrong password": func(o *registry.Options) {
					o.Credentials = creds(t, nil)
					_ = o.Credentials.Put(ctx, r.Host(), authCred(r.Username(), "wrong"))
				},
				"no credentials": func(o *registry.Options) { o.Credentials = creds(t, nil) },
			} {
				c := newClient(t, r, store)
				_, err := c.Pull(ctx, ref, registry.PullOptions{})
				if !errors.Is(err, registry.ErrUnauthorized) || !strings.Contains(err.Error(), "kfm login "+r.Host()) {
					t.Errorf("%s: %v, want ErrUnauthorized with a kfm login hint", name, err)
				}
				_, err = c.Publish(ctx, pack(t, registry.PackOptions{}), ref)
				if !errors.Is(err, registry.ErrUnauthorized) {
					t.Errorf("%s: publish: %v", name, err)
				}
			}
		})
	}
}

func TestOfflineFromCache(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
	_, pinned := publish(t, r, "kfm/offline", "1.0.0", registry.PackOptions{})
	c := newClient(t, r)
	if _, err := c.Pull(ctx, mustRef(t, r.Ref("kfm/offline", "1.0.0")), registry.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	r.Stop()

	// A tag with --offline resolves from the cache.
	b, err := c.Pull(ctx, mustRef(t, r.Ref("kfm/offline", "1.0.0")), registry.PullOptions{Offline: true})
	if err != nil || b.Digest != pinned.Digest {
		t.Fatalf("offline pull by tag: %v", err)
	}
	// A digest needs no network even without --offline.
	byDigest := mustRef(t, r.Host()+"/kfm/offline@"+pinned.Digest.String())
	b, err = c.Pull(ctx, byDigest, registry.PullOptions{})
	if err != nil || !bytes.Equal(b.Object, readObject(t)) {
		t.Fatalf("pull by digest with the registry gone: %v", err)
	}
	// The same cache directory opened by another client (another kfm
	// process) works too.
	other := newClient(t, r, func(o *registry.Options) { o.Cache = c.Cache() })
	if _, err := other.Pull(ctx, pinned, registry.PullOptions{Offline: true}); err != nil {
		t.Fatalf("offline pull from a second client: %v", err)
	}
	// What was never pulled is not there.
	_, err = c.Pull(ctx, mustRef(t, r.Ref("kfm/offline", "2.0.0")), registry.PullOptions{Offline: true})
	if !errors.Is(err, registry.ErrNotCached) {
		t.Errorf("offline pull of an uncached tag: %v", err)
	}
	// Without --offline a tag needs the registry, which is gone.
	_, err = c.Pull(ctx, mustRef(t, r.Ref("kfm/offline", "1.0.0")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("online pull with the registry gone: %v, want ErrUnreachable", err)
	}
}

func TestCorruptedCacheIsRepairedByPull(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	b, pinned := publish(t, r, "kfm/repair", "1.0.0", registry.PackOptions{})
	c := newClient(t, r)
	if _, err := c.Pull(ctx, pinned, registry.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	// Change the cached object on disk.
	path := c.Cache().Dir() + "/blobs/sha256/" + b.Manifest.Layers[0].Digest.Encoded()
	data, _ := os.ReadFile(path)
	data[100] ^= 1
	_ = os.Chmod(path, 0o644)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, pinned); !errors.Is(err, registry.ErrDigestMismatch) {
		t.Fatalf("open of a corrupted cache entry: %v", err)
	}
	if _, err := c.Pull(ctx, pinned, registry.PullOptions{Offline: true}); err == nil {
		t.Fatal("offline pull returned a corrupted bundle")
	}
	_ = os.Remove(path)
	if _, err := c.Pull(ctx, pinned, registry.PullOptions{}); err != nil {
		t.Fatalf("pull did not repair the cache: %v", err)
	}
}

func TestNotABundleSaysWhatItIs(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	cfg := pushBlob(t, r, "other/chart", "application/vnd.cncf.helm.config.v1+json", []byte(`{"name":"x"}`))
	layer := pushBlob(t, r, "other/chart", "application/vnd.cncf.helm.chart.content.v1.tar+gzip", []byte("not really a chart"))
	for _, tc := range []struct {
		name, want string
		m          ocispec.Manifest
	}{
		{"helm chart", "config media type application/vnd.cncf.helm.config.v1+json", ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: cfg, Layers: []ocispec.Descriptor{layer}}},
		{"sbom", "artifact of type application/spdx+json", ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/spdx+json",
			Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{layer}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.m.Config.Digest == ocispec.DescriptorEmptyJSON.Digest {
				pushBlob(t, r, "other/chart", ocispec.MediaTypeEmptyJSON, []byte("{}"))
			}
			data, _ := json.Marshal(tc.m)
			pushManifest(t, r, "other/chart", strings.ReplaceAll(tc.name, " ", "-"), ocispec.MediaTypeImageManifest, data)
			c := newClient(t, r)
			_, err := c.Pull(ctx, mustRef(t, r.Ref("other/chart", strings.ReplaceAll(tc.name, " ", "-"))), registry.PullOptions{})
			if !errors.Is(err, registry.ErrNotBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull: %v; want ErrNotBundle saying %q", err, tc.want)
			}
			if blobs := cacheBlobs(t, c.Cache()); len(blobs) != 0 {
				t.Errorf("refused pull cached %v", blobs)
			}
		})
	}
}

func TestTLSNeedsTheCA(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{TLS: true})
	publish(t, r, "kfm/tls", "1.0.0", registry.PackOptions{})
	c := newClient(t, r, func(o *registry.Options) { o.CAFile = "" })
	_, err := c.Pull(ctx, mustRef(t, r.Ref("kfm/tls", "1.0.0")), registry.PullOptions{})
	if !errors.Is(err, registry.ErrUnreachable) || !strings.Contains(err.Error(), "--ca-file") {
		t.Fatalf("pull from a registry with an unknown CA: %v; want ErrUnreachable with a --ca-file hint", err)
	}
}

func TestPullAll(t *testing.T) {
	ctx := context.Background()
	r := testregistry.Start(t, testregistry.Options{})
	var refs []registry.Reference
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		_, p := publish(t, r, "kfm/many", name, registry.PackOptions{Name: "bundle-" + name})
		refs = append(refs, mustRef(t, r.Ref("kfm/many", name)))
		_ = p
	}
	c := newClient(t, r)
	bs, err := c.PullAll(ctx, refs, registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bs {
		if b.Config.Name != "bundle-"+refs[i].Tag {
			t.Errorf("bundle %d is %s", i, b.Config.Name)
		}
	}
	tags, _ := c.Cache().Tags(ctx)
	if len(tags) != len(refs) {
		t.Errorf("cache tags %v", tags)
	}
}
