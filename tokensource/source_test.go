package tokensource

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// TestStateBoundaries checks fresh, stale and invalid to the nanosecond for
// a one-hour token with the default margins: 10 s expiry delta, 5 min early
// refresh window. Offsets are from the moment the token is issued.
func TestStateBoundaries(t *testing.T) {
	const life = time.Hour
	staleAt := life - 10*time.Second - 5*time.Minute
	expireAt := life - 10*time.Second
	tests := []struct {
		name        string
		at          time.Duration
		wantNew     bool // the call returns a refreshed token
		wantRefresh bool // a refresh happens (in the background or not)
	}{
		{"issued", 0, false, false},
		{"fresh to the last nanosecond", staleAt - time.Nanosecond, false, false},
		{"stale at the window", staleAt, false, true},
		{"stale to the last nanosecond", expireAt - time.Nanosecond, false, true},
		{"invalid at expiry minus delta", expireAt, true, true},
		{"invalid after expiry", 2 * life, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &fakeProvider{}
				s := newTestSource(t, p, storage.NewMemory())
				old := &oauth2.Token{AccessToken: "tkat_old", RefreshToken: "tkrt_old", Expiry: time.Now().Add(life), ExpiresIn: int64(life / time.Second)}
				if err := s.Put(context.Background(), old); err != nil {
					t.Fatal(err)
				}
				time.Sleep(tt.at)
				got, err := s.Token()
				if err != nil {
					t.Fatal(err)
				}
				if isNew := got.AccessToken != "tkat_old"; isNew != tt.wantNew {
					t.Errorf("returned a refreshed token: got %v, want %v", isNew, tt.wantNew)
				}
				synctest.Wait() // for a background refresh
				var want int64
				if tt.wantRefresh {
					want = 1
				}
				if got := p.calls.Load(); got != want {
					t.Errorf("refreshes: got %d, want %d", got, want)
				}
			})
		})
	}
}

// TestShortLivedTokens checks that margins shrink with the lifetime: a
// 5-second token is served (x/oauth2's fixed 10 s delta would never serve
// it) and refreshed early.
func TestShortLivedTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{life: 5 * time.Second}
		s := newTestSource(t, p, storage.NewMemory())
		if err := s.Put(context.Background(), p.issue(0)); err != nil {
			t.Fatal(err)
		}
		// delta = 500 ms, window = 1.25 s: fresh until 3.25 s, stale until 4.5 s.
		start := time.Now()
		steps := []struct {
			at        time.Duration
			wantCalls int64
		}{
			{3250*time.Millisecond - 1, 0},
			{3250 * time.Millisecond, 1},
		}
		for _, st := range steps {
			time.Sleep(time.Until(start.Add(st.at)))
			tok, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "tkat_fake_0" {
				t.Errorf("at %v: the call waited for a refresh", st.at)
			}
			synctest.Wait()
			if got := p.calls.Load(); got != st.wantCalls {
				t.Errorf("at %v: refreshes: got %d, want %d", st.at, got, st.wantCalls)
			}
		}
	})
}

// TestExpiryComparedOnWallClock checks that the deadlines a Source keeps
// carry no monotonic clock reading. A token received in this process has an
// Expiry with one (x/oauth2 computes it from time.Now), and comparing two
// such times ignores the wall clock; but the monotonic clock stops while the
// machine sleeps, so after a night of suspend the token would still look
// fresh. Time offers no way to build that situation in a test, so the check
// is on the deadlines themselves. It runs on the real clock, whose readings
// are the ones that carry a monotonic part.
func TestExpiryComparedOnWallClock(t *testing.T) {
	s := newTestSource(t, &fakeProvider{}, storage.NewMemory())
	tok := &oauth2.Token{AccessToken: "tkat_mono", Expiry: time.Now().Add(time.Hour)}
	if tok.Expiry == tok.Expiry.Round(0) {
		t.Fatal("test token has no monotonic reading to strip")
	}
	now := time.Now()
	st := s.stateFor(tok, lifetimeOf(tok, now), now)
	for name, at := range map[string]time.Time{"staleAt": st.staleAt, "expireAt": st.expireAt} {
		if at != at.Round(0) {
			t.Errorf("%s carries a monotonic reading: %v", name, at)
		}
	}
}

