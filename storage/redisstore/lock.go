package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// lease is a lock this process holds on one entry.
type lease struct {
	name  string
	key   string    // the lease key
	owner string    // random; the lease key's value while this process holds it
	since time.Time // when the request that took the lease was sent

	held   context.Context         // done once the lease is lost or released
	cancel context.CancelCauseFunc // ends held
	stop   chan struct{}           // closed by unlock
	done   chan struct{}           // closed when the renewer has returned
}

// errReleased is the cause of a held context whose lock was released.
var errReleased = errors.New("redisstore: lock released")

// renewLease extends the lease only while it holds the caller's owner token.
// KEYS: lease. ARGV: owner, TTL in milliseconds.
var renewLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// releaseLease deletes the lease only while it holds the caller's owner
// token. KEYS: lease. ARGV: owner.
var releaseLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)

// Lock implements storage.Locker: it is [Store.LockLease] without the held
// context.
func (s *Store) Lock(ctx context.Context, name string) (unlock func() error, err error) {
	_, unlock, err = s.LockLease(ctx, name)
	return unlock, err
}

// LockLease implements storage.LeaseLocker with a lease in Redis. It first
// takes an in-process lock on name, then sets the lease key to a random
// owner token with SET NX PX LeaseTTL, trying again every LockPoll until ctx
// is done, when it returns an error wrapping ctx's error. If Redis cannot be
// reached it returns an error matching storage.ErrUnavailable. An attempt
// cut short by ctx or OpTimeout, which may have set the lease all the same,
// is undone in the background.
//
// While the lock is held, the lease is extended every RenewEvery, and Save
// and Delete of name are fenced: they succeed only while Redis still holds
// this lease (see [ErrLeaseLost]).
//
// held carries ctx's values, not its cancellation. It is done, with a cause
// matching ErrLeaseLost (see context.Cause), as soon as a renewal finds the
// lease gone from Redis, or when renewals have failed until LeaseTTL has
// passed since the last one that succeeded, measured from when it was sent:
// from then on another process may hold the lease. A holder checks held
// before it starts anything the lock serialises, such as sending a refresh
// request. Failed renewals and the loss are logged to Options.Logger. held
// is also done, with another cause, once unlock is called.
//
// unlock stops the renewal and deletes the lease if it is still this
// process's; it is safe to call more than once. A lease that cannot be
// deleted expires after LeaseTTL.
func (s *Store) LockLease(ctx context.Context, name string) (held context.Context, unlock func() error, err error) {
	sem := s.sem(name)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("redisstore: lock %q: %w", name, ctx.Err())
	}
	l, err := s.acquire(ctx, name)
	if err != nil {
		<-sem
		return nil, nil, err
	}
	l.held, l.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	s.mu.Lock()
	if s.held == nil {
		s.held = make(map[string]*lease)
	}
	s.held[name] = l
	s.mu.Unlock()
	go s.renew(l, s.renewOnce)

	var once sync.Once
	var uerr error
	return l.held, func() error {
		once.Do(func() {
			uerr = s.release(l)
			<-sem
		})
		return uerr
	}, nil
}

// acquire polls SET NX until it takes name's lease or ctx is done.
func (s *Store) acquire(ctx context.Context, name string) (*lease, error) {
	var b [16]byte
	rand.Read(b[:])
	l := &lease{name: name, key: s.keys(name).lease, owner: hex.EncodeToString(b[:]),
		stop: make(chan struct{}), done: make(chan struct{})}
	var t *time.Timer
	for {
		sent := time.Now()
		ok, err := s.setLease(ctx, l)
		if err != nil {
			return nil, classify(ctx, "lock", name, err)
		}
		if ok {
			l.since = sent
			return l, nil
		}
		// A little jitter keeps waiters from polling in step.
		wait := s.opt.LockPoll + mrand.N(s.opt.LockPoll/4+1)
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		} else {
			t.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("redisstore: lock %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// setLease tries once to take l's lease with SET NX PX, bounded by
// OpTimeout and ctx. A call that fails, or that is abandoned, may have set
// the lease all the same (the answer was lost, or the write is still on its
// way): once it has ended, the lease is deleted in the background if it is
// l's, so that a lease nobody renews does not block the others for a whole
// TTL. A write still queued in Redis after that expires after LeaseTTL.
func (s *Store) setLease(ctx context.Context, l *lease) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.OpTimeout)
	defer cancel()
	var ok bool
	done := make(chan error, 1)
	go func() {
		var err error
		ok, err = s.c.SetNX(ctx, l.key, l.owner, s.opt.LeaseTTL).Result()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			go s.releaseOwner(l)
		}
		return ok, err
	case <-ctx.Done():
		go func() {
			<-done
			s.releaseOwner(l)
		}()
		return false, ctx.Err()
	}
}

