package tokensource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

const ledgerKey = "alice"

// login is a token of a new login, from a grant the rotator does not know.
func login(name string) *oauth2.Token {
	return &oauth2.Token{AccessToken: "tkat_login_" + name, RefreshToken: "tkrt_login_" + name,
		TokenType: "Bearer", Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}
}

// seed stores p's first token under ledgerKey with its access token expired.
func seed(t *testing.T, p *rotator, st storage.Store) {
	t.Helper()
	if err := storage.SaveToken(context.Background(), st, ledgerKey, p.login()); err != nil {
		t.Fatal(err)
	}
	expireIn(t, st, ledgerKey, -time.Minute)
}

// TestSaveRetryNeverOverwritesNewerPut: a background save retry that is
// under way when a new login is Put must not land over it (issue 13, 1).
func TestSaveRetryNeverOverwritesNewerPut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p := &rotator{}
		st := newHookStore()
		seed(t, p, st)
		src := newLedgerSource(t, p, st, ledgerKey)

		var saves atomic.Int32
		release := make(chan struct{})
		st.setSave(func(*storage.Record) error {
			switch saves.Add(1) {
			case 1:
				return errDiskFull
			case 2:
				<-release // the retry: slow
			}
			return nil
		})
		if _, err := src.Token(); !errors.Is(err, ErrNotSaved) {
			t.Fatalf("first refresh: got %v, want ErrNotSaved", err)
		}
		time.Sleep(time.Minute) // the retry starts and blocks in the store
		synctest.Wait()
		if got := saves.Load(); got != 2 {
			t.Fatalf("saves: got %d, want 2 (the failed one and the retry under way)", got)
		}
		newLogin := login("second")
		put := make(chan error, 1)
		go func() { put <- src.Put(ctx, newLogin) }()
		synctest.Wait()
		close(release)
		if err := <-put; err != nil {
			t.Fatalf("Put: %v", err)
		}
		synctest.Wait() // the retry, released, would land now
		rec := stored(t, st, ledgerKey)
		if rec.Token.RefreshToken != newLogin.RefreshToken {
			t.Fatalf("stored refresh token: got %q, want the Put login's %q", rec.Token.RefreshToken, newLogin.RefreshToken)
		}
		tok, err := src.Token()
		if err != nil || tok.AccessToken != newLogin.AccessToken {
			t.Fatalf("served: got %v, %v; want the Put login", tok, err)
		}
		if rec.Generation != 4 {
			t.Errorf("generation: got %d, want 4 (seed 1, expiry 2, refresh 3, Put 4)", rec.Generation)
		}
	})
}

// noRevoke hides the Revoker of a provider, as with Entra ID, which has no
// revocation endpoint.
type noRevoke struct{ p *rotator }

func (n noRevoke) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	return n.p.Refresh(ctx, t)
}

// TestRevokeEndsTheSessionForEverySource: a Revoke by one Source is not
// undone by another that holds the refresh token in memory, even without a
// revocation endpoint; a new Put revives it everywhere (issue 13, 2).
func TestRevokeEndsTheSessionForEverySource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p := &rotator{}
		st := storage.NewMemory()
		if err := storage.SaveToken(ctx, st, ledgerKey, p.login()); err != nil {
			t.Fatal(err)
		}
		a := newLedgerSource(t, noRevoke{p}, st, ledgerKey)
		b := newLedgerSource(t, noRevoke{p}, st, ledgerKey)
		if _, err := a.Token(); err != nil {
			t.Fatal(err)
		}
		if err := b.Revoke(ctx); !errors.Is(err, ErrNoRevocationEndpoint) {
			t.Fatalf("Revoke: got %v, want ErrNoRevocationEndpoint", err)
		}
		if rec := stored(t, st, ledgerKey); rec.State != storage.Ended {
			t.Fatalf("stored after Revoke: %v, want an ended record", rec)
		}
		time.Sleep(2 * time.Hour) // a's token in memory expires
		for name, s := range map[string]*Source{"a": a, "b": b, "new": newLedgerSource(t, noRevoke{p}, st, ledgerKey)} {
			if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
				t.Errorf("%s after Revoke: got %v, want ErrReauthRequired", name, err)
			}
		}
		if calls, _, _ := p.counts(); calls != 0 {
			t.Errorf("provider calls after Revoke: got %d, want 0", calls)
		}
		newLogin := login("again")
		if err := a.Put(ctx, newLogin); err != nil {
			t.Fatal(err)
		}
		if tok, err := b.Token(); err != nil || tok.AccessToken != newLogin.AccessToken {
			t.Fatalf("b after Put: got %v, %v; want the new login", tok, err)
		}
	})
}

