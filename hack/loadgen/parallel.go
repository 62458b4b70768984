package main

import (
	"context"
	"sync"
	"sync/atomic"
)

// forEach calls f for 0 … n-1 with concurrency calls in flight, and returns
// the first error; after one, no new call starts.
func forEach(ctx context.Context, n, concurrency int, f func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
