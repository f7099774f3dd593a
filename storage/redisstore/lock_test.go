package redisstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLockExcludes: 16 goroutines, each with a Store of its own (so only
// Redis can exclude them) or all sharing one, take the lock in turns; never
// more than one holds it.
func TestLockExcludes(t *testing.T) {
	for _, shareStore := range []bool{false, true} {
		name := map[bool]string{false: "a store each", true: "one store"}[shareStore]
		t.Run(name, func(t *testing.T) {
			c := needRedis(t)
			base := newStore(t, c, &Options{LockPoll: 2 * time.Millisecond})
			var holders, maxHolders, total atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				s := base
				if !shareStore {
					s = &Store{c: newClient(t, shared.addr), key: base.key, opt: base.opt}
				}
				wg.Go(func() {
					for range 5 {
						unlock, err := s.Lock(context.Background(), "alice")
						if err != nil {
							t.Error(err)
							return
						}
						n := holders.Add(1)
						for {
							m := maxHolders.Load()
							if n <= m || maxHolders.CompareAndSwap(m, n) {
								break
							}
						}
						time.Sleep(time.Millisecond)
						total.Add(1)
						holders.Add(-1)
						if err := unlock(); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if got := maxHolders.Load(); got != 1 {
				t.Fatalf("at most %d goroutines held the lock at once, want 1", got)
			}
			if got := total.Load(); got != 80 {
				t.Fatalf("%d turns, want 80", got)
			}
		})
	}
}

// TestUnlockTwice: unlock releases the lease at once, and a second call is
// harmless, even after someone else took the lease.
func TestUnlockTwice(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, nil)
	b := &Store{c: c, key: a.key, opt: a.opt}
	ctx := context.Background()
	unlock, err := a.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	_, lk := a.keys("alice")
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("the lease is still in Redis after unlock")
	}
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	unlockB, err := b.Lock(tctx, "alice")
	if err != nil {
		t.Fatalf("another store could not lock after unlock: %v", err)
	}
	defer unlockB()
	if err := unlock(); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
	owner, err := c.Get(ctx, lk).Result()
	if err != nil || owner != b.holding("alice").owner {
		t.Fatalf("a second unlock released another owner's lease (%v)", err)
	}
	if a.holding("alice") != nil {
		t.Fatal("the store still thinks it holds the lease")
	}
}

// TestLockWaitsForContext: a lease held elsewhere makes Lock wait until its
// context ends and return that context's error.
func TestLockWaitsForContext(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, nil)
	b := &Store{c: c, key: a.key, opt: a.opt}
	unlock, err := a.Lock(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.Lock(ctx, "alice")
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took < 150*time.Millisecond || took > time.Second {
		t.Fatalf("Lock of a held lease: got %v after %v, want DeadlineExceeded after 150ms", err, took)
	}
	noSecret(t, err)

	// Within one store, the second goroutine waits on the in-process lock.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := a.Lock(ctx, "alice"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a cancelled context: got %v, want Canceled", err)
	}
}

// TestLeaseRenewed: a lock held for several TTLs keeps its lease; unlock
// removes it.
func TestLeaseRenewed(t *testing.T) {
	c := needRedis(t)
	const ttl = 150 * time.Millisecond
	s := newStore(t, c, &Options{LeaseTTL: ttl})
	ctx := context.Background()
	unlock, err := s.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	owner := s.holding("alice").owner
	time.Sleep(5 * ttl)
	_, lk := s.keys("alice")
	got, err := c.Get(ctx, lk).Result()
	if err != nil || got != owner {
		t.Fatalf("after 5 TTLs the lease holds %q, %v; want the owner", got, err)
	}
	if pttl, _ := c.PTTL(ctx, lk).Result(); pttl <= 0 || pttl > ttl {
		t.Fatalf("lease PTTL %v, want in (0, %v]", pttl, ttl)
	}
	if n := s.renews.Load(); n < 5 {
		t.Fatalf("%d renewals in 5 TTLs, want at least 5", n)
	}
	unlock()
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("the lease survived unlock")
	}
}

// TestFencing: a holder whose lease expired while it stalled, and was taken
// by another, cannot overwrite the other's token, not even by saving again
// after unlock; a different token (a new login) can still be saved.
func TestFencing(t *testing.T) {
	c := needRedis(t)
	const ttl = 100 * time.Millisecond
	a := newStore(t, c, &Options{LeaseTTL: ttl})
	b := &Store{c: newClient(t, shared.addr), key: a.key, opt: a.opt}
	ctx := context.Background()
	if err := a.Save(ctx, "alice", testToken("v0")); err != nil {
		t.Fatal(err)
	}

	unlockA, err := a.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockA()
	if err := a.Save(ctx, "alice", testToken("v1")); err != nil {
		t.Fatalf("fenced save while holding the lease: %v", err)
	}
	a.pause.Store(true) // a stalls: no more renewals

	lctx, cancel := context.WithTimeout(ctx, 10*ttl)
	defer cancel()
	unlockB, err := b.Lock(lctx, "alice")
	if err != nil {
		t.Fatalf("b could not take the expired lease: %v", err)
	}
	if err := b.Save(ctx, "alice", testToken("b")); err != nil {
		t.Fatal(err)
	}

	err = a.Save(ctx, "alice", testToken("a"))
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's save after losing its lease: got %v, want ErrLeaseLost", err)
	}
	noSecret(t, err)
	if err := a.Delete(ctx, "alice"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's delete after losing its lease: got %v, want ErrLeaseLost", err)
	}
	storedIs(t, b, "alice", "b")
	unlockB()

	// a gives up its lock and retries the save, as tokensource does with a
	// token it could not save.
	unlockA()
	if err := a.Save(ctx, "alice", testToken("a")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's retried save without the lease: got %v, want ErrLeaseLost", err)
	}
	storedIs(t, b, "alice", "b")

	// A new login is another token: it is saved.
	if err := a.Save(ctx, "alice", testToken("login")); err != nil {
		t.Fatal(err)
	}
	storedIs(t, b, "alice", "login")
	if err := a.Save(ctx, "alice", testToken("a")); err != nil {
		t.Fatalf("after a new token was saved, the refused one is refused still: %v", err)
	}
}

// TestFencedSaveNeedsTheLease: while a store holds the lock, its saves go
// through the lease check, so a lease deleted behind its back (an operator,
// a failover to a replica without it) turns them into ErrLeaseLost.
func TestFencedSaveNeedsTheLease(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	unlock, err := s.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, lk := s.keys("alice")
	c.Del(ctx, lk)
	if err := s.Save(ctx, "alice", testToken("x")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("save without the lease in Redis: got %v, want ErrLeaseLost", err)
	}
	if _, err := s.Load(ctx, "alice"); err == nil {
		t.Fatal("the fenced save wrote anyway")
	}
	// Another entry is not fenced by alice's lock.
	if err := s.Save(ctx, "bob", testToken("bob")); err != nil {
		t.Fatal(err)
	}
}

// storedIs checks that name holds the token testToken(id) made.
func storedIs(t *testing.T, s *Store, name, id string) {
	t.Helper()
	got, err := s.Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != testToken(id).AccessToken {
		t.Fatalf("Redis holds another token than %s's", id)
	}
}
