package kubernetes_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kfm-project/kfm/chain/agent/kubernetes"
)

func TestConfig(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBECONFIG", "")
	if _, err := kubernetes.Config(""); err == nil {
		t.Error("Config without kubeconfig outside a pod: no error")
	}
	t.Setenv("KUBECONFIG", kc)
	cfg, err := kubernetes.Config("")
	if err != nil || cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "secret" {
		t.Fatalf("Config from KUBECONFIG: %+v, %v", cfg, err)
	}
	if _, err := kubernetes.Config(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing kubeconfig: no error")
	}

	t.Setenv(kubernetes.EnvNodeName, "")
	if _, err := kubernetes.NodeName(""); !errors.Is(err, kubernetes.ErrNoNodeName) {
		t.Errorf("NodeName without flag or env: %v", err)
	}
	t.Setenv(kubernetes.EnvNodeName, "node-7")
	if n, _ := kubernetes.NodeName(""); n != "node-7" {
		t.Errorf("NodeName from env: %q", n)
	}
	if n, _ := kubernetes.NodeName("node-1"); n != "node-1" {
		t.Errorf("NodeName from flag: %q", n)
	}
}
