// Package catalog finds kfm bundles in registries: it lists the bundles of
// a namespace (HOST/NAMESPACE), picks each one's latest version, reads its
// metadata (manifest and config only, never the object), matches search
// terms, and reads and writes the catalog index artifact.
//
// # Where the list of bundles comes from
//
// A namespace's bundles are found in this order:
//
//  1. the catalog index artifact HOST/NAMESPACE/kfm-catalog:latest
//     (IndexRef), an OCI artifact of type ArtifactType whose single layer
//     (IndexMediaType) is an Index: every bundle of the namespace with its
//     versions and the metadata of its latest version, as `kfm catalog
//     publish` wrote them. Registries that refuse the catalog API (Docker
//     Hub, GHCR, most cloud registries) are searchable through it.
//  2. the registry's catalog API (GET /v2/_catalog, every page), restricted
//     to repositories under NAMESPACE, then each repository's tag list.
//
// Options.Live makes the index a list of repository names only: every
// bundle's tags and metadata are then read from the registry, as `kfm show`
// and `kfm catalog build` do. Search takes the index as it is (a snapshot
// from the time it was published); what the index says is for display only,
// like every piece of metadata a publisher writes. Signatures are never
// taken from the index: a Checker verifies them against the registry.
//
// # Latest version
//
// Tags that are semantic versions (an optional leading "v") are sorted by
// semver; the latest version is the highest release, or the highest
// pre-release when there is no release. A repository without semver tags
// has "latest" as its latest version when it has that tag, else its last
// tag in lexical order (registries do not say when a tag was pushed, and
// reproducible bundles carry the same creation time). Signature tags
// (sha256-....sig, .att, .sbom) and referrers-schema tags are ignored.
//
// Repositories that hold something other than a kfm bundle are skipped;
// a repository that cannot be read becomes a Problem of the listing, so that
// one broken repository does not hide the others.
package catalog