// TestNoRefreshLoop checks that a provider answering with a token shorter
// than the early-refresh window does not cause a refresh on every call: a
// call every second for 100 s, with one-minute tokens and a 30-minute
// window, refreshes once per token (the window shrinks to a quarter of the
// lifetime: stale 39 s after issue).
func TestNoRefreshLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{life: time.Minute}
		s := newTestSource(t, p, storage.NewMemory(), WithEarlyRefresh(30*time.Minute))
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		for range 100 {
			if _, err := s.Token(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
		synctest.Wait()
		// At 0 s (nothing to serve), then in the background at 39 s and 78 s.
		if got := p.calls.Load(); got != 3 {
			t.Errorf("refreshes: got %d, want 3", got)
		}
	})
}

// TestAlreadyExpiredAnswerIsRejected: an answer whose token is already
// expired is not served; it is a bad answer, retried within the backoff's
// budget (here 2 retries: 3 requests). The rotated refresh token it carries
// is kept, so that each retry presents the newest one.
//
// A provider that keeps answering so (a skewed clock, a misconfigured
// lifetime) must not be called again at once without end: each salvaged
// answer starts redeemFrom's loop over with a fresh backoff, no wait and no
// retry limit, until the refresh deadline.
func TestAlreadyExpiredAnswerIsRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{life: -time.Minute}
		p.fail = func(n int64, _ *oauth2.Token) error {
			if n > 10 {
				// Ends a run that ignores the retry budget, which would
				// otherwise never block and so never let fake time pass.
				return providerError(http.StatusBadRequest, "invalid_scope", nil)
			}
			return nil
		}
		store := storage.NewMemory()
		s := newTestSource(t, p, store, quickBackOff(2))
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Token(); err == nil {
			t.Fatal("served an already expired token")
		}
		if got := p.calls.Load(); got != 3 {
			t.Errorf("token requests: got %d, want 3 (retried as a bad answer, within the backoff's budget)", got)
		}
		got := storedToken(t, store, testKey)
		if want := "tkrt_fake_" + itoa(min(p.calls.Load(), 10)); got.RefreshToken != want || got.AccessToken != "" {
			t.Errorf("stored: refresh token of answer %s, access token %v; want the last rotated refresh token and no access token",
				got.RefreshToken[len("tkrt_fake_"):], got.AccessToken != "")
		}
	})
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{delay: 50 * time.Millisecond}
		s := newTestSource(t, p, storage.NewMemory())
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		const n = 1000
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				tok, err := s.Token()
				if err == nil && tok.AccessToken != "tkat_fake_1" {
					err = errors.New("got token " + tok.AccessToken)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := p.calls.Load(); got != 1 {
			t.Errorf("refreshes: got %d, want 1", got)
		}
	})
}

// TestFailingRefreshIsNotRepeatedPerCaller: 1000 callers arrive together at
// a refresh that fails after 4 attempts; they all get its error, and the
// provider sees those 4 requests, not one per caller.
func TestFailingRefreshIsNotRepeatedPerCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{delay: 10 * time.Millisecond, fail: func(int64, *oauth2.Token) error {
			return providerError(http.StatusServiceUnavailable, "", nil)
		}}
		s := newTestSource(t, p, storage.NewMemory(), quickBackOff(3))
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		const n = 1000
		var wg sync.WaitGroup
		var failed, ok int64
		var mu sync.Mutex
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				_, err := s.Token()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
				} else {
					ok++
				}
			})
		}
		close(start)
		wg.Wait()
		if failed != n {
			t.Errorf("callers that got the error: got %d, want %d", failed, n)
		}
		// Every caller joined the refresh before its first request ended.
		if got := p.calls.Load(); got != 4 {
			t.Errorf("token requests: got %d, want 4 (one refresh: the first attempt and 3 retries)", got)
		}
	})
}

