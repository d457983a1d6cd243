package kubernetes

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// EnvNodeName is the environment variable that names the agent's node when
// no flag does; the DaemonSet sets it from the downward API
// (fieldRef: spec.nodeName).
const EnvNodeName = "NODE_NAME"

// Config returns how to reach the API server: the kubeconfig file at path,
// or the one KUBECONFIG names, or else the pod's service account
// (in-cluster), which is how the DaemonSet runs the agent.
func Config(path string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("kubernetes source: not in a pod and no kubeconfig: pass --kubeconfig or set KUBECONFIG: %w", err)
		}
		return cfg, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// NodeName returns flag, or else $NODE_NAME.
func NodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv(EnvNodeName); n != "" {
		return n, nil
	}
	return "", ErrNoNodeName
}
