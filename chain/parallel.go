package chain

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// forEach calls f(i) for every i in [0, n) on up to GOMAXPROCS goroutines
// and returns when all calls have returned, or stops handing out indices
// once ctx is done. f must not depend on the calling thread's network
// namespace (the goroutines may run on any thread: use prepareAll's way
// for work that does) and must be safe to run concurrently with itself.
func forEach(ctx context.Context, n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			if ctx.Err() != nil {
				return
			}
			f(i)
		}
		return
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