// TestCallerDeadline: a caller with a 10 ms deadline returns at its
// deadline while the 1 s refresh goes on and lands in the store.
func TestCallerDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{delay: time.Second}
		store := storage.NewMemory()
		s := newTestSource(t, p, store)
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.TokenContext(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 10*time.Millisecond {
			t.Errorf("returned after %v, want 10ms (its deadline)", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := storedToken(t, store, testKey); got.AccessToken != "tkat_fake_1" {
			t.Errorf("stored token after the refresh: got %s, want tkat_fake_1", got.AccessToken)
		}
		if got := p.calls.Load(); got != 1 {
			t.Errorf("refreshes: got %d, want 1", got)
		}
	})
}

// TestSavedBeforeReturned: when Token returns a refreshed token, the store
// already holds it, rotated refresh token included, as the next generation.
func TestSavedBeforeReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		store := storage.NewMemory()
		s := newTestSource(t, p, store)
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		for i := int64(1); i <= 3; i++ {
			tok, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			stored := storedRecord(t, store, testKey)
			if stored.Token.AccessToken != tok.AccessToken || stored.Token.RefreshToken != "tkrt_fake_"+itoa(i) {
				t.Fatalf("store is behind after refresh %d", i)
			}
			if got, want := stored.Generation, uint64(i+1); got != want {
				t.Errorf("generation after refresh %d: got %d, want %d", i, got, want)
			}
			if got, want := stored.Lifetime, time.Hour; got != want {
				t.Errorf("recorded lifetime after refresh %d: got %v, want %v", i, got, want)
			}
			time.Sleep(2 * time.Hour)
		}
	})
}

func TestMergeKeepsWhatTheAnswerOmits(t *testing.T) {
	base := (&oauth2.Token{AccessToken: "a0", RefreshToken: "r0"}).WithExtra(map[string]any{
		"id_token": "idt0", "scope": "openid offline_access",
	})
	got := merge(base, (&oauth2.Token{AccessToken: "a1"}).WithExtra(map[string]any{"scope": "openid"}))
	if got.RefreshToken != "r0" {
		t.Errorf("refresh token: got %q, want r0 (kept)", got.RefreshToken)
	}
	if got.Extra("scope") != "openid" || got.Extra("id_token") != "idt0" {
		t.Errorf("extras: got scope %v id_token %v, want openid and idt0", got.Extra("scope"), got.Extra("id_token"))
	}
	got = merge(base, &oauth2.Token{AccessToken: "a1", RefreshToken: "r1"})
	if got.RefreshToken != "r1" {
		t.Errorf("rotated refresh token: got %q, want r1", got.RefreshToken)
	}
}

// TestReauthRequired: invalid_grant is not retried; the session ends, in
// the store too (an ended record), and the Source says so without calling
// the provider again until a new login is Put.
func TestReauthRequired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{fail: func(int64, *oauth2.Token) error {
			return providerError(http.StatusBadRequest, "invalid_grant", nil)
		}}
		store := storage.NewMemory()
		s := newTestSource(t, p, store, quickBackOff(5))
		old := &oauth2.Token{AccessToken: "tkat_old", RefreshToken: "tkrt_old", Expiry: time.Now().Add(-time.Minute)}
		if err := s.Put(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		_, err := s.Token()
		if !errors.Is(err, ErrReauthRequired) {
			t.Fatalf("got %v, want ErrReauthRequired", err)
		}
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("got %v, want it to wrap the provider's *oauth2.RetrieveError", err)
		}
		for range 2 {
			if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
				t.Fatalf("again: got %v, want ErrReauthRequired", err)
			}
		}
		if got := p.calls.Load(); got != 1 {
			t.Errorf("token requests: got %d, want 1 (no retry, not repeated)", got)
		}
		wantEnded(t, store, testKey, 2, "refused by the provider: invalid_grant")
		// A new login clears the state.
		p.fail = nil
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_new"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Token(); err != nil {
			t.Fatalf("after Put: %v", err)
		}
		if r := storedRecord(t, store, testKey); r.State != storage.Live || r.Generation != 4 {
			t.Errorf("stored after Put and refresh: got %v, want live generation 4", r)
		}
	})
}

