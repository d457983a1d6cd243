package registry

import (
	"context"
	"fmt"
	"strings"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// Login checks username and password against registry host (host or
// host:port) and, when the registry accepts them, stores them in the
// client's credential store (the Docker one unless Options say otherwise),
// where docker, oras and helm find them too.
func (c *Client) Login(ctx context.Context, host, username, password string) error {
	host = normalizeHost(host)
	if username == "" || password == "" {
		return fmt.Errorf("login %s: username and password are required", host)
	}
	reg, err := c.registry(ctx, host)
	if err != nil {
		return err
	}
	if err := credentials.Login(ctx, c.creds, reg, auth.Credential{Username: username, Password: password}); err != nil {
		return classify(err, "login "+host, host)
	}
	return nil
}

// Logout removes the stored credentials of registry host.
func (c *Client) Logout(ctx context.Context, host string) error {
	host = normalizeHost(host)
	if err := credentials.Logout(ctx, c.creds, host); err != nil {
		return fmt.Errorf("logout %s: %w", host, err)
	}
	return nil
}

// normalizeHost accepts "https://host/" as docker login does.
func normalizeHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	return strings.TrimSuffix(h, "/")
}
