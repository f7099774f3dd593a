package tokensource

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// rotator is a provider that rotates refresh tokens on every use and
// revokes the whole grant when a spent one is presented again, as Okta,
// Auth0 and node oidc-provider do.
type rotator struct {
	life time.Duration // of access tokens; an hour if zero

	mu      sync.Mutex // guards the fields below
	n       int        // tokens issued
	live    string     // the refresh token that is valid now
	spent   map[string]bool
	revoked bool                                      // the grant is dead
	calls   int                                       // Refresh calls, whatever their outcome
	grants  int                                       // refreshes processed (tokens rotated)
	reuse   int                                       // spent refresh tokens presented
	revokes int                                       // Revoke calls
	before  func(call int, ctx context.Context) error // if set, runs first; an error is the answer
	after   func(call int, ctx context.Context) error // if set, runs once the refresh was processed; an error loses the answer
	answer  func(t *oauth2.Token) *oauth2.Token       // if set, rewrites a successful answer
}

// login starts a new grant and returns its first token.
func (p *rotator) login() *oauth2.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revoked = false
	return p.issue()
}

// issue rotates; p.mu is held.
func (p *rotator) issue() *oauth2.Token {
	if p.spent == nil {
		p.spent = make(map[string]bool)
	}
	if p.live != "" {
		p.spent[p.live] = true
	}
	p.n++
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	p.live = fmt.Sprintf("tkrt_rot_%d", p.n)
	return &oauth2.Token{
		AccessToken:  fmt.Sprintf("tkat_rot_%d", p.n),
		RefreshToken: p.live,
		TokenType:    "Bearer",
		Expiry:       time.Now().Add(life),
		ExpiresIn:    int64(life / time.Second),
	}
}

func (p *rotator) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	p.mu.Lock()
	p.calls++
	call, before := p.calls, p.before
	p.mu.Unlock()
	if before != nil {
		if err := before(call, ctx); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	switch {
	case t == nil || t.RefreshToken == "":
		p.mu.Unlock()
		return nil, providerError(http.StatusBadRequest, "invalid_request", nil)
	case p.revoked || t.RefreshToken != p.live:
		if p.spent[t.RefreshToken] {
			p.reuse++
			p.revoked = true
		}
		p.mu.Unlock()
		return nil, providerError(http.StatusBadRequest, "invalid_grant", nil)
	}
	p.grants++
	tok := p.issue()
	after, answer := p.after, p.answer
	p.mu.Unlock()
	if after != nil {
		if err := after(call, ctx); err != nil {
			return nil, err
		}
	}
	if answer != nil {
		return answer(tok), nil
	}
	return tok, nil
}

func (p *rotator) Revoke(ctx context.Context, t *oauth2.Token) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.revokes++
	p.revoked = true
	return nil
}

// counts returns calls, grants processed and reuse detections.
func (p *rotator) counts() (calls, grants, reuse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.grants, p.reuse
}

// liveToken reports the refresh token the provider holds valid.
func (p *rotator) liveToken() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// hookStore is a Memory store whose loads and saves can be made to fail or
// wait.
type hookStore struct {
	*storage.Memory
	mu     sync.Mutex                    // guards the hooks
	onSave func(r *storage.Record) error // runs before each save; an error is returned instead
	onLoad func() error                  // runs before each load; an error is returned instead
}

func newHookStore() *hookStore { return &hookStore{Memory: storage.NewMemory()} }

func (h *hookStore) setSave(f func(r *storage.Record) error) {
	h.mu.Lock()
	h.onSave = f
	h.mu.Unlock()
}
func (h *hookStore) setLoad(f func() error) { h.mu.Lock(); h.onLoad = f; h.mu.Unlock() }

func (h *hookStore) Save(ctx context.Context, key string, r *storage.Record) error {
	h.mu.Lock()
	f := h.onSave
	h.mu.Unlock()
	if f != nil {
		if err := f(r); err != nil {
			return err
		}
	}
	return h.Memory.Save(ctx, key, r)
}

func (h *hookStore) Load(ctx context.Context, key string) (*storage.Record, error) {
	h.mu.Lock()
	f := h.onLoad
	h.mu.Unlock()
	if f != nil {
		if err := f(); err != nil {
			return nil, err
		}
	}
	return h.Memory.Load(ctx, key)
}

// stored returns the record under key, failing the test if there is none.
func stored(t *testing.T, s storage.Store, key string) *storage.Record {
	t.Helper()
	r, err := s.Load(context.Background(), key)
	if err != nil {
		t.Fatalf("load %q: %v", key, err)
	}
	return r
}

// newLedgerSource returns a Source for key with jitter off, closed at the
// end of the test.
func newLedgerSource(t *testing.T, r Refresher, store storage.Store, key string, opts ...Option) *Source {
	t.Helper()
	s, err := New(r, store, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.jitter = func(int64) int64 { return 0 }
	t.Cleanup(func() { s.Close() })
	return s
}

// expireIn saves the stored session's token again with its expiry moved to
// d from now, as if time had passed, keeping the refresh token.
func expireIn(t *testing.T, s storage.Store, key string, d time.Duration) {
	t.Helper()
	r := stored(t, s, key)
	r.Token.Expiry = time.Now().Add(d)
	r.Generation++
	if err := s.Save(context.Background(), key, r); err != nil {
		t.Fatal(err)
	}
}
