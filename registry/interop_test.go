package registry_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry"
)

// orasCLI runs the real oras CLI (installed by scripts/deps.sh) with its own
// home and Docker config.
type orasCLI struct {
	path       string
	env        []string
	dockerConf string
}

func newOras(t testing.TB) *orasCLI {
	t.Helper()
	path := testenv.RequireTool(t, "oras")
	home := t.TempDir()
	o := &orasCLI{path: path, dockerConf: filepath.Join(home, ".docker")}
	o.env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+o.dockerConf, "ORAS_CACHE=")
	return o
}

func (o *orasCLI) run(t testing.TB, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(o.path, args...)
	cmd.Dir = dir
	cmd.Env = o.env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("oras %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// registryFlags are the oras flags to reach r.
func orasFlags(r *testregistry.Registry) []string {
	if r.TLS() {
		return []string{"--ca-file", r.CAFile()}
	}
	return []string{"--plain-http"}
}

func TestInteropOrasPullsKFMBundle(t *testing.T) {
	for _, v := range []struct {
		name string
		opts testregistry.Options
	}{
		{"plain", testregistry.Options{}},
		{"tls+basic-auth", testregistry.Options{TLS: true, Auth: testregistry.AuthBasic}},
	} {
		t.Run(v.name, func(t *testing.T) {
			o := newOras(t)
			r := testregistry.Start(t, v.opts)
			_, pinned := publish(t, r, "kfm/interop", "1.0.0", registry.PackOptions{})
			if r.Username() != "" {
				// kfm login writes the Docker config oras reads.
				t.Setenv("DOCKER_CONFIG", o.dockerConf)
				c := newClient(t, r, func(opts *registry.Options) {
					store, err := registry.DockerCredentials()
					if err != nil {
						t.Fatal(err)
					}
					opts.Credentials = store
				})
				if err := c.Login(context.Background(), r.Host(), r.Username(), r.Password()); err != nil {
					t.Fatalf("kfm login: %v", err)
				}
			}
			out := t.TempDir()
			o.run(t, out, "", append([]string{"pull", pinned.String(), "-o", out}, orasFlags(r)...)...)
			got, err := os.ReadFile(filepath.Join(out, "params.o"))
			if err != nil {
				t.Fatalf("oras pull wrote no params.o: %v", err)
			}
			if !bytes.Equal(got, readObject(t)) {
				t.Fatal("oras pull gave other bytes than kfm published")
			}
		})
	}
}

func TestInteropKFMPullsOrasPush(t *testing.T) {
	ctx := context.Background()
	o := newOras(t)
	r := testregistry.Start(t, testregistry.Options{Auth: testregistry.AuthBasic})
	dir := t.TempDir()
	b := pack(t, registry.PackOptions{})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b.ConfigJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "params.o"), readObject(t), 0o644); err != nil {
		t.Fatal(err)
	}
	// oras login writes the Docker config kfm reads.
	o.run(t, dir, r.Password(), append([]string{"login", r.Host(), "-u", r.Username(), "--password-stdin"}, orasFlags(r)...)...)
	o.run(t, dir, "", append([]string{"push", r.Ref("oras/pushed", "1.0.0"),
		"--artifact-type", registry.ArtifactType,
		"--config", "config.json:" + registry.ConfigMediaType,
		"params.o:" + registry.ObjectMediaType}, orasFlags(r)...)...)

	t.Setenv("DOCKER_CONFIG", o.dockerConf)
	c := newClient(t, r, func(opts *registry.Options) {
		store, err := registry.DockerCredentials()
		if err != nil {
			t.Fatal(err)
		}
		opts.Credentials = store
	})
	got, err := c.Pull(ctx, mustRef(t, r.Ref("oras/pushed", "1.0.0")), registry.PullOptions{})
	if err != nil {
		t.Fatalf("kfm pull of an oras push: %v", err)
	}
	if got.Format != registry.FormatKFM || !bytes.Equal(got.Object, readObject(t)) || got.ObjectName != "params.o" || got.Config.Name != b.Config.Name {
		t.Fatalf("pulled %s %s %q", got.Format, got.Config.Name, got.ObjectName)
	}
}
