package tokensource

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// slowAnswer makes the provider answer d after it processed a refresh; if
// the caller gives up first, the answer is lost, as on a real network.
func slowAnswer(d time.Duration) func(int, context.Context) error {
	return func(_ int, ctx context.Context) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// events collects a Source's events.
type events struct {
	mu   sync.Mutex // guards list
	list []Event
}

func (e *events) hook(ev Event) { e.mu.Lock(); e.list = append(e.list, ev); e.mu.Unlock() }

func (e *events) kinds() []EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k []EventKind
	for _, ev := range e.list {
		k = append(k, ev.Kind)
	}
	return k
}

func (e *events) count(kind EventKind) int {
	n := 0
	for _, k := range e.kinds() {
		if k == kind {
			n++
		}
	}
	return n
}

// TestCloseMidRefreshSavesTheAnswer: Close while a refresh request is at
// the provider waits for the answer and saves it, so that the next start
// does not present a spent refresh token (issue 14, 1).
func TestCloseMidRefreshSavesTheAnswer(t *testing.T) {
	for _, background := range []bool{false, true} {
		name := "blocking"
		if background {
			name = "background"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &rotator{after: slowAnswer(time.Second)}
				st := storage.NewMemory()
				if err := storage.SaveToken(context.Background(), st, ledgerKey, p.login()); err != nil {
					t.Fatal(err)
				}
				if background {
					expireIn(t, st, ledgerKey, time.Minute) // inside the early-refresh window
				} else {
					expireIn(t, st, ledgerKey, -time.Minute)
				}
				src, err := New(p, st, ledgerKey)
				if err != nil {
					t.Fatal(err)
				}
				go src.Token()
				synctest.Wait() // the request is at the provider
				if calls, _, _ := p.counts(); calls != 1 {
					t.Fatalf("provider calls before Close: got %d, want 1", calls)
				}
				if err := src.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				if rec := stored(t, st, ledgerKey); rec.Token.RefreshToken != p.liveToken() {
					t.Fatalf("stored refresh token after Close: got %q, want the rotated %q", rec.Token.RefreshToken, p.liveToken())
				}
				// The next start.
				next := newLedgerSource(t, p, st, ledgerKey)
				time.Sleep(2 * time.Hour)
				if _, err := next.Token(); err != nil {
					t.Fatalf("next start: %v", err)
				}
				if _, _, reuse := p.counts(); reuse != 0 {
					t.Fatalf("reuse detections: got %d, want 0", reuse)
				}
			})
		})
	}
}

// TestCloseGraceBoundsTheWait: an answer slower than the close grace is
// given up, and the Source says so (an in-doubt event), rather than make
// Close hang.
func TestCloseGraceBoundsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{after: slowAnswer(time.Hour)}
		st := storage.NewMemory()
		seed(t, p, st)
		var ev events
		src, err := New(p, st, ledgerKey, WithCloseGrace(2*time.Second), WithRefreshTimeout(2*time.Hour), WithHook(ev.hook))
		if err != nil {
			t.Fatal(err)
		}
		go src.Token()
		synctest.Wait()
		start := time.Now()
		src.Close()
		if waited := time.Since(start); waited != 2*time.Second {
			t.Errorf("Close waited %v, want the 2s grace", waited)
		}
		if ev.count(InDoubt) != 1 {
			t.Errorf("events: %v, want one in-doubt", ev.kinds())
		}
	})
}

// TestAttemptTimeoutReportsInDoubt: a Refresher that cannot bound only its
// sending is cut off by the attempt timeout after its request may have been
// processed; the outcome is reported as in doubt before the retry (issue
// 14, 2).
func TestAttemptTimeoutReportsInDoubt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		p.after = func(call int, ctx context.Context) error {
			if call == 1 {
				return slowAnswer(time.Second)(call, ctx)
			}
			return nil
		}
		st := storage.NewMemory()
		seed(t, p, st)
		var ev events
		src := newLedgerSource(t, p, st, ledgerKey, WithAttemptTimeout(500*time.Millisecond), WithHook(ev.hook))
		_, err := src.Token()
		kinds := ev.kinds()
		if len(kinds) == 0 || kinds[0] != InDoubt {
			t.Fatalf("events: %v, want in-doubt first", kinds)
		}
		// The retry presented the spent token: this provider has no reuse
		// interval, so the session ended, and the error says why.
		if !errors.Is(err, ErrReauthRequired) {
			t.Fatalf("got %v, want ErrReauthRequired after the in-doubt retry", err)
		}
	})
}

