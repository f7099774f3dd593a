package tokensource

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// Tests whose logic depends on time run inside a synctest bubble, where
// time.Now, timers and contexts follow the bubble's fake clock: the helpers
// below read time.Now and never keep a clock of their own. Everything a
// bubbled test uses (stores, Sources, providers) must be made inside the
// bubble, so that waiting on it counts as durably blocked.

// fakeProvider is a Refresher that issues numbered tokens and counts calls.
// Its tokens expire life after the call (one hour if life is 0), on
// time.Now: inside a bubble, the fake clock.
type fakeProvider struct {
	life  time.Duration
	delay time.Duration                        // each call takes this long, unless its ctx ends first
	fail  func(n int64, t *oauth2.Token) error // if set and non-nil result, the call fails
	calls atomic.Int64

	mu    sync.Mutex  // guards times
	times []time.Time // when each call began
}

func (p *fakeProvider) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	n := p.calls.Add(1)
	p.mu.Lock()
	p.times = append(p.times, time.Now())
	p.mu.Unlock()
	if p.delay > 0 {
		timer := time.NewTimer(p.delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
	if p.fail != nil {
		if err := p.fail(n, t); err != nil {
			return nil, err
		}
	}
	return p.issue(n), nil
}

// callTimes returns when each call began.
func (p *fakeProvider) callTimes() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.times)
}

func (p *fakeProvider) issue(n int64) *oauth2.Token {
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	return &oauth2.Token{
		AccessToken:  "tkat_fake_" + itoa(n),
		RefreshToken: "tkrt_fake_" + itoa(n),
		TokenType:    "Bearer",
		Expiry:       time.Now().Add(life),
		ExpiresIn:    int64(life / time.Second),
	}
}

func itoa(n int64) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}

// providerError builds the error a token endpoint answer turns into.
func providerError(status int, code string, header http.Header) error {
	if header == nil {
		header = http.Header{}
	}
	return &oauth2.RetrieveError{
		Response:  &http.Response{StatusCode: status, Status: itoa(int64(status)) + " " + http.StatusText(status), Header: header},
		ErrorCode: code,
	}
}

// quickBackOff retries n times with no wait worth mentioning.
func quickBackOff(n uint64) Option {
	return WithBackOff(func() backoff.BackOff {
		return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Millisecond), n)
	})
}

// testKey is the store key of the Sources newTestSource makes.
const testKey = "user@example"

// newTestSource returns a Source for testKey with jitter off, closed when
// the test ends (inside the bubble, when made in one).
func newTestSource(t *testing.T, r Refresher, store storage.Store, opts ...Option) *Source {
	t.Helper()
	s, err := New(r, store, testKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.jitter = func(int64) int64 { return 0 }
	t.Cleanup(func() { s.Close() })
	return s
}

// storedRecord returns the record stored under key, failing the test when
// there is none.
func storedRecord(t testing.TB, st storage.Store, key string) *storage.Record {
	t.Helper()
	r, err := st.Load(context.Background(), key)
	if err != nil {
		t.Fatalf("stored record of %q: %v", key, err)
	}
	return r
}

// storedToken returns the token of the live session stored under key,
// failing the test when there is none or it ended.
func storedToken(t testing.TB, st storage.Store, key string) *oauth2.Token {
	t.Helper()
	tok, err := storage.LoadToken(context.Background(), st, key)
	if err != nil {
		t.Fatalf("stored token of %q: %v", key, err)
	}
	return tok
}

// wantEnded fails the test unless key holds an ended record of generation
// gen whose reason is reason.
func wantEnded(t testing.TB, st storage.Store, key string, gen uint64, reason string) {
	t.Helper()
	r := storedRecord(t, st, key)
	if r.State != storage.Ended || r.Generation != gen || r.Reason != reason {
		t.Errorf("stored record: got %v, want generation %d, ended, reason %q", r, gen, reason)
	}
}

// faultyStore is a Memory store, Locker included, whose saves and loads
// fail on demand.
type faultyStore struct {
	*storage.Memory
	saveErr atomic.Pointer[error]
	loadErr atomic.Pointer[error]
	saves   atomic.Int64 // Save calls, failed ones included
}

func newFaultyStore() *faultyStore { return &faultyStore{Memory: storage.NewMemory()} }

func (f *faultyStore) Save(ctx context.Context, key string, r *storage.Record) error {
	f.saves.Add(1)
	if p := f.saveErr.Load(); p != nil && *p != nil {
		return *p
	}
	return f.Memory.Save(ctx, key, r)
}

func (f *faultyStore) Load(ctx context.Context, key string) (*storage.Record, error) {
	if p := f.loadErr.Load(); p != nil && *p != nil {
		return nil, *p
	}
	return f.Memory.Load(ctx, key)
}

// failSaves makes every Save return err; nil ends the failures.
func (f *faultyStore) failSaves(err error) { f.saveErr.Store(&err) }

// failLoads makes every Load return err; nil ends the failures.
func (f *faultyStore) failLoads(err error) { f.loadErr.Store(&err) }

var errDiskFull = errors.New("storage: write: no space left on device")

// eventLog records what a Source's hook reports. It is safe for concurrent
// use; hook is the function to pass to WithHook.
type eventLog struct {
	mu      sync.Mutex    // guards evs and changed
	evs     []Event       //
	changed chan struct{} // closed and replaced on every event
}

func (l *eventLog) hook(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// events returns the events so far.
func (l *eventLog) events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// count returns how many events of kind were reported.
func (l *eventLog) count(kind EventKind) int {
	n := 0
	for _, e := range l.events() {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// await waits until n events of kind were reported. It is for tests on
// real time, where a background refresh cannot be waited for with
// synctest.Wait; the minute it allows is a guard against hanging, not a
// measurement.
func (l *eventLog) await(t testing.TB, kind EventKind, n int) {
	t.Helper()
	guard := time.NewTimer(time.Minute)
	defer guard.Stop()
	for {
		l.mu.Lock()
		got := 0
		for _, e := range l.evs {
			if e.Kind == kind {
				got++
			}
		}
		if got >= n {
			l.mu.Unlock()
			return
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-guard.C:
			t.Fatalf("%d %v events after a minute, want %d", got, kind, n)
		}
	}
}
