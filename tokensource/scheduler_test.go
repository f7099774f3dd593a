package tokensource

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/bubble"
	"github.com/tokenkeep/tokenkeep/storage"
)

const day = 24 * time.Hour

// TestSchedulerRefreshesWithoutCallers: sessions nobody asks for are
// refreshed once per lifetime each, by one goroutine for all of them.
func TestSchedulerRefreshesWithoutCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const few, many = 10, 300
		p := &fleet{}
		sc := &Scheduler{}
		store := storage.NewMemory()
		before := bubble.Goroutines()
		srcs := openFleet(t, p, store, few, WithScheduler(sc))
		synctest.Wait()
		gFew := bubble.Goroutines()
		if extra := gFew - before; extra > 1 {
			t.Errorf("goroutines added by %d idle sessions: %d, want at most 1 (the scheduler's)", few, extra)
		}
		for i := few; i < many; i++ {
			key := fmt.Sprintf("user%04d", i)
			s, err := New(p, store, key, WithScheduler(sc))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if err := s.Put(context.Background(), p.login(key)); err != nil {
				t.Fatal(err)
			}
			srcs = append(srcs, s)
		}
		synctest.Wait()
		if gMany := bubble.Goroutines(); gMany > gFew {
			t.Errorf("goroutines with %d idle sessions: %d, more than the %d with %d", many, gMany, gFew, few)
		}
		if got := sc.queued(); got != many {
			t.Errorf("queued: got %d, want %d", got, many)
		}

		// Lifetimes of one hour, stale 5 min 10 s before expiry minus up
		// to 75 s of jitter: three refreshes in three hours.
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		for _, s := range srcs {
			if got := p.requests(s.key); got != 3 {
				t.Errorf("%s: requests in 3 h: got %d, want 3", s.key, got)
			}
			if st := s.cur.Load(); !time.Now().Before(st.staleAt) {
				t.Errorf("%s: token not fresh after 3 h: stale since %v", s.key, time.Since(st.staleAt))
			}
		}
		if calls, _, _ := p.stats(); calls != 3*many {
			t.Errorf("provider requests: got %d, want %d", calls, 3*many)
		}
		for _, s := range srcs {
			s.Close()
		}
		if got := sc.queued(); got != 0 {
			t.Errorf("queued after Close: got %d, want 0", got)
		}
		synctest.Wait()
		if extra := bubble.Goroutines() - before; extra > 0 {
			t.Errorf("goroutines left after every Source closed: %d, want 0", extra)
		}
	})
}

// TestSchedulerKeepAlive: a refresh token with an idle lifetime is redeemed
// before it dies, though nobody asks for a token for a month.
func TestSchedulerKeepAlive(t *testing.T) {
	const month = 30 * day
	cases := []struct {
		name       string
		life       time.Duration // of access tokens
		statesIdle bool          // the provider sends refresh_expires_in
		opts       []Option
		want       int // requests in the month, every 3/4 of 7 days
		wantErr    error
	}{
		{name: "configured idle lifetime", life: time.Hour,
			opts: []Option{WithEarlyRefresh(0), WithKeepAlive(7 * day)}, want: 5},
		{name: "refresh_expires_in from the provider", life: time.Hour, statesIdle: true,
			opts: []Option{WithEarlyRefresh(0), WithKeepAlive(0)}, want: 5},
		{name: "provider's value wins over the configured one", life: time.Hour, statesIdle: true,
			opts: []Option{WithEarlyRefresh(0), WithKeepAlive(30 * day)}, want: 5},
		{name: "access token outlives the refresh token's idle lifetime", life: 60 * day,
			opts: []Option{WithKeepAlive(7 * day)}, want: 5},
		{name: "off: the refresh token dies", life: time.Hour,
			opts: []Option{WithEarlyRefresh(0)}, want: 0, wantErr: ErrReauthRequired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &fleet{life: tc.life, idle: 7 * day, statesIdle: tc.statesIdle}
				sc := &Scheduler{}
				src := openFleet(t, p, storage.NewMemory(), 1, append(tc.opts, WithScheduler(sc))...)[0]
				time.Sleep(month)
				synctest.Wait()
				if got := p.requests(src.key); got != tc.want {
					t.Errorf("requests in a month without callers: got %d, want %d", got, tc.want)
				}
				_, err := src.TokenContext(context.Background())
				switch {
				case tc.wantErr == nil && err != nil:
					t.Errorf("token after a month: %v", err)
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Errorf("token after a month: got %v, want %v", err, tc.wantErr)
				}
				p.mu.Lock()
				died := p.died
				p.mu.Unlock()
				if want := tc.wantErr != nil; (died > 0) != want {
					t.Errorf("refresh tokens that died unused: %d", died)
				}
			})
		})
	}
}

