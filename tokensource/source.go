package tokensource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
	"github.com/tokenkeep/tokenkeep/storage"
)

// Source is a persistent, self-refreshing oauth2.TokenSource. See the
// package documentation for the states a token goes through and the
// guarantees a Source keeps.
//
// A Source is safe for concurrent use. The tokens it returns are shared:
// callers must not modify them.
type Source struct {
	refresher Refresher
	store     storage.Store
	locker    storage.Locker // the store's, or nil
	key       string
	cfg       config

	cur   atomic.Pointer[state] // nil until first use
	group singleflight.Group    // one refresh at a time

	ctx    context.Context // parent of every refresh; ended by Close
	cancel context.CancelFunc

	mu     sync.Mutex     // guards closed and wg.Add
	closed bool           //
	wg     sync.WaitGroup // refreshes and save retries under way

	background atomic.Bool  // a background refresh is running
	notBefore  atomic.Int64 // no background refresh before this (Unix ns)
	saving     atomic.Bool  // the save retry loop is running
}

// state is what a Source serves, replaced whole on every change.
type state struct {
	tok      *oauth2.Token // nil when nothing can be served
	staleAt  time.Time     // from here on, tok is served and refreshed in the background
	expireAt time.Time     // from here on, tok is not served
	rejected bool          // a server refused tok (Invalidate); never adopt it again
	unsaved  bool          // tok is newer than the store holds
	err      error         // the provider refused the session: served once tok expires, until the store offers another
	deadRT   string        // with err: the refresh token the provider refused
}

// never is later than any expiry.
var never = time.Unix(1<<62, 0)

const flightKey = "refresh"

// New returns a Source that serves tokens for key from store and renews
// them through r. It does no I/O: the store is first read by the first call
// for a token. If store implements storage.Locker, refreshes are serialised
// through it across processes (see the package documentation).
func New(r Refresher, store storage.Store, key string, opts ...Option) (*Source, error) {
	switch {
	case r == nil:
		return nil, errors.New("tokensource: nil Refresher")
	case store == nil:
		return nil, errors.New("tokensource: nil Store")
	case key == "":
		return nil, errors.New("tokensource: empty store key")
	}
	if v, ok := r.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	s := &Source{refresher: r, store: store, key: key, cfg: defaults()}
	for _, o := range opts {
		o(&s.cfg)
	}
	s.locker, _ = store.(storage.Locker)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Token implements oauth2.TokenSource. It is TokenContext without a
// deadline of the caller's own; the refresh deadline still applies.
func (s *Source) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext returns a valid token. A fresh token comes from memory
// without locking or allocating. A token inside the early-refresh window is
// returned at once while one background refresh runs. Only a missing,
// expired or invalidated token makes the caller wait for a refresh, and
// then no longer than ctx allows: the refresh goes on for other callers.
func (s *Source) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	if st := s.cur.Load(); st != nil {
		now := s.cfg.now()
		if now.Before(st.staleAt) {
			return st.tok, nil
		}
		if now.Before(st.expireAt) {
			s.refreshEarly(st, now)
			return st.tok, nil
		}
	}
	return s.wait(ctx)
}

// wait joins (or starts) the refresh and waits for it or for ctx.
func (s *Source) wait(ctx context.Context) (*oauth2.Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokensource: token for %q: %w", s.key, err)
	}
	ch := s.group.DoChan(flightKey, func() (any, error) { return s.flight(false) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*oauth2.Token), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("tokensource: waiting for refresh of %q: %w", s.key, ctx.Err())
	}
}

// refreshEarly starts a background refresh of st unless one is running or
// the last one failed too recently.
func (s *Source) refreshEarly(st *state, now time.Time) {
	if now.UnixNano() < s.notBefore.Load() || !s.background.CompareAndSwap(false, true) {
		return
	}
	if !s.enter() {
		s.background.Store(false)
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.background.Store(false)
		_, err, _ := s.group.Do(flightKey, func() (any, error) { return s.flight(true) })
		if err != nil {
			// Try again after an eighth of the time left, so that a
			// provider outage costs a handful of attempts per lifetime.
			now := s.cfg.now()
			pause := max(time.Second, st.expireAt.Sub(now)/8)
			s.notBefore.Store(now.Add(pause).UnixNano())
		}
	}()
}

