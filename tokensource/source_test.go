package tokensource

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// TestStateBoundaries checks fresh, stale and invalid to the nanosecond for
// a one-hour token with the default margins: 10 s expiry delta, 5 min early
// refresh window.
func TestStateBoundaries(t *testing.T) {
	c := newClock()
	t0 := c.Now()
	expiry := t0.Add(time.Hour)
	staleAt := expiry.Add(-10*time.Second - 5*time.Minute)
	expireAt := expiry.Add(-10 * time.Second)
	tests := []struct {
		name        string
		at          time.Time
		wantNew     bool // the call returns a refreshed token
		wantRefresh bool // a refresh happens (in the background or not)
	}{
		{"issued", t0, false, false},
		{"fresh to the last nanosecond", staleAt.Add(-time.Nanosecond), false, false},
		{"stale at the window", staleAt, false, true},
		{"stale to the last nanosecond", expireAt.Add(-time.Nanosecond), false, true},
		{"invalid at expiry minus delta", expireAt, true, true},
		{"invalid after expiry", expiry.Add(time.Hour), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Set(t0)
			p := &fakeProvider{clock: c}
			s := newTestSource(t, p, storage.NewMemory(), c)
			old := &oauth2.Token{AccessToken: "tkat_old", RefreshToken: "tkrt_old", Expiry: expiry, ExpiresIn: 3600}
			if err := s.Put(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			c.Set(tt.at)
			got, err := s.Token()
			if err != nil {
				t.Fatal(err)
			}
			if isNew := got.AccessToken != "tkat_old"; isNew != tt.wantNew {
				t.Errorf("returned a refreshed token: got %v, want %v", isNew, tt.wantNew)
			}
			if tt.wantRefresh {
				waitFor(t, func() bool { return p.calls.Load() == 1 })
			}
			s.Close()
			if got, want := p.calls.Load() > 0, tt.wantRefresh; got != want {
				t.Errorf("refreshed: got %v, want %v", got, want)
			}
		})
	}
}

// TestShortLivedTokens checks that margins shrink with the lifetime: a
// 5-second token is served (x/oauth2's fixed 10 s delta would never serve
// it) and refreshed early.
func TestShortLivedTokens(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, life: 5 * time.Second}
	s := newTestSource(t, p, storage.NewMemory(), c)
	if err := s.Put(context.Background(), p.issue(0)); err != nil {
		t.Fatal(err)
	}
	// delta = 500 ms, window = 1.25 s: fresh until 3.25 s, stale until 4.5 s.
	steps := []struct {
		at        time.Duration
		wantCalls int64
	}{
		{3250*time.Millisecond - 1, 0},
		{3250 * time.Millisecond, 1},
	}
	start := c.Now()
	for _, st := range steps {
		c.Set(start.Add(st.at))
		if _, err := s.Token(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return p.calls.Load() == st.wantCalls })
	}
}

// TestExpiryComparedOnWallClock checks that the deadlines a Source keeps
// carry no monotonic clock reading. A token received in this process has an
// Expiry with one (x/oauth2 computes it from time.Now), and comparing two
// such times ignores the wall clock; but the monotonic clock stops while the
// machine sleeps, so after a night of suspend the token would still look
// fresh. Time offers no way to build that situation in a test, so the check
// is on the deadlines themselves.
func TestExpiryComparedOnWallClock(t *testing.T) {
	s := newTestSource(t, &fakeProvider{clock: newClock()}, storage.NewMemory(), nil)
	tok := &oauth2.Token{AccessToken: "tkat_mono", Expiry: time.Now().Add(time.Hour)}
	if tok.Expiry == tok.Expiry.Round(0) {
		t.Fatal("test token has no monotonic reading to strip")
	}
	st := s.stateFor(tok, time.Now())
	for name, at := range map[string]time.Time{"staleAt": st.staleAt, "expireAt": st.expireAt} {
		if at != at.Round(0) {
			t.Errorf("%s carries a monotonic reading: %v", name, at)
		}
	}
}

// TestNoRefreshLoop checks that a provider answering with a token shorter
// than the early-refresh window does not cause a refresh on every call.
func TestNoRefreshLoop(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, life: time.Minute}
	s := newTestSource(t, p, storage.NewMemory(), c, WithEarlyRefresh(30*time.Minute))
	if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := s.Token(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if got := p.calls.Load(); got != 1 {
		t.Errorf("refreshes: got %d, want 1", got)
	}
}

