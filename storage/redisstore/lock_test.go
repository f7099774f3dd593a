package redisstore

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/storage"
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
					s = twin(t, base)
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
						runtime.Gosched()
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
	b := twin(t, a)
	ctx := context.Background()
	unlock, err := a.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	lk := a.keys("alice").lease
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("the lease is still in Redis after unlock")
	}
	tctx, cancel := context.WithTimeout(ctx, bound)
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
	b := twin(t, a)
	unlock, err := a.Lock(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := b.Lock(ctx, "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held lease: got %v, want DeadlineExceeded", err)
	} else {
		noSecret(t, err)
	}

	// Within one store, the second goroutine waits on the in-process lock.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := a.Lock(ctx, "alice"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a cancelled context: got %v, want Canceled", err)
	}
}

// TestLeaseRenewed: a lock held for several renewals keeps its lease;
// unlock removes it and ends the held context.
func TestLeaseRenewed(t *testing.T) {
	c := needRedis(t)
	// Real time in a real Redis: renewed every 300 ms, the lease outlives a
	// 600 ms stall of this process.
	const ttl = 900 * time.Millisecond
	s := newStore(t, c, &Options{LeaseTTL: ttl})
	renewed := make(chan error, 100)
	s.onRenew = func(err error) { renewed <- err }
	ctx := context.Background()
	held, unlock, err := s.LockLease(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	owner := s.holding("alice").owner
	for i := range 4 {
		if err := within(t, renewed, "a renewal"); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
	}
	lk := s.keys("alice").lease
	got, err := c.Get(ctx, lk).Result()
	if err != nil || got != owner {
		t.Fatalf("after 4 renewals the lease holds %q, %v; want the owner", got, err)
	}
	if pttl, _ := c.PTTL(ctx, lk).Result(); pttl <= 0 || pttl > ttl {
		t.Fatalf("lease PTTL %v, want in (0, %v]", pttl, ttl)
	}
	if held.Err() != nil {
		t.Fatalf("held ended while the lease was renewed: %v", context.Cause(held))
	}
	unlock()
	if n, _ := c.Exists(ctx, lk).Result(); n != 0 {
		t.Fatal("the lease survived unlock")
	}
	if cause := context.Cause(held); !errors.Is(cause, errReleased) || errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("held after unlock: cause %v, want the release", cause)
	}
}

// TestFencing: a holder whose lease expired while it stalled, and was taken
// by another who saved, cannot overwrite the other's record, neither under
// its lost lease nor by saving again after unlock; generations replace the
// fingerprint of refused tokens the store once kept for that. A write
// derived from the newest record (a new login) is saved.
func TestFencing(t *testing.T) {
	c := needRedis(t)
	const ttl = 100 * time.Millisecond
	a := newStore(t, c, &Options{LeaseTTL: ttl})
	b := twin(t, a)
	ctx := context.Background()
	if err := a.Save(ctx, "alice", record(1, "v1")); err != nil {
		t.Fatal(err)
	}

	unlockA, err := a.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockA()
	if err := a.Save(ctx, "alice", record(2, "v2")); err != nil {
		t.Fatalf("fenced save while holding the lease: %v", err)
	}
	a.pause.Store(true) // a stalls: no more renewals

	lctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	unlockB, err := b.Lock(lctx, "alice")
	if err != nil {
		t.Fatalf("b could not take the expired lease: %v", err)
	}
	if err := b.Save(ctx, "alice", record(3, "b")); err != nil {
		t.Fatal(err)
	}

	err = a.Save(ctx, "alice", record(3, "a"))
	if !errors.Is(err, ErrLeaseLost) || !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a's save after losing its lease: got %v, want ErrLeaseLost and ErrConflict", err)
	}
	noSecret(t, err)
	if err := a.Delete(ctx, "alice"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's delete after losing its lease: got %v, want ErrLeaseLost", err)
	}
	storedIs(t, b, "alice", 3, "b")
	unlockB()

	// a gives up its lock and retries the save, as a source does with a
	// token it could not save: the generation refuses it.
	unlockA()
	err = a.Save(ctx, "alice", record(3, "a"))
	if !errors.Is(err, storage.ErrConflict) || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a's retried save without the lease: got %v, want ErrConflict alone", err)
	}
	storedIs(t, b, "alice", 3, "b")

	// A write derived from the newest record is saved.
	if err := a.Save(ctx, "alice", record(4, "login")); err != nil {
		t.Fatal(err)
	}
	storedIs(t, b, "alice", 4, "login")
}

