package tokensource

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// countingLocks is a Memory store that counts the locks taken on it.
type countingLocks struct {
	*storage.Memory
	locks atomic.Int64
}

func (c *countingLocks) Lock(ctx context.Context, key string) (func() error, error) {
	unlock, err := c.Memory.Lock(ctx, key)
	if err == nil {
		c.locks.Add(1)
	}
	return unlock, err
}

// lockedStale saves a login of p under "alice" whose access token has
// expired, and takes the entry's lock as another process refreshing it
// would. It returns the unlock.
func lockedStale(t *testing.T, p *rotator, store *storage.Memory) (unlock func() error) {
	t.Helper()
	stale := p.login()
	stale.Expiry = time.Now().Add(-time.Minute)
	if err := store.Save(context.Background(), "alice", storage.NewRecord(0, stale)); err != nil {
		t.Fatal(err)
	}
	unlock, err := store.Lock(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	return unlock
}

// TestWaitersAdoptWithoutTheLock: Sources waiting for the store's lock
// while another process holds it learn what that process saves at once,
// without taking the lock one by one after it: a fresh token is adopted, an
// ended session is served as ended. The other process here is the test,
// which holds the lock throughout.
func TestWaitersAdoptWithoutTheLock(t *testing.T) {
	const waiters = 8
	cases := []struct {
		name  string
		write func(t *testing.T, store storage.Store, fresh *oauth2.Token)
		check func(t *testing.T, tok *oauth2.Token, err error, fresh *oauth2.Token)
	}{
		{
			name: "refreshed",
			write: func(t *testing.T, store storage.Store, fresh *oauth2.Token) {
				if err := store.Save(context.Background(), "alice", storage.NewRecord(1, fresh)); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, tok *oauth2.Token, err error, fresh *oauth2.Token) {
				if err != nil || tok.AccessToken != fresh.AccessToken {
					t.Errorf("got %v, %v; want the token saved by the lock's holder", tok, err)
				}
			},
		},
		{
			name: "revoked",
			write: func(t *testing.T, store storage.Store, _ *oauth2.Token) {
				rec := &storage.Record{Generation: 2, State: storage.Ended, Reason: "revoked"}
				if err := store.Save(context.Background(), "alice", rec); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, tok *oauth2.Token, err error, _ *oauth2.Token) {
				if !errors.Is(err, ErrReauthRequired) {
					t.Errorf("got %v, %v; want an error matching ErrReauthRequired", tok, err)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &rotator{}
				store := &countingLocks{Memory: storage.NewMemory()}
				defer lockedStale(t, p, store.Memory)()

				type result struct {
					tok *oauth2.Token
					err error
				}
				results := make(chan result, waiters)
				for range waiters {
					src := newLedgerSource(t, p, store, "alice")
					go func() {
						tok, err := src.Token()
						results <- result{tok, err}
					}()
				}
				synctest.Wait()
				if len(results) != 0 {
					t.Fatalf("%d callers returned while the lock was held and nothing changed", len(results))
				}

				start := time.Now()
				c.write(t, store.Memory, p.login())
				synctest.Wait()
				if len(results) != waiters {
					t.Fatalf("%d of %d waiting callers returned after the entry moved on; the others still queue for the lock", len(results), waiters)
				}
				var saved *oauth2.Token
				if rec, err := store.Load(context.Background(), "alice"); err == nil {
					saved = rec.Token
				}
				for range waiters {
					r := <-results
					c.check(t, r.tok, r.err, saved)
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("callers returned %v after the write, want at once", d)
				}
				if n := store.locks.Load(); n != 0 {
					t.Errorf("the waiting Sources took the lock %d times, want 0", n)
				}
				if calls, _, _ := p.counts(); calls != 0 {
					t.Errorf("%d provider calls, want 0", calls)
				}
			})
		})
	}
}

