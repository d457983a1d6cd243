// Package promtest runs a real Prometheus server (the Debian package
// prometheus, installed by scripts/deps.sh) for tests: a temporary
// configuration and storage directory, 127.0.0.1 on a free port, a short
// scrape interval, and queries over its HTTP API. The process and its
// directory go away when the test ends.
package promtest