// TestInvalidGrantRecoversFromStore: the refresh token this Source holds was
// rotated by another process; the provider says invalid_grant, the store
// has the new one, and the Source carries on.
func TestInvalidGrantRecoversFromStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := storage.NewMemory()
		p := &fakeProvider{}
		p.fail = func(n int64, tok *oauth2.Token) error {
			if tok.RefreshToken != "tkrt_old" {
				return nil
			}
			// Meanwhile "another process" redeemed tkrt_old and saved the result.
			rotated := &oauth2.Token{AccessToken: "tkat_other", RefreshToken: "tkrt_other", Expiry: time.Now().Add(-time.Second)}
			if err := storage.SaveToken(context.Background(), mem, testKey, rotated); err != nil {
				return err
			}
			return providerError(http.StatusBadRequest, "invalid_grant", nil)
		}
		s := newTestSource(t, p, mem, quickBackOff(3))
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_old"}); err != nil {
			t.Fatal(err)
		}
		tok, err := s.Token()
		if err != nil {
			t.Fatalf("got %v, want recovery through the store", err)
		}
		if tok.RefreshToken == "tkrt_old" || tok.AccessToken == "" {
			t.Errorf("got a token from the dead refresh token")
		}
		if got := p.calls.Load(); got != 2 {
			t.Errorf("token requests: got %d, want 2 (the failed one and one with the rotated token)", got)
		}
		if r := storedRecord(t, mem, testKey); r.Generation != 3 || r.Token.AccessToken != tok.AccessToken {
			t.Errorf("stored: got %v, want generation 3 holding the served token", r)
		}
	})
}

func TestAdoptsFreshStoredToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := storage.NewMemory()
		p := &fakeProvider{}
		fresh := &oauth2.Token{AccessToken: "tkat_saved", RefreshToken: "tkrt_saved", Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}
		if err := storage.SaveToken(context.Background(), mem, testKey, fresh); err != nil {
			t.Fatal(err)
		}
		var events eventLog
		s := newTestSource(t, p, mem, WithHook(events.hook))
		tok, err := s.Token()
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken != "tkat_saved" || p.calls.Load() != 0 {
			t.Errorf("got %q after %d refreshes, want the stored token and none", tok.AccessToken, p.calls.Load())
		}
		if evs := events.events(); len(evs) != 1 || evs[0].Kind != Adopted {
			t.Errorf("events: got %v, want one Adopted", evs)
		}
	})
}

func TestNothingStored(t *testing.T) {
	s := newTestSource(t, &ConfigRefresher{Config: &oauth2.Config{Endpoint: oauth2.Endpoint{TokenURL: "https://idp.example/token"}}}, storage.NewMemory())
	_, err := s.Token()
	if !errors.Is(err, ErrReauthRequired) {
		t.Fatalf("got %v, want ErrReauthRequired", err)
	}
	if want := `tokensource: refresh "user@example": no refresh token stored: log in again`; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestSaveFailureKeepsTokenAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		store := newFaultyStore()
		s := newTestSource(t, p, store)
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		store.failSaves(errDiskFull)
		_, err := s.Token()
		if !errors.Is(err, ErrNotSaved) || !errors.Is(err, errDiskFull) {
			t.Fatalf("got %v, want ErrNotSaved wrapping the store's error", err)
		}
		tok, err := s.Token()
		if err != nil || tok.RefreshToken != "tkrt_fake_1" {
			t.Fatalf("the new token is not served from memory: %v", err)
		}
		if p.calls.Load() != 1 {
			t.Errorf("refreshes: got %d, want 1", p.calls.Load())
		}
		store.failSaves(nil)
		time.Sleep(time.Minute) // the save retries back off to a few seconds at most
		synctest.Wait()
		r := storedRecord(t, store, testKey)
		if r.Generation != 2 || r.Token.RefreshToken != "tkrt_fake_1" {
			t.Errorf("stored after the retries: got %v, want generation 2 holding the new token", r)
		}
	})
}

func TestCloseReportsUnsavedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		store := newFaultyStore()
		var events eventLog
		s := newTestSource(t, p, store, WithHook(events.hook))
		if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		store.failSaves(errDiskFull)
		if _, err := s.Token(); !errors.Is(err, ErrNotSaved) {
			t.Fatalf("got %v, want ErrNotSaved", err)
		}
		if err := s.Close(); !errors.Is(err, ErrNotSaved) {
			t.Errorf("Close: got %v, want ErrNotSaved", err)
		}
		if got := events.count(Lost); got != 1 {
			t.Errorf("Lost events: got %d, want 1", got)
		}
		if _, err := s.Token(); !errors.Is(err, ErrClosed) {
			t.Errorf("Token after Close: got %v, want ErrClosed", err)
		}
	})
}

func TestInvalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		s := newTestSource(t, p, storage.NewMemory())
		if err := s.Put(context.Background(), p.issue(0)); err != nil {
			t.Fatal(err)
		}
		first, _ := s.Token()
		s.Invalidate(first)
		s.Invalidate(first) // a second 401 for the same token changes nothing
		second, err := s.Token()
		if err != nil || second.AccessToken == first.AccessToken {
			t.Fatalf("after Invalidate: got %v, %v; want a new token", second, err)
		}
		s.Invalidate(first) // already replaced
		third, _ := s.Token()
		if third != second || p.calls.Load() != 1 {
			t.Errorf("Invalidate of a replaced token caused a refresh (%d refreshes)", p.calls.Load())
		}
	})
}

type revokingProvider struct {
	fakeProvider
	revoked []string
	err     error
}

func (r *revokingProvider) Revoke(ctx context.Context, t *oauth2.Token) error {
	r.revoked = append(r.revoked, t.RefreshToken)
	return r.err
}

// TestRevoke: the refresh token is revoked at the provider and the store
// keeps an ended record, so that no Source sharing it brings the session
// back.
func TestRevoke(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := storage.NewMemory()
		p := &revokingProvider{}
		s := newTestSource(t, p, store)
		if err := s.Put(context.Background(), p.issue(7)); err != nil {
			t.Fatal(err)
		}
		if err := s.Revoke(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(p.revoked) != 1 || p.revoked[0] != "tkrt_fake_7" {
			t.Errorf("revoked: got %v, want the refresh token", p.revoked)
		}
		wantEnded(t, store, testKey, 2, "revoked")
		if _, err := storage.LoadToken(context.Background(), store, testKey); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("stored token after Revoke: got %v, want ErrNotFound", err)
		}
		if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
			t.Errorf("Token after Revoke: got %v, want ErrReauthRequired", err)
		}
		if got := p.calls.Load(); got != 0 {
			t.Errorf("token requests after Revoke: got %d, want 0", got)
		}
	})
}

// TestRevokeWithoutEndpointEndsAndSaysSo: with no revocation endpoint the
// session still ends locally, and the error says the provider was not told.
func TestRevokeWithoutEndpointEndsAndSaysSo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := storage.NewMemory()
		p := &fakeProvider{}
		s := newTestSource(t, p, store)
		if err := s.Put(context.Background(), p.issue(1)); err != nil {
			t.Fatal(err)
		}
		err := s.Revoke(context.Background())
		if !errors.Is(err, ErrNoRevocationEndpoint) {
			t.Errorf("got %v, want ErrNoRevocationEndpoint", err)
		}
		wantEnded(t, store, testKey, 2, "revoked")
		if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
			t.Errorf("Token after Revoke: got %v, want ErrReauthRequired", err)
		}
	})
}