// renewOnce runs one renewal of l: true if Redis still held l and extended
// it, false if the lease is no longer l's.
func (s *Store) renewOnce(ctx context.Context, l *lease) (bool, error) {
	var n int
	err := s.do(ctx, func(ctx context.Context) (err error) {
		n, err = renewLease.Run(ctx, s.c, []string{l.key}, l.owner, s.opt.LeaseTTL.Milliseconds()).Int()
		return err
	})
	if err != nil {
		return false, err // n may still be written by an abandoned call
	}
	return n == 1, nil
}

// renewRetries is how many times per RenewEvery a failed renewal is tried
// again, so that a short outage costs no lease.
const renewRetries = 4

// renew extends l every RenewEvery until unlock, and ends l.held once the
// lease is known lost: a renewal found it gone from Redis, or renewals
// failed until LeaseTTL passed since the last success was sent. A failed
// renewal is logged and tried again sooner, RenewEvery/renewRetries later.
// Elapsed time is measured on both the monotonic and the wall clock, so a
// machine that slept (whose monotonic clock stood still while Redis's TTL
// ran) finds its lease lost at the first check after waking.
func (s *Store) renew(l *lease, once func(ctx context.Context, l *lease) (bool, error)) {
	defer close(l.done)
	ttl, every := s.opt.LeaseTTL, s.opt.RenewEvery
	last := l.since
	expired := func(now time.Time) bool {
		return now.Sub(last) >= ttl || now.Round(0).Sub(last.Round(0)) >= ttl
	}
	t := time.NewTimer(every)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if s.pause.Load() {
			t.Reset(every)
			continue
		}
		now := time.Now()
		if expired(now) {
			s.lose(l, fmt.Errorf("redisstore: lease on %q: renewals failed for %v, the lease's TTL: %w", l.name, ttl, ErrLeaseLost))
			return
		}
		deadline := last.Add(ttl)
		ctx, cancel := context.WithTimeout(context.Background(), min(every, deadline.Sub(now)))
		ok, err := once(ctx, l)
		cancel()
		if s.onRenew != nil {
			s.onRenew(err)
		}
		switch {
		case err == nil && ok:
			last, failures = now, 0
			t.Reset(every)
		case err == nil:
			s.lose(l, fmt.Errorf("redisstore: lease on %q: no longer this process's in Redis: %w", l.name, ErrLeaseLost))
			return
		default:
			failures++
			left := time.Until(deadline)
			s.log.Warn("lease renewal failed", slog.String("entry", l.name), slog.Int("failures", failures),
				slog.Duration("left", left), slog.Any("error", err))
			t.Reset(max(min(every/renewRetries, left), 0))
		}
	}
}

// lose ends l.held with cause, and logs it: another process may take the
// lease from now on.
func (s *Store) lose(l *lease, cause error) {
	s.log.Warn("lease lost", slog.String("entry", l.name), slog.Any("error", cause))
	l.cancel(cause)
}

// release stops l's renewal, forgets it, and deletes the lease if Redis
// still holds it for l.
func (s *Store) release(l *lease) error {
	close(l.stop)
	<-l.done
	l.cancel(errReleased)
	s.mu.Lock()
	if s.held[l.name] == l {
		delete(s.held, l.name)
	}
	s.mu.Unlock()
	ctx := context.Background()
	err := s.do(ctx, func(ctx context.Context) error {
		return releaseLease.Run(ctx, s.c, []string{l.key}, l.owner).Err()
	})
	if err != nil {
		return classify(ctx, "unlock", l.name, err)
	}
	return nil
}

// releaseOwner deletes l's lease if an attempt whose answer was lost set
// it. Errors are of no use: a lease left behind expires after LeaseTTL.
func (s *Store) releaseOwner(l *lease) {
	s.do(context.Background(), func(ctx context.Context) error {
		return releaseLease.Run(ctx, s.c, []string{l.key}, l.owner).Err()
	})
	if s.onRelease != nil {
		s.onRelease()
	}
}

// holding returns the lease this process holds on name, or nil.
func (s *Store) holding(name string) *lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[name]
}

// sem returns name's in-process semaphore.
func (s *Store) sem(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sems == nil {
		s.sems = make(map[string]chan struct{})
	}
	c, ok := s.sems[name]
	if !ok {
		c = make(chan struct{}, 1)
		s.sems[name] = c
	}
	return c
}
