// Package yamlfile is what kfm's YAML file formats (kfm.yaml, kfm.lock,
// policy.yaml) share: strict decoding that names the line of an unknown
// key or a wrong type, and finding the line of a node for messages about
// values that decode fine but are wrong.
package yamlfile