// TestSchedulerClockJump: when the wall clock moves apart from the
// monotonic one, every due time is worked out again.
func TestSchedulerClockJump(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fleet{}
		sc := &Scheduler{}
		srcs := openFleet(t, p, storage.NewMemory(), 20, WithScheduler(sc))
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		jumps := func() int { sc.mu.Lock(); defer sc.mu.Unlock(); return sc.jumps }
		if got := jumps(); got != 0 {
			t.Fatalf("jumps detected without a jump: %d", got)
		}

		// A due time worked out on the other side of the jump: one Source
		// looks due in a year. Then the wall clock gains an hour on the
		// monotonic clock, as on a machine that wakes from sleep.
		lost := srcs[7]
		sc.mu.Lock()
		lost.slot.when = time.Now().Add(365 * day).UnixNano()
		heap.Fix(&sc.queue, lost.slot.pos-1)
		sc.skew = time.Hour
		sc.mu.Unlock()

		time.Sleep(maxSleep)
		synctest.Wait()
		if got := jumps(); got != 1 {
			t.Fatalf("jumps detected: got %d, want 1", got)
		}
		sc.mu.Lock()
		got := lost.slot.when
		want, _ := lost.due()
		sc.mu.Unlock()
		if got != want {
			t.Errorf("due time after the jump: got %v, want %v", time.Unix(0, got), time.Unix(0, want))
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		for _, s := range srcs {
			if got := p.requests(s.key); got != 1 {
				t.Errorf("%s: requests in the first hour: got %d, want 1", s.key, got)
			}
		}
		if got := jumps(); got != 1 {
			t.Errorf("jumps detected: got %d, want 1", got)
		}
	})
}

// TestSchedulerRespectsBackOff: after a 429 with Retry-After, the next
// scheduled request waits for exactly that long.
func TestSchedulerRespectsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fleet{failFirst: providerError(http.StatusTooManyRequests, "", http.Header{"Retry-After": {"120"}})}
		src := openFleet(t, p, storage.NewMemory(), 1, WithScheduler(&Scheduler{}))[0]
		time.Sleep(time.Hour)
		synctest.Wait()
		p.mu.Lock()
		calls := append([]time.Time(nil), p.calls...)
		p.mu.Unlock()
		if len(calls) != 2 {
			t.Fatalf("requests: got %d, want 2 (the refused one and the one after the back-off)", len(calls))
		}
		if got := calls[1].Sub(calls[0]); got != 2*time.Minute {
			t.Errorf("second request after: got %v, want 2m0s (Retry-After)", got)
		}
		if st := src.cur.Load(); !time.Now().Before(st.staleAt) {
			t.Errorf("token not fresh after the back-off")
		}
	})
}

// TestSchedulerMaxRunning: sessions that all turn stale at once are
// refreshed MaxRunning at a time, each once, with goroutines bounded by
// MaxRunning rather than by the sessions.
func TestSchedulerMaxRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, running = 50, 4
		p := &fleet{latency: time.Second, countG: true}
		sc := &Scheduler{MaxRunning: running}
		store := storage.NewMemory()
		before := bubble.Goroutines()
		for i := range n {
			key := fmt.Sprintf("user%04d", i)
			s, err := New(p, store, key, WithScheduler(sc))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			tok := p.login(key)
			tok.Expiry = time.Now().Add(2 * time.Minute) // granted an hour, stale already
			if err := s.Put(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		calls, peak, peakG := p.stats()
		if calls != n {
			t.Errorf("requests: got %d, want %d", calls, n)
		}
		if peak != running {
			t.Errorf("requests at once: got %d, want %d", peak, running)
		}
		// The scheduler, and per refresh its goroutine and the attempt's.
		if extra := peakG - before; extra > 1+2*running {
			t.Errorf("goroutines during the storm: %d more than before, want at most %d", extra, 1+2*running)
		}
	})
}

// queued returns the number of Sources waiting in sc's queue.
func (sc *Scheduler) queued() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.queue)
}
