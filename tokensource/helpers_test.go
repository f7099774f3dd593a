package tokensource

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeProvider is a Refresher that issues numbered tokens and counts calls.
type fakeProvider struct {
	clock *clock
	life  time.Duration
	delay time.Duration
	calls atomic.Int64
	fail  func(n int64, t *oauth2.Token) error // if set and non-nil result, the call fails
}

func (p *fakeProvider) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	n := p.calls.Add(1)
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
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

func (p *fakeProvider) issue(n int64) *oauth2.Token {
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	return &oauth2.Token{
		AccessToken:  "tkat_fake_" + itoa(n),
		RefreshToken: "tkrt_fake_" + itoa(n),
		TokenType:    "Bearer",
		Expiry:       p.now().Add(life),
		ExpiresIn:    int64(life / time.Second),
	}
}

func (p *fakeProvider) now() time.Time {
	if p.clock == nil {
		return time.Now()
	}
	return p.clock.Now()
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

// newTestSource returns a Source on a fake clock with jitter off.
func newTestSource(t *testing.T, r Refresher, store storage.Store, c *clock, opts ...Option) *Source {
	t.Helper()
	s, err := New(r, store, "user@example", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if c != nil {
		s.cfg.now = c.Now
	}
	s.cfg.jitter = func(int64) int64 { return 0 }
	t.Cleanup(func() { s.Close() })
	return s
}

// faultyStore wraps a Store with failures on demand.
type faultyStore struct {
	storage.Store
	saveErr  atomic.Pointer[error]
	saves    atomic.Int64
	loadHook func()
}

func (f *faultyStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	f.saves.Add(1)
	if p := f.saveErr.Load(); p != nil && *p != nil {
		return *p
	}
	return f.Store.Save(ctx, key, t)
}

func (f *faultyStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	if f.loadHook != nil {
		f.loadHook()
	}
	return f.Store.Load(ctx, key)
}

func (f *faultyStore) failSaves(err error) { f.saveErr.Store(&err) }

var errDiskFull = errors.New("storage: write: no space left on device")
