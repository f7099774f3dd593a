package tokensource

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// registered returns how many functions wait for sig to fire.
func registered(sig *stopSignal) int {
	sig.mu.Lock()
	defer sig.mu.Unlock()
	n := 0
	for a := sig.funcs; a != nil; a = a.next {
		n++
	}
	return n
}

// TestStopSignalFreesRegistrations: whatever registered with a signal and
// ended — contexts derived with the context package, context.AfterFunc,
// AfterFunc, withDeadline — leaves nothing in it, in whatever order it
// ended; what has not ended stays registered.
func TestStopSignalFreesRegistrations(t *testing.T) {
	var sig stopSignal
	const n = 100
	var ends []func()
	for range n {
		_, cancel := context.WithCancel(&sig)
		ends = append(ends, cancel)
		_, cancel = context.WithTimeout(&sig, time.Hour)
		ends = append(ends, cancel)
		stopContext := context.AfterFunc(&sig, func() {})
		ends = append(ends, func() { stopContext() })
		stop := sig.AfterFunc(func() {})
		ends = append(ends, func() { stop() })
		_, cancel = sig.withDeadline(time.Now().Add(time.Hour))
		ends = append(ends, cancel)
	}
	if got, want := registered(&sig), len(ends); got != want {
		t.Fatalf("registered before any ended: got %d, want %d", got, want)
	}
	// First every other one, then the rest from the end: from the middle
	// of the list, its head and its tail.
	for i := 0; i < len(ends); i += 2 {
		ends[i]()
	}
	if got, want := registered(&sig), len(ends)/2; got != want {
		t.Fatalf("registered after half ended: got %d, want %d", got, want)
	}
	for i := len(ends) - 1; i >= 0; i-- {
		if i%2 == 1 {
			ends[i]()
		}
	}
	if got := registered(&sig); got != 0 || sig.funcs != nil {
		t.Fatalf("registered after all ended: got %d, want 0", got)
	}
}

// TestStopSignalFire: fire ends, before it returns, every context derived
// from the signal, with context.Canceled as error and cause, and runs
// every function registered; a registration made after it still runs;
// stopping one after it reports false.
func TestStopSignalFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sig stopSignal
		if sig.Err() != nil {
			t.Fatalf("Err before fire: got %v, want nil", sig.Err())
		}
		derived, cancel := context.WithCancel(&sig)
		defer cancel()
		timed, cancelTimed := sig.withDeadline(time.Now().Add(time.Hour))
		defer cancelTimed()
		ran := 0
		stop := sig.AfterFunc(func() { ran++ })
		done := sig.Done()

		sig.fire()
		for name, ctx := range map[string]context.Context{"signal": &sig, "derived": derived, "withDeadline": timed} {
			if err := ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Err after fire: got %v, want context.Canceled", name, err)
			}
			if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Cause after fire: got %v, want context.Canceled", name, err)
			}
			select {
			case <-ctx.Done():
			default:
				t.Errorf("%s: Done not closed after fire", name)
			}
		}
		select {
		case <-done:
		default:
			t.Error("the done channel made before fire is not closed")
		}
		if ran != 1 {
			t.Errorf("AfterFunc functions run by fire: got %d, want 1", ran)
		}
		if stop() {
			t.Error("stop after fire: got true, want false")
		}
		sig.fire() // again: nothing
		if ran != 1 {
			t.Errorf("AfterFunc functions run after a second fire: got %d, want 1", ran)
		}

		late := make(chan struct{})
		if sig.AfterFunc(func() { close(late) })() {
			t.Error("stop of a registration made after fire: got true, want false")
		}
		<-late
		after, cancelAfter := context.WithCancel(&sig)
		defer cancelAfter()
		if after.Err() == nil {
			t.Error("a context derived after fire is not done")
		}
		timedAfter, cancelTimedAfter := sig.withDeadline(time.Now().Add(time.Hour))
		defer cancelTimedAfter()
		if timedAfter.Err() == nil {
			t.Error("withDeadline after fire: the context is not done")
		}
		if registered(&sig) != 0 {
			t.Errorf("registered after fire: got %d, want 0", registered(&sig))
		}
	})
}

// TestCloseCancelsWorkThatSentNothing: Close ends at once a refresh that
// waits on the stop signal without having sent anything — for the store's
// lock, or between two attempts — and its caller is told ErrClosed.
func TestCloseCancelsWorkThatSentNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, st *storage.Memory, p *fakeProvider) []Option
	}{
		{"waiting for the store's lock", func(t *testing.T, st *storage.Memory, p *fakeProvider) []Option {
			unlock, err := st.Lock(context.Background(), testKey) // held by another Source
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unlock() })
			return []Option{WithLockTimeout(time.Hour)}
		}},
		{"waiting between attempts", func(t *testing.T, st *storage.Memory, p *fakeProvider) []Option {
			p.fail = func(n int64, _ *oauth2.Token) error {
				if n == 1 {
					return providerError(http.StatusServiceUnavailable, "", nil)
				}
				return nil
			}
			return []Option{WithBackOff(func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Minute) })}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := storage.NewMemory()
				p := &fakeProvider{}
				if err := storage.SaveToken(context.Background(), st, testKey, p.issue(0)); err != nil {
					t.Fatal(err)
				}
				expireIn(t, st, testKey, -time.Minute)
				opts := append(tt.setup(t, st, p), WithRefreshTimeout(2*time.Hour), WithCloseGrace(time.Minute))
				s := newTestSource(t, p, st, opts...)
				got := make(chan error, 1)
				go func() {
					_, err := s.Token()
					got <- err
				}()
				synctest.Wait() // the refresh waits
				start := time.Now()
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				if waited := time.Since(start); waited != 0 {
					t.Errorf("Close waited %v, want 0: the refresh had sent nothing", waited)
				}
				if err := <-got; !errors.Is(err, ErrClosed) {
					t.Errorf("Token: got %v, want ErrClosed", err)
				}
			})
		})
	}
}

// TestSourceKeepsNothingOfItsWork: after refreshes in the foreground and
// the background, a Put and a Revoke, a Source keeps no refresh, and its
// stop signals hold no registration and no done channel: an idle Source
// costs the same however much it has done.
func TestSourceKeepsNothingOfItsWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := storage.NewMemory()
		p := &fakeProvider{}
		if err := storage.SaveToken(context.Background(), st, testKey, p.issue(0)); err != nil {
			t.Fatal(err)
		}
		expireIn(t, st, testKey, -time.Minute)
		s := newTestSource(t, p, st)
		if _, err := s.Token(); err != nil { // a refresh the caller waits for
			t.Fatal(err)
		}
		time.Sleep(57 * time.Minute) // into the early-refresh window
		if _, err := s.Token(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // for the background refresh
		if err := s.Put(context.Background(), p.issue(100)); err != nil {
			t.Fatal(err)
		}
		if err := s.Revoke(context.Background()); !errors.Is(err, ErrNoRevocationEndpoint) {
			t.Fatalf("Revoke: got %v, want ErrNoRevocationEndpoint", err)
		}
		if got := p.calls.Load(); got != 2 {
			t.Fatalf("refreshes: got %d, want 2", got)
		}
		s.mu.Lock()
		if s.call != nil {
			t.Error("the last refresh is kept after it ended")
		}
		s.mu.Unlock()
		for name, sig := range map[string]*stopSignal{"stopped": &s.stopped, "hard": &s.hard} {
			if n := registered(sig); n != 0 {
				t.Errorf("%s: registrations left: got %d, want 0", name, n)
			}
			if sig.done != nil {
				t.Errorf("%s: a done channel was made", name)
			}
		}
	})
}
