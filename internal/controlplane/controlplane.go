package controlplane

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kfm-project/kfm/chain/agent/kubernetes/api/v1alpha1"
	"github.com/kfm-project/kfm/internal/testenv"
)

// CRDDir is the directory of kfm's generated CRDs.
func CRDDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "manifests", "kubernetes", "crds")
}

// Start runs etcd and kube-apiserver for tb, installs kfm's CRDs, waits
// until ChainSets can be listed, and stops everything when the test ends.
// It skips (or fails under KFM_REQUIRE_TOOLS=1) when the binaries are not
// built.
func Start(tb testing.TB) *rest.Config {
	tb.Helper()
	dir := testenv.ControlPlane(tb)
	// envtest logs through controller-runtime's logger, which prints a
	// stack trace to stderr unless someone sets one: kfm's tests want
	// neither.
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{CRDDir()},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		tb.Fatalf("start control plane from %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Errorf("stop control plane: %v", err)
		}
	})
	// Right after a CRD turns Established its storage may still answer
	// 429 "storage is (re)initializing": wait for a list to succeed.
	scheme := k8sruntime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := c.List(ctx, &v1alpha1.ChainSetList{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("ChainSets cannot be listed 30 s after the control plane started: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return cfg
}