// TestFencedSaveNeedsTheLease: while a store holds the lock, its saves go
// through the lease check, so a lease deleted behind its back (an operator,
// a failover to a replica without it) turns them into ErrLeaseLost, not a
// conflict, when nobody wrote since.
func TestFencedSaveNeedsTheLease(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	unlock, err := s.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	c.Del(ctx, s.keys("alice").lease)
	err = s.Save(ctx, "alice", record(1, "x"))
	if !errors.Is(err, ErrLeaseLost) || errors.Is(err, storage.ErrConflict) {
		t.Fatalf("save without the lease in Redis: got %v, want ErrLeaseLost alone", err)
	}
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the fenced save wrote anyway: %v", err)
	}
	// Another entry is not fenced by alice's lock.
	if err := s.Save(ctx, "bob", record(1, "bob")); err != nil {
		t.Fatal(err)
	}
}

// TestHeldEndsWhenLeaseGone: when another process takes the lease (here
// after it was deleted, as an expiry or a failover would), the holder's
// next renewal ends held, and a refresh-like caller that sends its request
// with held sends nothing from then on.
func TestHeldEndsWhenLeaseGone(t *testing.T) {
	c := needRedis(t)
	sink := new(logSink)
	a := newStore(t, c, &Options{LeaseTTL: 600 * time.Millisecond, Logger: slog.New(sink)})
	b := twin(t, a)
	var sent atomic.Int64
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent.Add(1) }))
	defer provider.Close()
	refresh := func(held context.Context) error {
		req, err := http.NewRequestWithContext(held, http.MethodPost, provider.URL, nil)
		if err != nil {
			return err
		}
		resp, err := provider.Client().Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}

	ctx := context.Background()
	held, unlock, err := a.LockLease(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := refresh(held); err != nil || sent.Load() != 1 {
		t.Fatalf("refresh under a held lease: %v, %d sent", err, sent.Load())
	}

	c.Del(ctx, a.keys("alice").lease)
	lctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	unlockB, err := b.Lock(lctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlockB()

	within(t, held.Done(), "held ending after the lease was taken")
	if err := refresh(held); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("refresh after the lease was lost: got %v, want the held context's cause, ErrLeaseLost", err)
	}
	if n := sent.Load(); n != 1 {
		t.Fatalf("%d requests sent, want 1: none after the lease was lost", n)
	}
	cause := context.Cause(held)
	if !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), "no longer this process's") {
		t.Fatalf("held's cause: %v, want ErrLeaseLost saying the lease is gone", cause)
	}
	if sink.count("lease lost") != 1 {
		t.Fatalf("log: %s; want one lease lost", sink.text())
	}
	if err := a.Save(ctx, "alice", record(1, "a")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("fenced save after the loss: got %v, want ErrLeaseLost", err)
	}
}

