package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/registry"
)

type pullResult struct {
	Reference string          `json:"reference"`
	Digest    string          `json:"digest"`
	Format    registry.Format `json:"format"`
	Name      string          `json:"name"`
	Version   string          `json:"version,omitempty"`
	Functions []string        `json:"functions"`
	Signer    *chain.Signer   `json:"signer"`
}

func newPullCommand(g *globals) *cobra.Command {
	var f chainFlags
	cmd := &cobra.Command{
		Use:   "pull REF...",
		Short: "Fetch bundles (or bpfman bytecode images) into the local cache",
		Long: `pull resolves each reference to a digest once, fetches the bundle by that
digest into the local cache (--cache-dir, an OCI layout directory), verifying
every blob against its digest while it arrives, and prints the reference
pinned to the digest. Several references are pulled concurrently.

kfm bundles and bpfman bytecode images are accepted; anything else is refused
and nothing of it is cached. With --offline only the cache is used.

Signatures are fetched into the cache with the bundle and verified against the
trust policy (<config-dir>/policy.yaml); a bundle no rule accepts makes pull
fail (exit status 3) unless --insecure-allow-unsigned is given. Installs verify
again, from the cache, so a cached bundle installs offline.`,
		Example: `  kfm pull registry.example.com/net/ratelimit:1.2.0
  kfm pull localhost:5000/net/a:1 localhost:5000/net/b:1 -o json
  kfm pull --offline registry.example.com/net/ratelimit:1.2.0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s: expected at least one reference", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var refs []registry.Reference
			for _, a := range args {
				ref, err := parseRef(a)
				if err != nil {
					return err
				}
				refs = append(refs, ref)
			}
			src, err := g.sources(ctx, &f)
			if err != nil {
				return err
			}
			c := src.Registry
			// The signatures come at the same time as the bundles
			// (they are verified next).
			opts := registry.PullOptions{Offline: f.registry.offline, Signatures: src.Policy != nil}
			var bars *progressBars
			switch {
			case g.output == "json":
			case isTerminal(g.out):
				bars = newProgressBars(g.out)
				opts.Progress = bars.update
			default:
				opts.Progress = plainProgress(g.err)
			}
			bundles, err := c.PullAll(ctx, refs, opts)
			if bars != nil {
				bars.wait()
			}
			if err != nil {
				return registryError(err)
			}
			var results []pullResult
			for _, b := range bundles {
				signer, err := src.Verify(ctx, b.Reference, b.Descriptor())
				if err != nil {
					return err
				}
				if err := checkBundleCapabilities(src, b); err != nil {
					return err
				}
				results = append(results, pullResult{Reference: b.Reference.String(), Digest: b.Digest.String(), Format: b.Format,
					Name: b.Config.Name, Version: b.Config.Version, Functions: b.Config.Functions(), Signer: signer})
			}
			var v any = results
			if len(results) == 1 {
				v = results[0]
			}
			return g.report(v, func(w io.Writer) error {
				for _, r := range results {
					fmt.Fprintf(w, "Digest: %s\nPulled: %s\nSigner: %s\n", r.Digest, r.Reference, r.Signer)
				}
				return nil
			})
		},
	}
	f.register(cmd)
	cmd.Flags().MarkHidden("lock-timeout")
	return cmd
}

// checkBundleCapabilities checks every program of a pulled bundle against
// the capability policy, from kfm's own analysis of its object.
func checkBundleCapabilities(src *chain.Sources, b *registry.Bundle) error {
	obj, err := bpf.ParseObject(b.Reference.String(), b.Object)
	if err != nil {
		return err
	}
	for _, p := range obj.Programs {
		if err := src.CheckCapabilities(b.Reference.String(), obj, p.Function, ""); err != nil {
			return fmt.Errorf("%s: %w (the bundle stays in the cache; install refuses it)", b.Reference, err)
		}
	}
	return nil
}

// plainProgress writes one line per finished blob (for logs and pipes).
func plainProgress(w io.Writer) func(registry.Progress) {
	var mu sync.Mutex
	return func(p registry.Progress) {
		if !p.Finished {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		how := "fetched"
		if p.Cached {
			how = "cached"
		}
		fmt.Fprintf(w, "%s: %s %s %s (%d bytes)\n", p.Reference, how, p.Kind, p.Digest, p.Total)
	}
}

// progressBars draws one mpb bar per blob on a terminal.
type progressBars struct {
	p    *mpb.Progress
	mu   sync.Mutex
	bars map[string]*mpb.Bar
}

func newProgressBars(w io.Writer, opts ...mpb.ContainerOption) *progressBars {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(w)}, opts...)
	return &progressBars{p: mpb.New(opts...), bars: map[string]*mpb.Bar{}}
}

func (pb *progressBars) update(p registry.Progress) {
	key := p.Reference + " " + p.Digest.String()
	pb.mu.Lock()
	bar, ok := pb.bars[key]
	if !ok {
		label := fmt.Sprintf("%s %s %s", shortRef(p.Reference), p.Kind, shortDigest(p.Digest.Encoded()))
		done := "done"
		if p.Cached {
			done = "cached"
		}
		bar = pb.p.AddBar(p.Total,
			mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.OnComplete(decor.CountersKibiByte("% .1f / % .1f"), done)))
		pb.bars[key] = bar
	}
	pb.mu.Unlock()
	bar.SetCurrent(p.Done)
	if p.Finished && !bar.Completed() {
		bar.SetTotal(p.Total, true)
	}
}

func (pb *progressBars) wait() {
	pb.mu.Lock()
	for _, b := range pb.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	pb.mu.Unlock()
	pb.p.Wait()
}

// shortRef is the last path element of a reference, with tag (and the
// digest cut short), for progress lines.
func shortRef(ref string) string {
	ref = ref[strings.LastIndexByte(ref, '/')+1:]
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	return ref
}

func shortDigest(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}