// TestLockerStoreOneRefresh: Sources sharing a Locker store (standing in
// for processes) refresh an expired token once between them.
func TestLockerStoreOneRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := storage.NewMemory()
		p := &fakeProvider{delay: 20 * time.Millisecond}
		if err := storage.SaveToken(context.Background(), mem, testKey, &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			s := newTestSource(t, p, mem)
			wg.Go(func() {
				if _, err := s.Token(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if got := p.calls.Load(); got != 1 {
			t.Errorf("refreshes: got %d, want 1", got)
		}
		if got := storedRecord(t, mem, testKey).Generation; got != 2 {
			t.Errorf("stored generation: got %d, want 2 (one write)", got)
		}
	})
}

func TestNewRejectsBadArguments(t *testing.T) {
	p := &fakeProvider{}
	insecure := &ConfigRefresher{Config: &oauth2.Config{Endpoint: oauth2.Endpoint{TokenURL: "http://idp.example/token"}}}
	tests := []struct {
		name  string
		r     Refresher
		store storage.Store
		key   string
	}{
		{"nil refresher", nil, storage.NewMemory(), "k"},
		{"nil store", p, nil, "k"},
		{"empty key", p, storage.NewMemory(), ""},
		{"plain http token endpoint", insecure, storage.NewMemory(), "k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.r, tt.store, tt.key); err == nil {
				t.Error("got nil error")
			}
		})
	}
}

// TestRetryAfterWaited: a retry waits for the Retry-After the provider
// sent, in seconds or as an HTTP-date, to the nanosecond of fake time.
// (It was the minimum-wait column of TestServerFaults, a measurement of
// real time.)
func TestRetryAfterWaited(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter func(now time.Time) string
		want       time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, func(time.Time) string { return "1" }, time.Second},
		{"503 seconds", http.StatusServiceUnavailable, func(time.Time) string { return "1" }, time.Second},
		{"503 HTTP-date", http.StatusServiceUnavailable, func(now time.Time) string { return now.Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 3 * time.Second},
		{"500 HTTP-date", http.StatusInternalServerError, func(now time.Time) string { return now.Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 3 * time.Second},
		{"429 without Retry-After", http.StatusTooManyRequests, func(time.Time) string { return "" }, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &fakeProvider{}
				p.fail = func(n int64, _ *oauth2.Token) error {
					if n > 1 {
						return nil
					}
					h := http.Header{}
					if v := tt.retryAfter(time.Now()); v != "" {
						h.Set("Retry-After", v)
					}
					return providerError(tt.status, "", h)
				}
				s := newTestSource(t, p, storage.NewMemory(), quickBackOff(3))
				if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Token(); err != nil {
					t.Fatalf("got %v, want a token after the wait", err)
				}
				times := p.callTimes()
				if len(times) != 2 {
					t.Fatalf("token requests: got %d, want 2", len(times))
				}
				if got := times[1].Sub(times[0]); got != tt.want {
					t.Errorf("retried after %v, want %v", got, tt.want)
				}
			})
		})
	}
}

// TestBackgroundRefreshNobodyWaits: with a steady stream of calls across
// several lifetimes, nobody waits for the network. A call every 5 ms for
// 5 s, 2 s tokens, 50 ms per refresh: in fake time a call that waited
// would be seen to take time.
func TestBackgroundRefreshNobodyWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{life: 2 * time.Second, delay: 50 * time.Millisecond}
		s := newTestSource(t, p, storage.NewMemory())
		if err := s.Put(context.Background(), p.issue(0)); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		end := time.Now().Add(5 * time.Second)
		for time.Now().Before(end) {
			start := time.Now()
			tok, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("a call waited %v for a refresh", d)
			}
			seen[tok.AccessToken] = true
			time.Sleep(5 * time.Millisecond)
		}
		// Stale 1.3 s after issue (delta 200 ms, window 500 ms), refreshed
		// 50 ms later: at 1.3, 2.65 and 4 s.
		if got := p.calls.Load(); got != 3 {
			t.Errorf("refreshes: got %d, want 3", got)
		}
		if len(seen) != 4 {
			t.Errorf("tokens served: got %d, want 4", len(seen))
		}
	})
}