// TestWaiterKeepsWaitingForAStaleWrite: a record saved while a Source waits
// that cannot be served (its token is stale too) does not end the wait: the
// Source takes the lock once it is free and refreshes.
func TestWaiterKeepsWaitingForAStaleWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		store := &countingLocks{Memory: storage.NewMemory()}
		unlock := lockedStale(t, p, store.Memory)
		src := newLedgerSource(t, p, store, "alice")
		done := make(chan error, 1)
		go func() {
			_, err := src.Token()
			done <- err
		}()
		synctest.Wait()
		r := stored(t, store, "alice")
		r.Generation++ // the holder saved again, still stale
		if err := store.Save(context.Background(), "alice", r); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if len(done) != 0 {
			t.Fatalf("the Source returned (%v) on a stale write, while the lock was still held", <-done)
		}
		unlock()
		if err := <-done; err != nil {
			t.Fatalf("Token after the lock was freed: %v", err)
		}
		if n := store.locks.Load(); n != 1 {
			t.Errorf("the Source took the lock %d times, want 1", n)
		}
		if calls, grants, reuse := p.counts(); calls != 1 || grants != 1 || reuse != 0 {
			t.Errorf("provider: %d calls, %d grants, %d reuse; want 1, 1, 0", calls, grants, reuse)
		}
	})
}

// TestWaiterDefersToAPut: a Put that replaces the session while a refresh
// waits for the lock wins over what another process saves meanwhile: the
// waiting caller gets the new login, not the old session's token or its
// end, and the store ends up with the login.
func TestWaiterDefersToAPut(t *testing.T) {
	for _, ended := range []bool{false, true} {
		t.Run(map[bool]string{false: "live write", true: "ended write"}[ended], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &rotator{}
				store := storage.NewMemory()
				unlock := lockedStale(t, p, store)
				src := newLedgerSource(t, p, store, "alice")
				got := make(chan *oauth2.Token, 1)
				go func() {
					tok, err := src.Token()
					if err != nil {
						t.Errorf("the waiting caller: %v", err)
					}
					got <- tok
				}()
				synctest.Wait()

				login := &oauth2.Token{AccessToken: "tkat_newlogin", RefreshToken: "tkrt_newlogin", TokenType: "Bearer",
					Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if err := src.Put(ctx, login); !errors.Is(err, ErrNotSaved) {
					t.Fatalf("Put while a refresh holds the turn: %v, want ErrNotSaved", err)
				}
				rec := storage.NewRecord(1, p.login()) // another process refreshed
				if ended {
					rec = &storage.Record{Generation: 2, State: storage.Ended, Reason: "revoked"}
				}
				if err := store.Save(context.Background(), "alice", rec); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				unlock()
				if tok := <-got; tok == nil || tok.AccessToken != login.AccessToken {
					t.Errorf("the waiting caller got %v, want the new login", tok)
				}
				synctest.Wait()
				if r := stored(t, store, "alice"); r.State != storage.Live || r.Token.AccessToken != login.AccessToken {
					t.Errorf("stored: %v, want the new login", r)
				}
			})
		})
	}
}

// TestWaiterConfirmsAPurgeUnderTheLock: an entry that disappears while a
// Source waits for the lock is looked at again under the lock, since a
// writer replacing an unreadable entry deletes it first; if it is still
// gone then, the session is over.
func TestWaiterConfirmsAPurgeUnderTheLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		store := storage.NewMemory()
		unlock := lockedStale(t, p, store)
		src := newLedgerSource(t, p, store, "alice")
		done := make(chan error, 1)
		go func() {
			_, err := src.Token()
			done <- err
		}()
		synctest.Wait()
		if err := store.Delete(context.Background(), "alice"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if len(done) != 0 {
			t.Fatalf("the Source returned (%v) on seeing the entry gone, while the lock was held", <-done)
		}
		unlock()
		if err := <-done; !errors.Is(err, ErrReauthRequired) {
			t.Errorf("after the lock was freed with the entry gone: %v, want an error matching ErrReauthRequired", err)
		}
		if calls, _, _ := p.counts(); calls != 0 {
			t.Errorf("%d provider calls, want 0", calls)
		}
	})
}
