package registry

import (
	"context"
	"net/netip"
	"testing"

	"oras.land/oras-go/v2/registry/remote/credentials"
)

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.1.2.3": true, "[::1]:5000": true, "localhost:5000": true, "LOCALHOST": true,
		"registry.localhost:443": true, "::ffff:127.0.0.1": true,
		"10.0.0.1:5000": false, "registry.example.com": false, "localhost.example.com": false, "169.254.169.254": false, "[::]:80": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

// Plain HTTP and loopback token realms are for loopback registries only.
func TestRemoteRegistriesKeepTheDefaults(t *testing.T) {
	c, err := NewClient(Options{Credentials: credentials.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := c.usePlainHTTP(context.Background(), "registry.example.com")
	if err != nil || plain {
		t.Errorf("registry.example.com: plain HTTP %v, %v", plain, err)
	}
	if ac := c.authClient("registry.example.com"); ac.BlockedRealmPrefixes != nil {
		t.Errorf("registry.example.com: realm denylist changed to %v", ac.BlockedRealmPrefixes)
	}
	ac := c.authClient("127.0.0.1:5000")
	if len(ac.BlockedRealmPrefixes) == 0 {
		t.Fatal("loopback registry: every realm allowed")
	}
	for _, p := range ac.BlockedRealmPrefixes {
		if p.Contains(netip.MustParseAddr("127.0.0.1")) || p.Contains(netip.IPv6Loopback()) {
			t.Errorf("loopback registry: realm prefix %s still blocks loopback", p)
		}
	}
	blocksMetadata := false
	for _, p := range ac.BlockedRealmPrefixes {
		blocksMetadata = blocksMetadata || p.Contains(netip.MustParseAddr("169.254.169.254"))
	}
	if !blocksMetadata {
		t.Error("loopback registry: cloud metadata realms no longer blocked")
	}
	forced, _ := NewClient(Options{Credentials: credentials.NewMemoryStore(), PlainHTTP: true})
	if plain, _ := forced.usePlainHTTP(context.Background(), "registry.example.com"); !plain {
		t.Error("--plain-http ignored")
	}
}