// TestCloseDuringBackgroundRefreshIsQuiet: Close while a background refresh
// runs is a clean shutdown, not a failure worth a warning — whether Close
// cancels the refresh (it sent nothing yet: here it waits for the store's
// lock) or lets it finish (its request is at the provider).
func TestCloseDuringBackgroundRefreshIsQuiet(t *testing.T) {
	tests := []struct {
		name      string
		delay     time.Duration // of the provider
		lockHeld  bool          // another process holds the store's lock
		wantCalls int64
	}{
		{"waiting for the store's lock", 0, true, 0},
		{"request at the provider", 2 * time.Second, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs bytes.Buffer
				var mu sync.Mutex
				logger := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))
				p := &fakeProvider{delay: tt.delay}
				store := storage.NewMemory()
				s := newTestSource(t, p, store, WithLogger(logger))
				if err := s.Put(context.Background(), p.issue(0)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Hour - 10*time.Second - 5*time.Minute) // into the early-refresh window
				if tt.lockHeld {
					unlock, err := store.Lock(context.Background(), testKey)
					if err != nil {
						t.Fatal(err)
					}
					defer unlock()
				}
				if _, err := s.Token(); err != nil {
					t.Fatal(err)
				}
				synctest.Wait() // the background refresh waits for the lock or the provider
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if got := p.calls.Load(); got != tt.wantCalls {
					t.Errorf("token requests: got %d, want %d", got, tt.wantCalls)
				}
				mu.Lock()
				defer mu.Unlock()
				if logs.Len() != 0 {
					t.Fatalf("Close during a background refresh logged:\n%s", logs.String())
				}
			})
		})
	}
}

// TestFailedBackgroundRefreshPauses: after a background refresh fails, the
// next one starts an eighth of the time left later, not on the next call,
// so that an outage costs a handful of attempts per lifetime.
func TestFailedBackgroundRefreshPauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{fail: func(n int64, _ *oauth2.Token) error {
			if n == 1 {
				return providerError(http.StatusServiceUnavailable, "", nil)
			}
			return nil
		}}
		s := newTestSource(t, p, storage.NewMemory(), quickBackOff(0))
		tok := p.issue(0) // one hour
		if err := s.Put(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		expireAt := tok.Expiry.Add(-min(s.cfg.expiryDelta, time.Hour/10))
		time.Sleep(time.Until(expireAt.Add(-s.cfg.early))) // stale: no jitter here
		call := func() string {
			t.Helper()
			got, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			synctest.Wait() // a background refresh it started has ended
			return got.AccessToken
		}
		if at := call(); at != tok.AccessToken || p.calls.Load() != 1 {
			t.Fatalf("stale: served %s after %d refreshes, want the old token after 1", at, p.calls.Load())
		}
		pause := time.Until(expireAt) / 8
		time.Sleep(pause - time.Millisecond)
		if call(); p.calls.Load() != 1 {
			t.Fatalf("%d refreshes %v after the failure, want still 1", p.calls.Load(), pause-time.Millisecond)
		}
		time.Sleep(time.Millisecond)
		call()
		if n := p.calls.Load(); n != 2 {
			t.Fatalf("%d refreshes %v after the failure, want 2", n, pause)
		}
		if at := call(); at != "tkat_fake_2" {
			t.Errorf("after the retry: served %s, want the new token", at)
		}
	})
}