// flight runs one refresh on a context of its own, detached from callers.
func (s *Source) flight(background bool) (any, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.wg.Done()
	st := s.cur.Load()
	if st != nil && st.tok != nil && s.cfg.now().Before(st.staleAt) {
		return st.tok, nil // a refresh that ended while this one was set up
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.refreshTimeout)
	defer cancel()
	r := &refresh{s: s, prev: st, background: background, start: s.cfg.now()}
	return r.run(ctx)
}

// enter registers work that Close must wait for; it reports false once the
// Source is closed.
func (s *Source) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// stateFor computes when t turns stale and invalid. The lifetime the
// provider granted (t.ExpiresIn) scales both margins, so that short-lived
// tokens are still used and a token loaded from storage late in its life is
// refreshed early; when it is unknown, the time left is used.
func (s *Source) stateFor(t *oauth2.Token, now time.Time) *state {
	if t.AccessToken == "" {
		return &state{tok: t} // only a refresh token: refresh before use
	}
	if t.Expiry.IsZero() {
		return &state{tok: t, staleAt: never, expireAt: never}
	}
	// Round(0) drops the monotonic reading a freshly received Expiry
	// carries, so that comparisons use the wall clock: the monotonic clock
	// stands still while the machine sleeps, and a token must not look
	// fresh to a laptop that wakes up hours after it expired.
	expiry := t.Expiry.Round(0)
	life := expiry.Sub(now)
	if t.ExpiresIn > 0 {
		life = time.Duration(t.ExpiresIn) * time.Second
	}
	life = max(life, 0)
	expireAt := expiry.Add(-min(s.cfg.expiryDelta, life/10))
	window := min(s.cfg.early, life/4)
	if window > 0 {
		window += time.Duration(s.cfg.jitter(int64(window/4) + 1))
	}
	return &state{tok: t, staleAt: expireAt.Add(-window), expireAt: expireAt}
}

// Put stores t, typically the token of a new login, and serves it from now
// on. It clears any need to re-authenticate. If t cannot be saved, Put
// returns an error matching ErrNotSaved and serves t from memory while
// saving is retried.
func (s *Source) Put(ctx context.Context, t *oauth2.Token) error {
	if t == nil || (t.AccessToken == "" && t.RefreshToken == "") {
		return errors.New("tokensource: Put needs a token with an access or refresh token")
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.wg.Done()
	t = tokencodec.Clone(t)
	if s.locker != nil {
		unlock, err := s.lock(ctx)
		if err != nil {
			return err
		}
		defer unlock()
	}
	st := s.stateFor(t, s.cfg.now())
	s.notBefore.Store(0)
	if err := s.store.Save(ctx, s.key, t); err != nil {
		st.unsaved = true
		s.cur.Store(st)
		s.keepSaving()
		return fmt.Errorf("tokensource: put %q: %w: %w", s.key, ErrNotSaved, err)
	}
	s.cur.Store(st)
	return nil
}

// Invalidate reports that a server refused used (for example with HTTP 401).
// If used is still the token being served, the next call refreshes instead
// of serving it; if it was already replaced, Invalidate does nothing, so
// many requests failing with the same token cause one refresh.
func (s *Source) Invalidate(used *oauth2.Token) {
	if used == nil {
		return
	}
	for {
		st := s.cur.Load()
		if st == nil || st.tok == nil || st.rejected || st.tok.AccessToken != used.AccessToken {
			return
		}
		next := *st
		next.rejected = true
		next.staleAt, next.expireAt = time.Time{}, time.Time{}
		if s.cur.CompareAndSwap(st, &next) {
			return
		}
	}
}

// Revoke ends the session: it revokes the refresh token at the provider
// (RFC 7009) when the Refresher is a Revoker, then deletes the stored token.
// From then on the Source returns errors matching ErrReauthRequired until a
// new login is Put.
//
// The local copy is deleted even when revocation at the provider fails; the
// error then says so. With no revocation endpoint the error matches
// ErrNoRevocationEndpoint: the provider still honours the refresh token.
func (s *Source) Revoke(ctx context.Context) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.wg.Done()
	if s.locker != nil {
		unlock, err := s.lock(ctx)
		if err != nil {
			return err
		}
		defer unlock()
	}
	tok := s.latest(ctx)
	var revokeErr error
	if tok != nil {
		if rv, ok := s.refresher.(Revoker); ok {
			revokeErr = rv.Revoke(ctx, tok)
		} else {
			revokeErr = ErrNoRevocationEndpoint
		}
	}
	dead := &state{err: &reauthError{msg: fmt.Sprintf("tokensource: session %q was revoked; log in again", s.key)}}
	if tok != nil {
		dead.deadRT = tok.RefreshToken
	}
	s.cur.Store(dead)
	if err := s.store.Delete(ctx, s.key); err != nil {
		return fmt.Errorf("tokensource: revoke %q: delete the stored token: %w", s.key, err)
	}
	if revokeErr != nil {
		return &revokeError{key: s.key, err: revokeErr, secrets: secretsOf(tok)}
	}
	return nil
}