// TestRevokeAgainstRefreshWaitingOnTheLock: a refresh waiting for the store
// lock while another Source revokes never brings the session back,
// whichever takes the lock first (issue 13, 2).
func TestRevokeAgainstRefreshWaitingOnTheLock(t *testing.T) {
	for _, revokeFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("revokeFirst=%v", revokeFirst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				p := &rotator{}
				st := storage.NewMemory()
				seed(t, p, st)
				a := newLedgerSource(t, p, st, ledgerKey)
				b := newLedgerSource(t, noRevoke{p}, st, ledgerKey)
				unlock, err := st.Lock(ctx, ledgerKey)
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				start := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }(); synctest.Wait() }
				refresh := func() { a.Token() }
				revoke := func() { b.Revoke(ctx) }
				if revokeFirst {
					start(revoke)
					start(refresh)
				} else {
					start(refresh)
					start(revoke)
				}
				unlock()
				wg.Wait()
				time.Sleep(2 * time.Hour)
				if _, err := a.Token(); !errors.Is(err, ErrReauthRequired) {
					t.Errorf("a after Revoke: got %v, want ErrReauthRequired", err)
				}
				if rec := stored(t, st, ledgerKey); rec.State != storage.Ended {
					t.Errorf("stored: %v, want ended", rec)
				}
				if _, _, reuse := p.counts(); reuse != 0 {
					t.Errorf("reuse detections: got %d, want 0", reuse)
				}
			})
		})
	}
}

// TestPutWinsOverRefreshThatBeganBefore: a refresh at the provider when a
// new login is Put must not replace the login, in memory or in the store
// (issue 13, 3). The store has no lock, so that only the Source orders the
// two.
func TestPutWinsOverRefreshThatBeganBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		release := make(chan struct{})
		p := &rotator{before: func(int, context.Context) error { <-release; return nil }}
		st := noLock{storage.NewMemory()}
		seed(t, p, st)
		src := newLedgerSource(t, p, st, ledgerKey)
		go src.Token()
		synctest.Wait() // the refresh is at the provider
		newLogin := login("put")
		put := make(chan error, 1)
		go func() { put <- src.Put(ctx, newLogin) }()
		synctest.Wait()
		close(release)
		if err := <-put; err != nil {
			t.Fatalf("Put: %v", err)
		}
		synctest.Wait() // the refresh, released, has finished
		if tok, err := src.Token(); err != nil || tok.AccessToken != newLogin.AccessToken {
			t.Fatalf("served: got %v, %v; want the login", tok, err)
		}
		if rec := stored(t, st, ledgerKey); rec.Token.RefreshToken != newLogin.RefreshToken {
			t.Fatalf("stored: %v with refresh token %q, want the login's", rec, rec.Token.RefreshToken)
		}
	})
}

// TestPutWhenTheLockIsHeldElsewhere: Put that cannot take the store's lock
// serves the login, reports ErrNotSaved, and saves it once it can (issue
// 13, 3).
func TestPutWhenTheLockIsHeldElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		st := storage.NewMemory()
		seed(t, p, st)
		src := newLedgerSource(t, p, st, ledgerKey)
		unlock, err := st.Lock(context.Background(), ledgerKey)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		newLogin := login("locked")
		if err := src.Put(ctx, newLogin); !errors.Is(err, ErrNotSaved) {
			t.Fatalf("Put with the lock held elsewhere: got %v, want ErrNotSaved", err)
		}
		if tok, err := src.Token(); err != nil || tok.AccessToken != newLogin.AccessToken {
			t.Fatalf("served after Put: got %v, %v; want the login", tok, err)
		}
		unlock()
		time.Sleep(time.Minute) // the save retry runs
		if rec := stored(t, st, ledgerKey); rec.Token == nil || rec.Token.RefreshToken != newLogin.RefreshToken {
			t.Fatalf("stored after the lock was released: %v, want the login", rec)
		}
		if calls, _, _ := p.counts(); calls != 0 {
			t.Errorf("provider calls: got %d, want 0", calls)
		}
	})
}

