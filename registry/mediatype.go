package registry

// Media types of a kfm bundle (DESIGN.md, "Bundle format").
const (
	// ArtifactType is the artifactType of a bundle's manifest.
	ArtifactType = "application/vnd.kfm.bundle.v1"
	// ConfigMediaType is the media type of a bundle's config blob.
	ConfigMediaType = "application/vnd.kfm.bundle.config.v1+json"
	// ObjectMediaType is the media type of a bundle's single layer: the
	// ELF object.
	ObjectMediaType = "application/vnd.kfm.bpf.object.v1+elf"
)

// Manifest media types kfm reads besides the OCI image manifest.
const (
	dockerManifestMediaType     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestListMediaType = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerConfigMediaType       = "application/vnd.docker.container.image.v1+json"
)

// OCI annotation keys kfm writes on a bundle manifest.
const (
	AnnotationTitle       = "org.opencontainers.image.title"
	AnnotationVersion     = "org.opencontainers.image.version"
	AnnotationDescription = "org.opencontainers.image.description"
	AnnotationLicenses    = "org.opencontainers.image.licenses"
	AnnotationSource      = "org.opencontainers.image.source"
	AnnotationCreated     = "org.opencontainers.image.created"
	AnnotationURL         = "org.opencontainers.image.url"
	AnnotationAuthors     = "org.opencontainers.image.authors"
)
