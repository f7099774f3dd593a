package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// lease is a lock this process holds on one entry.
type lease struct {
	name  string
	key   string        // the lease key
	owner string        // random; the lease key's value while this process holds it
	stop  chan struct{} // closed by unlock
	done  chan struct{} // closed when the renewer has returned
}

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

// Lock implements storage.Locker with a lease in Redis. It first takes an
// in-process lock on name, then sets the lease key to a random owner token
// with SET NX PX LeaseTTL, trying again every LockPoll until ctx is done,
// when it returns an error wrapping ctx's error. If Redis cannot be reached
// it returns an error matching storage.ErrUnavailable.
//
// While the lock is held, the lease is extended every RenewEvery, and Save
// and Delete of name are fenced: they succeed only while Redis still holds
// this lease (see [ErrLeaseLost]). unlock stops the renewal and deletes the
// lease if it is still this process's; it is safe to call more than once.
// A lease that cannot be deleted, or that an attempt whose answer was lost
// set, expires after LeaseTTL.
func (s *Store) Lock(ctx context.Context, name string) (unlock func() error, err error) {
	sem := s.sem(name)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("redisstore: lock %q: %w", name, ctx.Err())
	}
	l, err := s.acquire(ctx, name)
	if err != nil {
		<-sem
		return nil, err
	}
	s.mu.Lock()
	if s.held == nil {
		s.held = make(map[string]*lease)
	}
	s.held[name] = l
	s.mu.Unlock()
	go s.renew(l)

	var once sync.Once
	var uerr error
	return func() error {
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
	_, lk := s.keys(name)
	l := &lease{name: name, key: lk, owner: hex.EncodeToString(b[:]), stop: make(chan struct{}), done: make(chan struct{})}
	var t *time.Timer
	for {
		var ok bool
		err := s.do(ctx, func(ctx context.Context) (err error) {
			ok, err = s.c.SetNX(ctx, lk, l.owner, s.opt.LeaseTTL).Result()
			return err
		})
		if err != nil {
			return nil, classify(ctx, "lock", name, err)
		}
		if ok {
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

// renew extends l every RenewEvery until unlock, or until Redis says the
// lease is no longer l's. A renewal that fails to reach Redis is tried again
// at the next tick: the lease lasts LeaseTTL from the last success.
func (s *Store) renew(l *lease) {
	defer close(l.done)
	t := time.NewTicker(s.opt.RenewEvery)
	defer t.Stop()
	ttl := s.opt.LeaseTTL.Milliseconds()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if s.pause.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opt.RenewEvery)
		var n int
		err := s.do(ctx, func(ctx context.Context) (err error) {
			n, err = renewLease.Run(ctx, s.c, []string{l.key}, l.owner, ttl).Int()
			return err
		})
		cancel()
		if err == nil && n == 0 {
			return // lost: fenced writes will fail
		}
		if err == nil {
			s.renews.Add(1)
		}
	}
}

// release stops l's renewal, forgets it, and deletes the lease if Redis
// still holds it for l.
func (s *Store) release(l *lease) error {
	close(l.stop)
	<-l.done
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