// TestSaveFailureKeepsOthersOffTheSpentToken: while one Source cannot save a
// rotated token, another sharing the store waits and fails transiently
// rather than redeem the spent refresh token (issue 13, 4).
func TestSaveFailureKeepsOthersOffTheSpentToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		st := newHookStore()
		seed(t, p, st)
		a := newLedgerSource(t, p, st, ledgerKey)
		b := newLedgerSource(t, p, st, ledgerKey, WithLockTimeout(5*time.Second))
		st.setSave(func(*storage.Record) error { return errDiskFull })
		if _, err := a.Token(); !errors.Is(err, ErrNotSaved) {
			t.Fatalf("a: got %v, want ErrNotSaved", err)
		}
		if _, err := b.Token(); err == nil || errors.Is(err, ErrReauthRequired) {
			t.Fatalf("b while a's token is unsaved: got %v, want a transient error", err)
		}
		if tok, err := a.Token(); err != nil || tok.RefreshToken != p.liveToken() {
			t.Fatalf("a serves from memory: got %v, %v", tok, err)
		}
		st.setSave(nil)
		time.Sleep(time.Minute) // a's retry saves it and lets go of the lock
		tok, err := b.Token()
		if err != nil || tok.RefreshToken != p.liveToken() {
			t.Fatalf("b after a's save: got %v, %v; want the rotated token", tok, err)
		}
		if calls, grants, reuse := p.counts(); calls != 1 || grants != 1 || reuse != 0 {
			t.Errorf("provider: %d calls, %d grants, %d reuse detections; want 1, 1, 0", calls, grants, reuse)
		}
	})
}

// TestStoreReadErrorNeverRedeemsMemory: a store that cannot be read under
// the lock must not make a Source redeem the refresh token it holds in
// memory, which another process may have rotated (issue 13, 5).
func TestStoreReadErrorNeverRedeemsMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		st := newHookStore()
		if err := storage.SaveToken(context.Background(), st, ledgerKey, p.login()); err != nil {
			t.Fatal(err)
		}
		src := newLedgerSource(t, p, st, ledgerKey)
		if _, err := src.Token(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Hour)
		st.setLoad(func() error { return fmt.Errorf("storage: read: %w", storage.ErrUnavailable) })
		_, err := src.Token()
		if err == nil || errors.Is(err, ErrReauthRequired) || !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("with the store unreadable: got %v, want a transient error matching storage.ErrUnavailable", err)
		}
		if calls, _, _ := p.counts(); calls != 0 {
			t.Fatalf("provider calls with the store unreadable: got %d, want 0", calls)
		}
		st.setLoad(nil)
		if _, err := src.Token(); err != nil {
			t.Fatalf("after the store healed: %v", err)
		}
	})
}

// TestRefusedSessionCostsOneRequest: N Sources sharing a store whose grant
// the provider refuses make one request between them, and all report
// ErrReauthRequired (issue 13, 6).
func TestRefusedSessionCostsOneRequest(t *testing.T) {
	for _, n := range []int{8, 32} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &rotator{}
				st := storage.NewMemory()
				seed(t, p, st)
				p.mu.Lock()
				p.revoked = true // the grant died at the provider
				p.mu.Unlock()
				var wg sync.WaitGroup
				var reauth atomic.Int32
				for range n {
					s := newLedgerSource(t, p, st, ledgerKey)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := s.Token(); errors.Is(err, ErrReauthRequired) {
							reauth.Add(1)
						}
					}()
				}
				wg.Wait()
				calls, _, _ := p.counts()
				t.Logf("%d Sources: %d provider requests, %d ErrReauthRequired", n, calls, reauth.Load())
				if calls != 1 || int(reauth.Load()) != n {
					t.Fatalf("got %d requests and %d ErrReauthRequired, want 1 and %d", calls, reauth.Load(), n)
				}
				if rec := stored(t, st, ledgerKey); rec.State != storage.Ended || !strings.Contains(rec.Reason, "invalid_grant") {
					t.Fatalf("stored: %v, want ended for invalid_grant", rec)
				}
			})
		})
	}
}

// TestRollbackIsRefused: a store put back to an older generation while a
// Source runs is reported as a rollback, and nothing is redeemed.
func TestRollbackIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		p := &rotator{}
		st := storage.NewMemory()
		old := p.login()
		if err := storage.SaveToken(ctx, st, ledgerKey, old); err != nil {
			t.Fatal(err)
		}
		src := newLedgerSource(t, p, st, ledgerKey)
		expireIn(t, st, ledgerKey, -time.Minute) // generation 2
		if _, err := src.Token(); err != nil {   // refreshes: generation 3
			t.Fatal(err)
		}
		// Someone puts the first generation back.
		st.Delete(ctx, ledgerKey)
		if err := storage.SaveToken(ctx, st, ledgerKey, old); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Hour)
		_, err := src.Token()
		if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "rollback") || errors.Is(err, ErrReauthRequired) {
			t.Fatalf("after a rollback: got %v, want an error matching storage.ErrCorrupt that says rollback", err)
		}
		if calls, _, _ := p.counts(); calls != 1 {
			t.Errorf("provider calls: got %d, want 1 (the refresh before the rollback)", calls)
		}
	})
}

// noLock hides a store's Locker.
type noLock struct{ storage.Store }
