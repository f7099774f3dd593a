package tokensource

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/storage"
)

// putAt opens a Source for key and Puts p's login for it, with its expiry
// moved to expiry from now; the lifetime granted stays p's.
func putAt(t *testing.T, p *fleet, store storage.Store, key string, expiry time.Duration, opts ...Option) *Source {
	t.Helper()
	s, err := New(p, store, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tok := p.login(key)
	tok.Expiry = time.Now().Add(expiry)
	if err := s.Put(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLimits: many callers with expired tokens at once; the provider sees
// no more requests at once, nor per second, than the Limits allow.
func TestLimits(t *testing.T) {
	cases := []struct {
		name       string
		limits     func() *Limits // made inside the bubble
		latency    time.Duration
		wantPeak   int // most requests at once
		wantSecond int // most requests within one second
	}{
		{name: "no limits", limits: func() *Limits { return nil }, latency: time.Second, wantPeak: 40, wantSecond: 40},
		{name: "cap", limits: func() *Limits { return NewLimits(3) }, latency: time.Second, wantPeak: 3, wantSecond: 3},
		{name: "rate", limits: func() *Limits { return NewLimits(0).Rate(5, 1) }, latency: 100 * time.Millisecond, wantPeak: 1, wantSecond: 5},
		{name: "cap and rate", limits: func() *Limits { return NewLimits(2).Rate(10, 1) }, latency: time.Second, wantPeak: 2, wantSecond: 2},
		{name: "burst", limits: func() *Limits { return NewLimits(0).Rate(5, 10) }, latency: 100 * time.Millisecond, wantPeak: 10, wantSecond: 14},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 40
				p := &fleet{latency: tc.latency}
				store := storage.NewMemory()
				limits := tc.limits()
				srcs := make([]*Source, n)
				for i := range srcs {
					srcs[i] = putAt(t, p, store, fmt.Sprintf("user%04d", i), -time.Minute, WithLimits(limits))
				}
				var wg sync.WaitGroup
				for _, s := range srcs {
					wg.Go(func() {
						if _, err := s.TokenContext(context.Background()); err != nil {
							t.Errorf("%s: %v", s.key, err)
						}
					})
				}
				wg.Wait()
				calls, peak, _ := p.stats()
				if calls != n {
					t.Errorf("requests: got %d, want %d", calls, n)
				}
				if peak != tc.wantPeak {
					t.Errorf("requests at once: got %d, want %d", peak, tc.wantPeak)
				}
				if got := p.busiestSecond(); got != tc.wantSecond {
					t.Errorf("requests within one second: got %d, want %d", got, tc.wantSecond)
				}
			})
		})
	}
}

// TestLimitsNeverDelayValidTokens: while the only slot is taken by a
// request that does not end, callers with fresh and stale tokens get them
// at once; a caller whose token expired waits until its context ends.
func TestLimitsNeverDelayValidTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fleet{refreshBusy: make(chan struct{})}
		limits := NewLimits(1)
		store := storage.NewMemory()
		ctx := context.Background()

		holder := putAt(t, p, store, "holder", -time.Minute, WithLimits(limits))
		go holder.TokenContext(ctx)
		synctest.Wait()
		if calls, _, _ := p.stats(); calls != 1 {
			t.Fatalf("requests: got %d, want 1 (the slot's holder)", calls)
		}

		fresh := putAt(t, p, store, "fresh", time.Hour, WithLimits(limits))
		stale := putAt(t, p, store, "stale", 2*time.Minute, WithLimits(limits))
		for _, s := range []*Source{fresh, stale} {
			start := time.Now()
			tok, err := s.TokenContext(ctx)
			if err != nil || tok == nil {
				t.Fatalf("%s: %v", s.key, err)
			}
			if waited := time.Since(start); waited != 0 {
				t.Errorf("%s: waited %v for a valid token", s.key, waited)
			}
		}

		expired := putAt(t, p, store, "expired", -time.Minute, WithLimits(limits))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := expired.TokenContext(wctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("expired: got %v, want the caller's deadline", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("expired: waited %v, want 5s (its context)", waited)
		}
		if calls, _, _ := p.stats(); calls != 1 {
			t.Errorf("requests while the slot was taken: got %d, want 1", calls)
		}

		close(p.refreshBusy)
		synctest.Wait()
		for _, s := range []*Source{holder, stale, expired} {
			if got := p.requests(s.key); got != 1 {
				t.Errorf("%s: requests once the slot was free: got %d, want 1", s.key, got)
			}
		}
	})
}

// TestLimitsNilAndZero: a nil or zero Limits limits nothing.
func TestLimitsNilAndZero(t *testing.T) {
	for _, l := range []*Limits{nil, {}, NewLimits(0)} {
		release, err := l.acquire(context.Background())
		if err != nil {
			t.Fatalf("acquire %+v: %v", l, err)
		}
		release()
	}
	var nilLimits *Limits
	if r := nilLimits.Rate(1, 0); r.rate == nil || r.rate.Burst() != 1 || r.slots != nil {
		t.Errorf("Rate of nil Limits: got %+v, want a rate limit with burst 1 and no cap", r)
	}
}
