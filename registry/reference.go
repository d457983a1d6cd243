package registry

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/opencontainers/go-digest"
	orasregistry "oras.land/oras-go/v2/registry"
)

// DefaultTag is the tag of a reference that names neither tag nor digest.
const DefaultTag = "latest"

// Reference names a bundle in a registry: registry/repository with a tag, a
// digest, or both ("registry.example.com/net/ratelimit:1.2.0@sha256:...").
// A reference with a digest is pinned: it means exactly that content,
// whatever the tag says today.
type Reference struct {
	// Registry is the host, with a port when it has one.
	Registry string
	// Repository is the path inside the registry.
	Repository string
	// Tag may be empty when Digest is set.
	Tag string
	// Digest is the manifest digest, empty until resolved.
	Digest digest.Digest
}

// ParseReference parses registry/repository[:tag][@digest]. Without tag and
// digest the tag is "latest". The registry part is required (there is no
// default registry): "localhost:5000/x" and "ghcr.io/org/x" are references,
// "org/x" is not.
func ParseReference(s string) (Reference, error) {
	raw := s
	var ref Reference
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		d, err := digest.Parse(s[i+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("%q: %w: bad digest %q: %v", raw, ErrInvalidReference, s[i+1:], err)
		}
		ref.Digest = d
		s = s[:i]
	}
	slash := strings.IndexByte(s, '/')
	if slash < 0 {
		return Reference{}, fmt.Errorf("%q: %w: want registry/repository[:tag][@digest], e.g. registry.example.com/net/ratelimit:1.0.0", raw, ErrInvalidReference)
	}
	if colon := strings.LastIndexByte(s, ':'); colon > slash {
		ref.Tag = s[colon+1:]
		s = s[:colon]
	}
	ref.Registry, ref.Repository = s[:slash], s[slash+1:]
	if !looksLikeHost(ref.Registry) {
		return Reference{}, fmt.Errorf("%q: %w: %q is not a registry host; write the registry first, e.g. docker.io/%s or localhost:5000/%s", raw, ErrInvalidReference, ref.Registry, s, s)
	}
	if ref.Tag == "" && ref.Digest == "" {
		ref.Tag = DefaultTag
	}
	// Let oras-go check the grammar of every part.
	check := orasregistry.Reference{Registry: ref.Registry, Repository: ref.Repository, Reference: ref.Tag}
	if ref.Tag == "" {
		check.Reference = ref.Digest.String()
	}
	if err := check.Validate(); err != nil {
		return Reference{}, fmt.Errorf("%q: %w: %v", raw, ErrInvalidReference, err)
	}
	return ref, nil
}

// looksLikeHost tells a registry host (with a dot, a port, or localhost)
// from the first path element of a Docker Hub short name.
func looksLikeHost(s string) bool {
	return strings.ContainsAny(s, ".:[") || s == "localhost"
}

// String formats the reference as ParseReference reads it.
func (r Reference) String() string {
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Repo is registry/repository.
func (r Reference) Repo() string { return r.Registry + "/" + r.Repository }

// Pinned returns the reference with digest d (the tag stays, for humans).
func (r Reference) Pinned(d digest.Digest) Reference {
	r.Digest = d
	return r
}

// IsPinned reports whether the reference names its content by digest.
func (r Reference) IsPinned() bool { return r.Digest != "" }

// TagRef is the reference without digest, as the cache tags it; empty when
// there is no tag.
func (r Reference) TagRef() string {
	if r.Tag == "" {
		return ""
	}
	return r.Repo() + ":" + r.Tag
}

// orasRef is the oras-go form: the digest when pinned, else the tag.
func (r Reference) orasRef() orasregistry.Reference {
	ref := orasregistry.Reference{Registry: r.Registry, Repository: r.Repository, Reference: r.Tag}
	if r.Digest != "" {
		ref.Reference = r.Digest.String()
	}
	return ref
}

// IsLoopback reports whether host (host or host:port) is localhost or a
// loopback address. kfm talks plain HTTP to such registries when they do not
// speak TLS, and lets them use token servers on loopback addresses.
func IsLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(h)
	return err == nil && addr.Unmap().IsLoopback()
}