func TestAlreadyExpiredAnswerIsRejected(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, life: -time.Minute}
	s := newTestSource(t, p, storage.NewMemory(), c, quickBackOff(2))
	if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Token()
	if err == nil {
		t.Fatal("served an already expired token")
	}
	if got := p.calls.Load(); got != 3 {
		t.Errorf("attempts: got %d, want 3 (retried as a bad answer)", got)
	}
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, delay: 50 * time.Millisecond}
	s := newTestSource(t, p, storage.NewMemory(), c)
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
}

func TestFailingRefreshIsNotRepeatedPerCaller(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, delay: 10 * time.Millisecond, fail: func(int64, *oauth2.Token) error {
		return providerError(http.StatusServiceUnavailable, "", nil)
	}}
	s := newTestSource(t, p, storage.NewMemory(), c, quickBackOff(3))
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
	// 4 attempts per refresh; callers arriving after a refresh ended may
	// start one more, never one each.
	if got := p.calls.Load(); got > 8 {
		t.Errorf("token requests: got %d, want at most 8", got)
	}
}

// TestCallerDeadline: a caller with a 10 ms deadline returns at once while
// the 1 s refresh goes on and lands in the store.
func TestCallerDeadline(t *testing.T) {
	p := &fakeProvider{delay: time.Second}
	store := storage.NewMemory()
	s := newTestSource(t, p, store, nil)
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
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("returned after %v, want about 10ms", el)
	}
	waitFor(t, func() bool {
		tok, err := store.Load(context.Background(), "user@example")
		return err == nil && tok.AccessToken == "tkat_fake_1"
	})
}

// TestSavedBeforeReturned: when Token returns a refreshed token, the store
// already holds it, rotated refresh token included.
func TestSavedBeforeReturned(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c}
	store := storage.NewMemory()
	s := newTestSource(t, p, store, c)
	if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		tok, err := s.Token()
		if err != nil {
			t.Fatal(err)
		}
		stored, err := store.Load(context.Background(), "user@example")
		if err != nil {
			t.Fatal(err)
		}
		if stored.AccessToken != tok.AccessToken || stored.RefreshToken != "tkrt_fake_"+itoa(i) {
			t.Fatalf("store is behind after refresh %d", i)
		}
		c.Add(2 * time.Hour)
	}
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