// revokeError reports a revocation the provider did not confirm.
type revokeError struct {
	key     string
	err     error
	secrets []string
}

func (e *revokeError) Error() string {
	return fmt.Sprintf("tokensource: revoke %q at the provider (the stored token was deleted): %s",
		e.key, describe(e.err, e.secrets))
}

func (e *revokeError) Unwrap() error { return e.err }

// latest returns the newest token known: memory if the store is behind,
// else the store, else memory.
func (s *Source) latest(ctx context.Context) *oauth2.Token {
	st := s.cur.Load()
	if st != nil && st.unsaved {
		return st.tok
	}
	if t, err := s.store.Load(ctx, s.key); err == nil {
		return t
	}
	if st != nil {
		return st.tok
	}
	return nil
}

// Close stops background work and waits for refreshes under way. If the
// newest token was never saved, Close makes a last attempt and returns its
// error. Afterwards every method returns ErrClosed.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()

	var err error
	if st := s.cur.Load(); st != nil && st.unsaved {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.attemptTimeout)
		if serr := s.store.Save(ctx, s.key, st.tok); serr != nil {
			err = fmt.Errorf("tokensource: close %q: the newest token is lost: %w: %w", s.key, ErrNotSaved, serr)
		}
		cancel()
	}
	s.cur.Store(&state{err: ErrClosed})
	return err
}

// lock takes the store's lock for s.key, waiting no longer than ctx and the
// lock timeout allow.
func (s *Source) lock(ctx context.Context) (func() error, error) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.lockTimeout)
	defer cancel()
	unlock, err := s.locker.Lock(lctx, s.key)
	if err != nil {
		return nil, fmt.Errorf("tokensource: lock %q: %w", s.key, err)
	}
	return unlock, nil
}

// keepSaving retries saving an unsaved token in the background until it
// succeeds, a newer token replaces it, or the Source closes.
func (s *Source) keepSaving() {
	if !s.saving.CompareAndSwap(false, true) {
		return
	}
	if !s.enter() {
		s.saving.Store(false)
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.saving.Store(false)
		b := DefaultBackOff()
		for {
			t := time.NewTimer(b.NextBackOff())
			select {
			case <-s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if !s.saveOnce() {
				return
			}
		}
	}()
}

// saveOnce saves the served token if it is unsaved, and reports whether it
// still is.
func (s *Source) saveOnce() (again bool) {
	st := s.cur.Load()
	if st == nil || !st.unsaved {
		return false
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.attemptTimeout)
	defer cancel()
	if err := s.store.Save(ctx, s.key, st.tok); err != nil {
		s.cfg.logger.LogAttrs(ctx, slog.LevelError, "tokensource: saving the newest token failed again",
			slog.String("key", s.key), slog.String("error", err.Error()))
		return true
	}
	next := *st
	next.unsaved = false
	return !s.cur.CompareAndSwap(st, &next)
}

// String describes the Source without any token.
func (s *Source) String() string { return fmt.Sprintf("tokensource.Source{key: %q}", s.key) }

// LogValue implements slog.LogValuer: only the key is logged.
func (s *Source) LogValue() slog.Value { return slog.GroupValue(slog.String("key", s.key)) }
