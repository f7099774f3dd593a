package redisstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkRedisLoad reads and decrypts one entry from the local
// redis-server.
func BenchmarkRedisLoad(b *testing.B) {
	c := needRedis(b)
	s := newStore(b, c, nil)
	ctx := context.Background()
	if err := s.Save(ctx, "alice", record(1, "bench")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisSave encrypts and conditionally writes one entry's next
// generation: "plain" without the lock, as after a login, and "fenced"
// under the lease, as a refresh saves.
func BenchmarkRedisSave(b *testing.B) {
	c := needRedis(b)
	ctx := context.Background()
	b.Run("plain", func(b *testing.B) {
		s := newStore(b, c, nil)
		b.ReportAllocs()
		var gen uint64
		for b.Loop() {
			gen++
			if err := s.Save(ctx, "alice", record(gen, "bench")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fenced", func(b *testing.B) {
		s := newStore(b, c, nil)
		unlock, err := s.Lock(ctx, "alice")
		if err != nil {
			b.Fatal(err)
		}
		defer unlock()
		b.ReportAllocs()
		var gen uint64
		for b.Loop() {
			gen++
			if err := s.Save(ctx, "alice", record(gen, "bench")); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRedisLock takes and releases an uncontended lease.
func BenchmarkRedisLock(b *testing.B) {
	c := needRedis(b)
	s := newStore(b, c, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		unlock, err := s.Lock(ctx, "alice")
		if err != nil {
			b.Fatal(err)
		}
		if err := unlock(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFanOut measures how long after a holder saves a new generation
// and unlocks every one of N waiters, each with a Store and client of its
// own as separate processes have, has loaded it:
//
//   - "lock": as sources wait today, each takes the lock in turn (polling
//     SET NX every LockPoll), loads, and unlocks;
//   - "wait": each waits with WaitGeneration, then loads, without the lock.
//
// ms/all is the time until the last waiter had the new record, ms/first
// until the first had it. Run with -benchtime=10x or so: one iteration of
// "lock" with N=32 takes most of a second.
func BenchmarkFanOut(b *testing.B) {
	c := needRedis(b)
	for _, mode := range []string{"lock", "wait"} {
		for _, n := range []int{1, 2, 8, 32} {
			b.Run(fmt.Sprintf("%s/N=%d", mode, n), func(b *testing.B) {
				holder := newStore(b, c, nil)
				waiters := make([]*Store, n)
				for i := range waiters {
					waiters[i] = twin(b, holder)
				}
				ctx := context.Background()
				var all, first time.Duration
				var gen uint64
				for i := 0; i < b.N; i++ {
					gen++
					if err := holder.Save(ctx, "alice", record(gen, "old")); err != nil {
						b.Fatal(err)
					}
					unlock, err := holder.Lock(ctx, "alice")
					if err != nil {
						b.Fatal(err)
					}
					seen := make([]time.Time, n)
					errs := make(chan error, n)
					var wg sync.WaitGroup
					for j, w := range waiters {
						wg.Go(func() {
							err := fanOutWaiter(ctx, mode, w, gen)
							seen[j] = time.Now()
							errs <- err
						})
					}
					if mode == "wait" {
						waitSubscribers(b, holder, n)
					} else {
						time.Sleep(2 * holder.opt.LockPoll) // every waiter has tried once
					}
					start := time.Now()
					if err := holder.Save(ctx, "alice", record(gen+1, "new")); err != nil {
						b.Fatal(err)
					}
					gen++
					unlock()
					wg.Wait()
					close(errs)
					for err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
					all += slices.MaxFunc(seen, time.Time.Compare).Sub(start)
					first += slices.MinFunc(seen, time.Time.Compare).Sub(start)
				}
				b.ReportMetric(float64(all.Microseconds())/1000/float64(b.N), "ms/all")
				b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "ms/first")
			})
		}
	}
}

// fanOutWaiter waits, as mode says, until w has loaded a generation past
// gen.
func fanOutWaiter(ctx context.Context, mode string, w *Store, gen uint64) error {
	for {
		if mode == "wait" {
			if _, err := w.WaitGeneration(ctx, "alice", gen); err != nil {
				return err
			}
		} else {
			unlock, err := w.Lock(ctx, "alice")
			if err != nil {
				return err
			}
			defer unlock()
		}
		r, err := w.Load(ctx, "alice")
		if err != nil {
			return err
		}
		if r.Generation > gen {
			return nil
		}
	}
}

// waitSubscribers waits until n clients listen on the entry's channel.
func waitSubscribers(b *testing.B, s *Store, n int) {
	ch := s.keys("alice").channel
	for {
		m, err := s.c.PubSubNumSub(context.Background(), ch).Result()
		if err != nil {
			b.Fatal(err)
		}
		if int(m[ch]) >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
