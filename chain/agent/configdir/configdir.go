package configdir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kfm-project/kfm/chain"
	"github.com/kfm-project/kfm/chain/agent"
)

// debounce lets a burst of file events (an editor's write, rename and
// chmod; kfm lock writing two files) settle into one reload.
const debounce = 150 * time.Millisecond

// Source watches a configuration directory.
type Source struct {
	dir     string
	log     *slog.Logger
	metrics *agent.Metrics
}

// New returns the source for dir; log and metrics may be nil.
func New(dir string, log *slog.Logger, metrics *agent.Metrics) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{dir: dir, log: log, metrics: metrics}
}

// Name is "config:DIR", the owner of the chains it asks for.
func (s *Source) Name() string { return "config:" + s.dir }

// Kind is "config-dir" (agent.Kinder): the source label of kfm_reconcile_*.
func (s *Source) Kind() string { return "config-dir" }

// Load reads the directory's kfm.yaml and kfm.lock and returns the lock,
// checked against the manifest as `kfm apply --locked` checks it.
func (s *Source) Load() (*chain.Lock, error) {
	manPath, lockPath := filepath.Join(s.dir, "kfm.yaml"), filepath.Join(s.dir, "kfm.lock")
	man, err := chain.LoadManifest(manPath)
	if err != nil {
		return nil, err
	}
	lk, err := chain.LoadLock(lockPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no lock: %w (run kfm lock next to kfm.yaml)", lockPath, err)
	}
	if err != nil {
		return nil, err
	}
	if err := lk.Satisfies(man); err != nil {
		return nil, fmt.Errorf("%s: %w", lockPath, err)
	}
	return lk, nil
}

// Run delivers the directory's lock at start and after every change of
// it. A directory that cannot be read as a valid lock is logged and
// counted, and nothing is delivered: the agent keeps what it runs.
func (s *Source) Run(ctx context.Context, update func(agent.Desired)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.dir, err)
	}
	defer w.Close()
	if err := w.Add(s.dir); err != nil {
		return fmt.Errorf("watch %s: %w", s.dir, err)
	}
	var last []byte
	var generation int64
	reload := func() {
		lk, err := s.Load()
		if err != nil {
			s.log.Error("config directory refused; the running chains stay", "source", s.Name(), "error", err)
			s.metrics.Refused("invalid")
			return
		}
		text, err := lk.Marshal()
		if err != nil {
			s.log.Error("config directory refused", "source", s.Name(), "error", err)
			return
		}
		if bytes.Equal(text, last) {
			return
		}
		last = text
		generation++
		s.log.Info("desired state", "source", s.Name(), "generation", generation, "chains", len(lk.Chains))
		update(agent.FromLock(s.Name(), generation, lk))
	}
	if _, err := os.Stat(s.dir); err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	reload()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch " + s.dir + ": the watcher closed")
			}
			s.log.Warn("watch config directory", "error", err)
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch " + s.dir + ": the watcher closed")
			}
			base := filepath.Base(ev.Name)
			if base == "kfm.yaml" || base == "kfm.lock" || base == "..data" {
				settle = time.After(debounce)
			}
		case <-settle:
			settle = nil
			reload()
		}
	}
}