// TestHeldEndsWhenRenewalsFail: when Redis stops answering, every failed
// renewal is logged, and held ends once the lease's TTL has passed since
// the last renewal that succeeded, when another process could take it.
func TestHeldEndsWhenRenewalsFail(t *testing.T) {
	if shared == nil {
		t.Skip(noRedis)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := startRedis(port, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.stop()
	sink := new(logSink)
	s := newStore(t, newClient(t, rs.addr), &Options{LeaseTTL: 900 * time.Millisecond, OpTimeout: 200 * time.Millisecond, Logger: slog.New(sink)})
	held, unlock, err := s.LockLease(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	rs.kill()
	within(t, held.Done(), "held ending after Redis went away")
	cause := context.Cause(held)
	if !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), "renewals failed") {
		t.Fatalf("held's cause: %v, want ErrLeaseLost saying renewals failed", cause)
	}
	if sink.count("lease renewal failed") < 1 || sink.count("lease lost") != 1 {
		t.Fatalf("log: %s; want failed renewals, then one lease lost", sink.text())
	}
	if strings.Contains(sink.text(), "tkrt_") {
		t.Fatal("the log holds a secret")
	}
}

// TestRenewLoop checks, on synctest's fake clock, when the renewal loop
// ends held: never while renewals succeed; at once when Redis says the
// lease is gone; and exactly LeaseTTL after the last successful renewal was
// sent when renewals fail fast, or hang.
func TestRenewLoop(t *testing.T) {
	const ttl, every = 300 * time.Millisecond, 100 * time.Millisecond
	errDown := errors.New("connection refused")
	for _, tc := range []struct {
		name  string
		renew func(ctx context.Context, n int) (bool, error) // n counts from 1
		want  time.Duration                                  // when held ends; 0: not within 10 TTLs
		cause string
	}{
		{"renewals succeed", func(context.Context, int) (bool, error) { return true, nil }, 0, ""},
		{"lease gone at the third", func(_ context.Context, n int) (bool, error) { return n < 3, nil }, 300 * time.Millisecond, "no longer"},
		{"failing after two", func(_ context.Context, n int) (bool, error) {
			if n <= 2 {
				return true, nil
			}
			return false, errDown
		}, 500 * time.Millisecond, "renewals failed"},
		{"hanging after one", func(ctx context.Context, n int) (bool, error) {
			if n <= 1 {
				return true, nil
			}
			<-ctx.Done()
			return false, ctx.Err()
		}, 400 * time.Millisecond, "renewals failed"},
		{"failing once in a while", func(_ context.Context, n int) (bool, error) {
			if n%3 == 0 {
				return false, errDown
			}
			return true, nil
		}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
			defer c.Close()
			sink := new(logSink)
			s := newStore(t, c, &Options{LeaseTTL: ttl, RenewEvery: every, Logger: slog.New(sink)})
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				l := &lease{name: "alice", since: start, stop: make(chan struct{}), done: make(chan struct{})}
				l.held, l.cancel = context.WithCancelCause(context.Background())
				var n int
				go s.renew(l, func(ctx context.Context, _ *lease) (bool, error) {
					n++
					return tc.renew(ctx, n)
				})
				timeout := time.NewTimer(10 * ttl)
				select {
				case <-l.held.Done():
					if tc.want == 0 {
						t.Fatalf("held ended after %v: %v", time.Since(start), context.Cause(l.held))
					}
					if got := time.Since(start); got != tc.want {
						t.Fatalf("held ended after %v, want %v", got, tc.want)
					}
					cause := context.Cause(l.held)
					if !errors.Is(cause, ErrLeaseLost) || !strings.Contains(cause.Error(), tc.cause) {
						t.Fatalf("cause %v, want ErrLeaseLost saying %q", cause, tc.cause)
					}
					if sink.count("lease lost") != 1 {
						t.Fatalf("log: %s; want one lease lost", sink.text())
					}
				case <-timeout.C:
					if tc.want != 0 {
						t.Fatalf("held still not ended after %v, want %v", time.Since(start), tc.want)
					}
					close(l.stop)
				}
				<-l.done
				if strings.Contains(tc.name, "fail") && sink.count("lease renewal failed") == 0 {
					t.Fatalf("log: %s; no failed renewal logged", sink.text())
				}
			})
		})
	}
}

// gate is a go-redis hook that holds every SET until it is opened, then
// sends it whatever became of its caller's context, and reports its result.
type gate struct {
	arrived chan struct{} // a SET is held
	open    chan struct{}
	set     chan bool
}

func (g gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "set" {
			return next(ctx, cmd)
		}
		g.arrived <- struct{}{}
		<-g.open
		err := next(context.WithoutCancel(ctx), cmd)
		if b, ok := cmd.(*redis.BoolCmd); ok {
			g.set <- b.Val()
		}
		return err
	}
}

// TestAbandonedLockAttempt: a Lock whose context ends while its SET NX is
// on its way returns at once; when the SET lands all the same, the lease
// it set is deleted, so the others need not wait out its TTL (an hour
// here).
func TestAbandonedLockAttempt(t *testing.T) {
	needRedis(t)
	g := gate{arrived: make(chan struct{}, 1), open: make(chan struct{}), set: make(chan bool, 1)}
	gc := newClient(t, shared.addr)
	gc.AddHook(g)
	a := newStore(t, gc, &Options{LeaseTTL: time.Hour})
	released := make(chan struct{}, 1)
	a.onRelease = func() { released <- struct{}{} }
	b := twin(t, a)

	ctx, cancel := context.WithCancel(context.Background())
	locked := make(chan error, 1)
	go func() {
		_, err := a.Lock(ctx, "alice")
		locked <- err
	}()
	within(t, g.arrived, "the SET NX reaching the client")
	cancel()
	if err := within(t, locked, "the abandoned Lock returning"); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned Lock: got %v, want Canceled", err)
	}
	close(g.open)
	if !within(t, g.set, "the held SET") {
		t.Fatal("the SET NX did not take the lease; the test proves nothing")
	}
	within(t, released, "the abandoned lease being deleted")
	lctx, lcancel := context.WithTimeout(context.Background(), bound)
	defer lcancel()
	unlock, err := b.Lock(lctx, "alice")
	if err != nil {
		t.Fatalf("another store could not lock after the abandoned attempt: %v", err)
	}
	unlock()
}
