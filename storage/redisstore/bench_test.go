package redisstore

import (
	"context"
	"testing"
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
