// Package ociimage builds kfm's container image without a container
// engine: one layer holding the static kfm binary (and, when given, a CA
// bundle for registries over TLS) on an empty base, written as an OCI image
// layout and optionally pushed. Every timestamp is fixed (SOURCE_DATE_EPOCH,
// default the epoch), files are sorted and owned by root, and the layer is
// compressed deterministically, so the same binary gives the same digest
// on every machine. `make image` runs it through the mkimage program.
package ociimage