// TestSalvageRotatedRefreshToken: an answer that carries a new refresh
// token but cannot be served is not thrown away: the new refresh token is
// saved and redeemed next (issue 14, 3).
func TestSalvageRotatedRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *oauth2.Token) *oauth2.Token
	}{
		{"no access token", func(t *oauth2.Token) *oauth2.Token { t.AccessToken = ""; return t }},
		{"already expired", func(t *oauth2.Token) *oauth2.Token {
			t.Expiry, t.ExpiresIn = time.Now().Add(-time.Minute), -60
			return t
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &rotator{}
				var once atomic.Bool
				p.answer = func(tok *oauth2.Token) *oauth2.Token {
					if once.CompareAndSwap(false, true) {
						return tc.spoil(tok)
					}
					return tok
				}
				st := storage.NewMemory()
				seed(t, p, st)
				var ev events
				src := newLedgerSource(t, p, st, ledgerKey, WithHook(ev.hook))
				tok, err := src.Token()
				if err != nil {
					t.Fatalf("Token: %v", err)
				}
				if tok.RefreshToken != p.liveToken() {
					t.Fatalf("served refresh token %q, want the live %q", tok.RefreshToken, p.liveToken())
				}
				if calls, grants, reuse := p.counts(); calls != 2 || grants != 2 || reuse != 0 {
					t.Fatalf("provider: %d calls, %d grants, %d reuse detections; want 2, 2, 0", calls, grants, reuse)
				}
				if ev.count(Salvaged) != 1 {
					t.Fatalf("events: %v, want one salvaged", ev.kinds())
				}
			})
		})
	}
}

// TestLifetimeRecordedOnce: a token without expires_in (client
// credentials through FromTokenSource) keeps the lifetime it was received
// with, so another Source that loads it late still refreshes early (issue
// 14, 5).
func TestLifetimeRecordedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		r := FromTokenSource(func(ctx context.Context) oauth2.TokenSource {
			n := calls.Add(1)
			return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tkat_cc_" + itoaTest(int(n)), Expiry: time.Now().Add(100 * time.Second)})
		})
		st := storage.NewMemory()
		a := newLedgerSource(t, r, st, ledgerKey)
		if _, err := a.Token(); err != nil {
			t.Fatal(err)
		}
		received := time.Now()
		time.Sleep(60 * time.Second)
		b := newLedgerSource(t, r, st, ledgerKey)
		if _, err := b.Token(); err != nil {
			t.Fatal(err)
		}
		got := b.cur.Load()
		// 100 s granted: served until 10 s before expiry, refreshed
		// 25 s (a quarter of the lifetime) before that.
		want := received.Add(100*time.Second - 10*time.Second - 25*time.Second)
		if !got.staleAt.Equal(want) {
			t.Fatalf("stale point of the token loaded 60 s in: %v after receipt, want %v", got.staleAt.Sub(received), want.Sub(received))
		}
		time.Sleep(got.staleAt.Sub(time.Now()))
		b.Token()
		synctest.Wait() // b is in the window: its background refresh runs
		lead := received.Add(100 * time.Second).Sub(time.Now())
		t.Logf("early-refresh lead time for a 100 s client-credentials token loaded 60 s in: %v (window 25 s)", lead)
		if calls.Load() != 2 || lead < 25*time.Second {
			t.Fatalf("refreshes: %d with lead %v, want 2 with at least 25s", calls.Load(), lead)
		}
	})
}

func itoaTest(n int) string { return string(rune('0' + n%10)) }

// TestRetryAfterStopsEveryCaller: while the provider's Retry-After runs, no
// caller, no background refresh and no other Source sharing the store
// sends a request (issue 14, 6).
func TestRetryAfterStopsEveryCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var busy atomic.Bool
		busy.Store(true)
		p := &rotator{before: func(int, context.Context) error {
			if busy.Load() {
				return providerError(http.StatusTooManyRequests, "", http.Header{"Retry-After": {"600"}})
			}
			return nil
		}}
		st := storage.NewMemory()
		seed(t, p, st)
		src := newLedgerSource(t, p, st, ledgerKey)
		var wg sync.WaitGroup
		var backedOff atomic.Int32
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var boe *BackOffError
				if _, err := src.Token(); errors.As(err, &boe) {
					backedOff.Add(1)
				}
			}()
		}
		wg.Wait()
		other := newLedgerSource(t, p, st, ledgerKey)
		var boe *BackOffError
		if _, err := other.Token(); !errors.As(err, &boe) || boe.Until.Sub(time.Now()) < 599*time.Second {
			t.Fatalf("another Source: got %v, want a BackOffError until about 600 s from now", err)
		}
		calls, _, _ := p.counts()
		t.Logf("20 callers and another Source under Retry-After 600: %d token requests", calls)
		if calls != 1 || backedOff.Load() != 20 {
			t.Fatalf("got %d requests and %d BackOffErrors, want 1 and 20", calls, backedOff.Load())
		}
		busy.Store(false)
		time.Sleep(601 * time.Second)
		if _, err := src.Token(); err != nil {
			t.Fatalf("after the back-off: %v", err)
		}
	})
}

