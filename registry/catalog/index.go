package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kfm-project/kfm/registry"
)

// The catalog index artifact (see the package documentation).
const (
	// ArtifactType is the artifactType of the index manifest.
	ArtifactType = "application/vnd.kfm.catalog.v1"
	// IndexMediaType is the media type of its single layer, an Index in
	// JSON.
	IndexMediaType = "application/vnd.kfm.catalog.index.v1+json"
	// IndexRepository and IndexTag name it inside a namespace:
	// HOST/NAMESPACE/kfm-catalog:latest.
	IndexRepository = "kfm-catalog"
	IndexTag        = "latest"
	// IndexVersion is the Index schema version this package writes.
	IndexVersion = 1
	// MaxIndexSize caps an index (16 MiB: about 10,000 bundles).
	MaxIndexSize = 16 << 20
)

// Index is the content of a catalog index artifact: the bundles of one
// namespace as List read them when the index was published.
type Index struct {
	SchemaVersion int      `json:"schemaVersion"`
	Namespace     string   `json:"namespace"`
	Bundles       []Bundle `json:"bundles"`
}

// FetchIndex reads the catalog index of ns; ErrNotFound (registry's) when
// there is none.
func FetchIndex(ctx context.Context, c *registry.Client, ns Namespace) (*Index, digest.Digest, error) {
	data, pinned, err := c.FetchArtifact(ctx, ns.IndexRef(), ArtifactType, IndexMediaType, MaxIndexSize)
	if err != nil {
		return nil, "", err
	}
	idx, err := ParseIndex(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", ns.IndexRef(), err)
	}
	if idx.Namespace != ns.String() {
		return nil, "", fmt.Errorf("%s: %w: the index describes namespace %q", ns.IndexRef(), registry.ErrInvalidBundle, idx.Namespace)
	}
	return idx, pinned.Digest, nil
}

// ParseIndex reads an index; bundles outside its namespace or without a
// config are errors.
func ParseIndex(data []byte) (*Index, error) {
	var idx Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: catalog index: %v", registry.ErrInvalidBundle, err)
	}
	if idx.SchemaVersion != IndexVersion {
		return nil, fmt.Errorf("%w: catalog index schema version %d; this kfm reads version %d", registry.ErrInvalidBundle, idx.SchemaVersion, IndexVersion)
	}
	ns, err := ParseNamespace(idx.Namespace)
	if err != nil {
		return nil, fmt.Errorf("%w: catalog index: %w", registry.ErrInvalidBundle, err)
	}
	for i, b := range idx.Bundles {
		host, path, _ := strings.Cut(b.Repository, "/")
		if host != ns.Registry || !ns.contains(path) || b.Config == nil || b.Latest == "" || b.Descriptor.Digest.Validate() != nil {
			return nil, fmt.Errorf("%w: catalog index: bundles[%d] (%q) is incomplete or outside namespace %s", registry.ErrInvalidBundle, i, b.Repository, ns)
		}
	}
	if idx.Bundles == nil {
		idx.Bundles = []Bundle{}
	}
	return &idx, nil
}

// PublishIndex writes the bundles of a listing as the catalog index of ns
// and returns its pinned reference. The bytes depend only on the bundles
// (sorted, created = the given time), so publishing the same state twice
// gives the same digest.
func PublishIndex(ctx context.Context, c *registry.Client, ns Namespace, bundles []Bundle, created time.Time) (registry.Reference, error) {
	idx := Index{SchemaVersion: IndexVersion, Namespace: ns.String(), Bundles: append([]Bundle{}, bundles...)}
	sortBundles(idx.Bundles)
	data, err := json.Marshal(idx)
	if err != nil {
		return registry.Reference{}, err
	}
	if len(data) > MaxIndexSize {
		return registry.Reference{}, fmt.Errorf("%s: the index has %d bytes, more than the %d readers accept: %w", ns, len(data), MaxIndexSize, registry.ErrTooLarge)
	}
	return c.PushArtifact(ctx, ns.IndexRef(), ArtifactType, IndexMediaType, "kfm-catalog.json", data, created)
}
