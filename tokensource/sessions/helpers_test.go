package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// provider issues tokens for many users, rotating refresh tokens, and
// counts requests per user. A refresh with no token, or an unknown one,
// is refused with invalid_grant.
type provider struct {
	life time.Duration // of access tokens; an hour if zero

	mu      sync.Mutex
	n       int
	owner   map[string]string // live refresh token → user
	perUser map[string]int    // refreshes per user
	revoked int
}

func (p *provider) login(user string) *oauth2.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issue(user)
}

// issue makes a token for user; p.mu is held.
func (p *provider) issue(user string) *oauth2.Token {
	if p.owner == nil {
		p.owner, p.perUser = map[string]string{}, map[string]int{}
	}
	life := p.life
	if life == 0 {
		life = time.Hour
	}
	p.n++
	rt := fmt.Sprintf("tkrt_set_%d", p.n)
	p.owner[rt] = user
	return &oauth2.Token{AccessToken: fmt.Sprintf("tkat_set_%s_%d", user, p.n), RefreshToken: rt, TokenType: "Bearer",
		Expiry: time.Now().Add(life), ExpiresIn: int64(life / time.Second)}
}

func (p *provider) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t == nil {
		return nil, invalidGrant()
	}
	user, ok := p.owner[t.RefreshToken]
	if !ok {
		return nil, invalidGrant()
	}
	delete(p.owner, t.RefreshToken)
	p.perUser[user]++
	return p.issue(user), nil
}

func (p *provider) Revoke(ctx context.Context, t *oauth2.Token) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.owner, t.RefreshToken)
	p.revoked++
	return nil
}

func (p *provider) refreshes(user string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.perUser[user]
}

func invalidGrant() error {
	return &oauth2.RetrieveError{Response: &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request"}, ErrorCode: "invalid_grant"}
}

// recorder is a base RoundTripper that answers every request with 200 and
// remembers the Authorization headers it saw.
type recorder struct {
	mu   sync.Mutex
	auth []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.mu.Unlock()
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{},
		Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.auth) == 0 {
		return ""
	}
	return r.auth[len(r.auth)-1]
}

// flaky is a Memory store whose saves fail while failing is set.
type flaky struct {
	*storage.Memory
	mu      sync.Mutex
	failing bool
}

var errDiskFull = errors.New("storage: write: no space left on device")

func (f *flaky) setFailing(v bool) {
	f.mu.Lock()
	f.failing = v
	f.mu.Unlock()
}

func (f *flaky) Save(ctx context.Context, key string, r *storage.Record) error {
	f.mu.Lock()
	failing := f.failing
	f.mu.Unlock()
	if failing {
		return errDiskFull
	}
	return f.Memory.Save(ctx, key, r)
}

// plain is a store that cannot list its entries.
type plain struct{ m *storage.Memory }

func (p plain) Load(ctx context.Context, key string) (*storage.Record, error) {
	return p.m.Load(ctx, key)
}
func (p plain) Save(ctx context.Context, key string, r *storage.Record) error {
	return p.m.Save(ctx, key, r)
}
func (p plain) Delete(ctx context.Context, key string) error { return p.m.Delete(ctx, key) }

// get sends a GET with c and drains the answer.
func get(c *http.Client) error {
	resp, err := c.Get("https://api.example.com/v1/me")
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}