// TestRefresherIgnoringItsContext: a Refresher that never returns does not
// hang callers or Close; its late answer is saved if it comes before Close
// (issue 14, 7).
func TestRefresherIgnoringItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		release := make(chan struct{})
		r := RefresherFunc(func(ctx context.Context, tok *oauth2.Token) (*oauth2.Token, error) {
			<-release // ignores ctx
			return p.Refresh(ctx, tok)
		})
		st := storage.NewMemory()
		seed(t, p, st)
		var ev events
		src, err := New(r, st, ledgerKey, WithAttemptTimeout(time.Second), WithHook(ev.hook),
			WithBackOff(func() backoff.BackOff { return &backoff.StopBackOff{} }))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := src.TokenContext(ctx); err == nil {
			t.Fatal("Token with a hung Refresher: got a token")
		}
		// Close while the Refresher is still hung is bounded too.
		hung, err := New(r, storage.NewMemory(), "bob", WithAttemptTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := hung.Put(context.Background(), login("bob")); err != nil {
			t.Fatal(err)
		}
		hung.Invalidate(login("bob"))
		go hung.Token()
		synctest.Wait()
		start := time.Now()
		hung.Close()
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Close with a hung Refresher took %v, want at most the close grace", d)
		}
		close(release) // the hung calls return: their answers arrive late
		synctest.Wait()
		if ev.count(Salvaged) != 1 {
			t.Fatalf("events: %v, want the late answer saved", ev.kinds())
		}
		if rec := stored(t, st, ledgerKey); rec.Token.RefreshToken != p.liveToken() {
			t.Fatalf("stored %q, want the late answer's %q", rec.Token.RefreshToken, p.liveToken())
		}
		start = time.Now()
		if err := src.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v, want no wait", d)
		}
	})
}

// hungRevoker never answers a revocation.
type hungRevoker struct {
	*rotator
	release chan struct{}
}

func (h hungRevoker) Revoke(ctx context.Context, t *oauth2.Token) error { <-h.release; return nil }

// TestRevokeHasItsOwnDeadline: Revoke with no deadline of the caller's own
// and a hung revocation endpoint returns after the revoke timeout, ends the
// session, and lets go of the store's lock (issue 14, 7).
func TestRevokeHasItsOwnDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		st := storage.NewMemory()
		if err := storage.SaveToken(context.Background(), st, ledgerKey, p.login()); err != nil {
			t.Fatal(err)
		}
		h := hungRevoker{p, make(chan struct{})}
		defer close(h.release)
		src := newLedgerSource(t, h, st, ledgerKey, WithRevokeTimeout(3*time.Second))
		start := time.Now()
		err := src.Revoke(context.Background())
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Revoke: got %v, want a deadline error", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("Revoke took %v, want 3s", d)
		}
		if rec := stored(t, st, ledgerKey); rec.State != storage.Ended {
			t.Fatalf("stored: %v, want ended", rec)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		unlock, err := st.Lock(ctx, ledgerKey)
		if err != nil {
			t.Fatalf("the store's lock after Revoke: %v", err)
		}
		unlock()
	})
}

// TestInvalidateDuringAdoption: a token refused by a server while a
// refresh adopts that same token from the store is not served again. The
// served copy goes stale (a large jitter) before the stored copy does, so
// that the background refresh finds the stored one still fresh.
func TestInvalidateDuringAdoption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &rotator{}
		st := newHookStore()
		if err := storage.SaveToken(context.Background(), st, ledgerKey, p.login()); err != nil {
			t.Fatal(err)
		}
		src := newLedgerSource(t, p, st, ledgerKey)
		var big atomic.Bool
		big.Store(true)
		src.cfg.jitter = func(n int64) int64 {
			if big.Load() {
				return n - 1
			}
			return 0
		}
		served, err := src.Token()
		if err != nil {
			t.Fatal(err)
		}
		big.Store(false)
		// The next load finds the same token in the store; a request that
		// used it is refused just then.
		var once atomic.Bool
		st.setLoad(func() error {
			if once.CompareAndSwap(false, true) {
				src.Invalidate(served)
			}
			return nil
		})
		time.Sleep(54 * time.Minute) // stale as served, fresh as stored
		src.Token()
		synctest.Wait()
		if !once.Load() {
			t.Fatal("no refresh read the store")
		}
		got, err := src.Token()
		if err != nil || got.AccessToken == served.AccessToken {
			t.Fatalf("after Invalidate during adoption: got %v, %v; want a new token", got, err)
		}
	})
}
