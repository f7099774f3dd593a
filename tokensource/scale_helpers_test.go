package tokensource

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/bubble"
	"github.com/tokenkeep/tokenkeep/storage"
)

// fleet is a provider for many sessions at once. It rotates refresh tokens,
// ends one that was left unused for its idle lifetime, and records every
// request: when, for which session, how many at once.
type fleet struct {
	life        time.Duration // of access tokens; an hour if zero
	idle        time.Duration // a refresh token unused this long dies; 0 for never
	statesIdle  bool          // answers carry refresh_expires_in
	latency     time.Duration // each request takes this long
	failFirst   error         // if set, the answer to the first request
	refreshBusy chan struct{} // if set, each request waits for a receive

	mu      sync.Mutex
	n       int
	issued  map[string]time.Time // live refresh token → when issued or last used
	owner   map[string]string    // refresh token → session key
	calls   []time.Time          // every request
	perKey  map[string]int       // requests per session
	died    int                  // refresh tokens presented after their idle lifetime
	running int                  // requests under way
	peak    int                  // most requests under way at once
	countG  bool                 // count goroutines at each request, into peakG (the caller is in a synctest bubble)
	peakG   int                  // most goroutines in the bubble seen by a request
}

// login starts a session for key and returns its first token.
func (p *fleet) login(key string) *oauth2.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issue(key)
}

// issue makes a token for key; p.mu is held.
func (p *fleet) issue(key string) *oauth2.Token {
	if p.issued == nil {
		p.issued, p.owner, p.perKey = map[string]time.Time{}, map[string]string{}, map[string]int{}
	}
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	p.n++
	rt := fmt.Sprintf("tkrt_fleet_%d", p.n)
	p.issued[rt], p.owner[rt] = time.Now(), key
	t := &oauth2.Token{AccessToken: fmt.Sprintf("tkat_fleet_%d", p.n), RefreshToken: rt, TokenType: "Bearer",
		Expiry: time.Now().Add(life), ExpiresIn: int64(life / time.Second)}
	if p.statesIdle {
		t = t.WithExtra(map[string]any{"refresh_expires_in": float64(p.idle / time.Second)})
	}
	return t
}

func (p *fleet) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	p.mu.Lock()
	p.calls = append(p.calls, time.Now())
	p.running++
	p.peak = max(p.peak, p.running)
	if p.countG {
		p.peakG = max(p.peakG, bubble.Goroutines())
	}
	first, busy := len(p.calls) == 1, p.refreshBusy
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running--
		p.mu.Unlock()
	}()
	if busy != nil {
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p.latency > 0 {
		time.Sleep(p.latency)
	}
	if first && p.failFirst != nil {
		return nil, p.failFirst
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t == nil {
		return nil, providerError(http.StatusBadRequest, "invalid_request", nil)
	}
	used, ok := p.issued[t.RefreshToken]
	if !ok {
		return nil, providerError(http.StatusBadRequest, "invalid_grant", nil)
	}
	key := p.owner[t.RefreshToken]
	p.perKey[key]++
	delete(p.issued, t.RefreshToken)
	if p.idle > 0 && time.Since(used) >= p.idle {
		p.died++
		return nil, providerError(http.StatusBadRequest, "invalid_grant", nil)
	}
	return p.issue(key), nil
}

// requests returns the number of requests made for key.
func (p *fleet) requests(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.perKey[key]
}

// stats returns the requests made, the most under way at once, and the
// most goroutines seen.
func (p *fleet) stats() (calls, peak, peakG int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls), p.peak, p.peakG
}

// busiestSecond returns the most requests made within any second, [t, t+1s).
func (p *fleet) busiestSecond() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	most, j := 0, 0
	for i := range p.calls {
		for p.calls[i].Sub(p.calls[j]) >= time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// openFleet returns n Sources sharing store, each with a session logged in
// at p, closed at the end of the test.
func openFleet(t *testing.T, p *fleet, store storage.Store, n int, opts ...Option) []*Source {
	t.Helper()
	srcs := make([]*Source, n)
	for i := range srcs {
		key := fmt.Sprintf("user%04d", i)
		s, err := New(p, store, key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Put(context.Background(), p.login(key)); err != nil {
			t.Fatal(err)
		}
		srcs[i] = s
	}
	return srcs
}
