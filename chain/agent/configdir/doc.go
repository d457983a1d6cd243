// Package configdir is the node agent's desired-state source for a
// configuration directory (/etc/kfm by default): kfm.yaml and kfm.lock,
// read as `kfm apply --locked` reads them, watched with fsnotify.
//
// The lock must satisfy the manifest; a directory whose files do not parse
// or do not agree is refused (logged and counted) and the agent keeps
// running what it last applied. The directory itself is watched rather than
// the files, so editors that replace a file by renaming, and Kubernetes
// ConfigMap volumes that swap a symlink, are seen too.
package configdir