func TestReauthRequired(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c, fail: func(int64, *oauth2.Token) error {
		return providerError(http.StatusBadRequest, "invalid_grant", nil)
	}}
	store := storage.NewMemory()
	s := newTestSource(t, p, store, c, quickBackOff(5))
	old := &oauth2.Token{AccessToken: "tkat_old", RefreshToken: "tkrt_old", Expiry: c.Now().Add(-time.Minute)}
	if err := s.Put(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := s.Token()
		if !errors.Is(err, ErrReauthRequired) {
			t.Fatalf("got %v, want ErrReauthRequired", err)
		}
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("got %v, want it to wrap the provider's *oauth2.RetrieveError", err)
		}
	}
	if got := p.calls.Load(); got != 1 {
		t.Errorf("token requests: got %d, want 1 (no retry, not repeated)", got)
	}
	stored, err := store.Load(context.Background(), "user@example")
	if err != nil || stored.RefreshToken != "tkrt_old" {
		t.Errorf("stored refresh token changed after invalid_grant: %v", err)
	}
	// A new login clears the state.
	p.fail = nil
	if err := s.Put(context.Background(), &oauth2.Token{RefreshToken: "tkrt_new"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Token(); err != nil {
		t.Fatalf("after Put: %v", err)
	}
}

// TestInvalidGrantRecoversFromStore: the refresh token this Source holds was
// rotated by another process; the provider says invalid_grant, the store
// has the new one, and the Source carries on.
func TestInvalidGrantRecoversFromStore(t *testing.T) {
	c := newClock()
	mem := storage.NewMemory()
	p := &fakeProvider{clock: c}
	p.fail = func(n int64, tok *oauth2.Token) error {
		if tok.RefreshToken != "tkrt_old" {
			return nil
		}
		// Meanwhile "another process" redeemed tkrt_old and saved the result.
		rotated := &oauth2.Token{AccessToken: "tkat_other", RefreshToken: "tkrt_other", Expiry: c.Now().Add(-time.Second)}
		if err := mem.Save(context.Background(), "user@example", rotated); err != nil {
			return err
		}
		return providerError(http.StatusBadRequest, "invalid_grant", nil)
	}
	s := newTestSource(t, p, mem, c, quickBackOff(3))
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
}

func TestAdoptsFreshStoredToken(t *testing.T) {
	c := newClock()
	mem := storage.NewMemory()
	p := &fakeProvider{clock: c}
	fresh := &oauth2.Token{AccessToken: "tkat_saved", RefreshToken: "tkrt_saved", Expiry: c.Now().Add(time.Hour), ExpiresIn: 3600}
	if err := mem.Save(context.Background(), "user@example", fresh); err != nil {
		t.Fatal(err)
	}
	var events []Event
	s := newTestSource(t, p, mem, c, WithHook(func(e Event) { events = append(events, e) }))
	tok, err := s.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "tkat_saved" || p.calls.Load() != 0 {
		t.Errorf("got %q after %d refreshes, want the stored token and none", tok.AccessToken, p.calls.Load())
	}
	if len(events) != 1 || events[0].Kind != Adopted {
		t.Errorf("events: got %v, want one Adopted", events)
	}
}

func TestNothingStored(t *testing.T) {
	s := newTestSource(t, &ConfigRefresher{Config: &oauth2.Config{Endpoint: oauth2.Endpoint{TokenURL: "https://idp.example/token"}}}, storage.NewMemory(), nil)
	_, err := s.Token()
	if !errors.Is(err, ErrReauthRequired) {
		t.Fatalf("got %v, want ErrReauthRequired", err)
	}
	if want := `tokensource: refresh "user@example": no refresh token stored: log in again`; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestSaveFailureKeepsTokenAndRetries(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c}
	store := &faultyStore{Store: storage.NewMemory()}
	s := newTestSource(t, p, store, c)
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
	waitFor(t, func() bool {
		stored, err := store.Load(context.Background(), "user@example")
		return err == nil && stored.RefreshToken == "tkrt_fake_1"
	})
}

func TestCloseReportsUnsavedToken(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c}
	store := &faultyStore{Store: storage.NewMemory()}
	s := newTestSource(t, p, store, c)
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
	if _, err := s.Token(); !errors.Is(err, ErrClosed) {
		t.Errorf("Token after Close: got %v, want ErrClosed", err)
	}
}

func TestInvalidate(t *testing.T) {
	c := newClock()
	p := &fakeProvider{clock: c}
	s := newTestSource(t, p, storage.NewMemory(), c)
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

func TestRevoke(t *testing.T) {
	c := newClock()
	store := storage.NewMemory()
	p := &revokingProvider{fakeProvider: fakeProvider{clock: c}}
	s := newTestSource(t, p, store, c)
	if err := s.Put(context.Background(), p.issue(7)); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(p.revoked) != 1 || p.revoked[0] != "tkrt_fake_7" {
		t.Errorf("revoked: got %v, want the refresh token", p.revoked)
	}
	if _, err := store.Load(context.Background(), "user@example"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("store after Revoke: got %v, want ErrNotFound", err)
	}
	if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
		t.Errorf("Token after Revoke: got %v, want ErrReauthRequired", err)
	}
}

func TestRevokeWithoutEndpointWipesAndSaysSo(t *testing.T) {
	c := newClock()
	store := storage.NewMemory()
	p := &fakeProvider{clock: c}
	s := newTestSource(t, p, store, c)
	if err := s.Put(context.Background(), p.issue(1)); err != nil {
		t.Fatal(err)
	}
	err := s.Revoke(context.Background())
	if !errors.Is(err, ErrNoRevocationEndpoint) {
		t.Errorf("got %v, want ErrNoRevocationEndpoint", err)
	}
	if _, err := store.Load(context.Background(), "user@example"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("store after Revoke: got %v, want ErrNotFound", err)
	}
}

// TestLockerStoreOneRefresh: Sources sharing a Locker store (standing in
// for processes) refresh an expired token once between them.
func TestLockerStoreOneRefresh(t *testing.T) {
	c := newClock()
	mem := storage.NewMemory()
	p := &fakeProvider{clock: c, delay: 20 * time.Millisecond}
	if err := mem.Save(context.Background(), "user@example", &oauth2.Token{RefreshToken: "tkrt_0"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		s := newTestSource(t, p, mem, c)
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
}

func TestNewRejectsBadArguments(t *testing.T) {
	p := &fakeProvider{clock: newClock()}
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

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
