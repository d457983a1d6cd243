package catalog

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/kfm-project/kfm/registry"
)

// MaxPageVersions bounds the versions a Page lists (newest first) and
// checks signatures for.
const MaxPageVersions = 50

// Version is one version (tag) of a bundle.
type Version struct {
	Tag        string             `json:"tag"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	Trust      Trust              `json:"trust"`
}

// Page is everything about one bundle: its versions with their signers and
// the full metadata of one version (the latest, unless a tag was asked
// for), readme included.
type Page struct {
	Repository string    `json:"repository"`
	Versions   []Version `json:"versions"`
	// MoreVersions counts versions left out after MaxPageVersions.
	MoreVersions int `json:"moreVersions,omitempty"`
	// Latest is the latest version's tag; Shown the tag Metadata is of.
	Latest   string             `json:"latest"`
	Shown    string             `json:"shown"`
	Metadata *registry.Metadata `json:"metadata"`
}

// ShownTrust is the trust of the shown version.
func (p *Page) ShownTrust() Trust {
	for _, v := range p.Versions {
		if v.Tag == p.Shown {
			return v.Trust
		}
	}
	return Trust{Status: TrustUnknown}
}

// ReadPage reads the page of the repository of ref. With tagged, ref.Tag is
// the version shown (it need not be a version tag), else the latest
// version. Signatures of every listed version are checked with checker.
func ReadPage(ctx context.Context, c *registry.Client, ref registry.Reference, tagged bool, checker Checker, opts Options) (*Page, error) {
	tags, err := c.Tags(ctx, ref)
	if err != nil {
		return nil, err
	}
	versions := Versions(tags)
	if len(versions) == 0 {
		return nil, fmt.Errorf("%s: %w: the repository has no version tags", ref.Repo(), registry.ErrNotFound)
	}
	p := &Page{Repository: ref.Repo(), Latest: Latest(versions), Shown: ref.Tag}
	if !tagged {
		p.Shown = p.Latest
	}
	if len(versions) > MaxPageVersions {
		p.MoreVersions = len(versions) - MaxPageVersions
		versions = versions[:MaxPageVersions]
	}
	shownRef := ref
	shownRef.Tag, shownRef.Digest = p.Shown, ""
	if tagged && ref.Digest != "" {
		shownRef = ref
	}
	if p.Metadata, err = c.FetchMetadata(ctx, shownRef, true); err != nil {
		return nil, err
	}
	if tagged && ref.Tag == "" {
		p.Shown = ref.Digest.String()
	}
	p.Versions = make([]Version, len(versions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.concurrency())
	for i, t := range versions {
		g.Go(func() error {
			r := ref
			r.Tag, r.Digest = t, ""
			pinned, desc, err := c.Resolve(gctx, r, registry.PullOptions{})
			if err != nil {
				return err
			}
			p.Versions[i] = Version{Tag: t, Descriptor: ocispec.Descriptor{MediaType: desc.MediaType, Digest: pinned.Digest, Size: desc.Size}}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	CheckAll(ctx, checker, len(p.Versions), func(i int) (registry.Reference, ocispec.Descriptor) {
		r := ref
		r.Tag, r.Digest = p.Versions[i].Tag, p.Versions[i].Descriptor.Digest
		return r, p.Versions[i].Descriptor
	}, func(i int, t Trust) { p.Versions[i].Trust = t }, opts)
	return p, nil
}
