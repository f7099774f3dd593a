package tokensource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/oauthwire"
	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
	"github.com/tokenkeep/tokenkeep/storage"
)

// refresh is one run of the refresh protocol:
//
//  1. read the store: a fresh token there (saved by another process, or
//     left by an earlier run of this program) is adopted as it is;
//  2. with a Locker store, take the lock and read the store again;
//  3. redeem the newest refresh token, retrying transient failures;
//  4. on invalid_grant and its kin, read the store once more: another
//     process may have rotated the token under us;
//  5. save the new token, then serve it.
type refresh struct {
	s          *Source
	prev       *state // what was served when the run began; may be nil
	background bool
	start      time.Time
	attempts   int
}

func (r *refresh) run(ctx context.Context) (*oauth2.Token, error) {
	s := r.s
	stored, err := r.load(ctx)
	if err != nil {
		return nil, r.fail(err, nil)
	}
	if r.stillDead(stored) {
		return nil, r.prev.err
	}
	if r.usable(stored) {
		return r.adopt(stored), nil
	}
	if s.locker != nil {
		unlock, err := s.lock(ctx)
		if err != nil {
			return nil, r.fail(err, nil)
		}
		defer unlock()
		if stored, err = r.load(ctx); err != nil {
			return nil, r.fail(err, nil)
		}
		if r.stillDead(stored) {
			return nil, r.prev.err
		}
		if r.usable(stored) {
			return r.adopt(stored), nil
		}
	}

	base := r.base(stored)
	tok, err := r.redeem(ctx, base)
	if err != nil && needsReauth(err) && base != nil {
		// Another process may have rotated the refresh token we used.
		if newer, _ := r.load(ctx); newer != nil && newer.RefreshToken != base.RefreshToken {
			if r.usable(newer) {
				return r.adopt(newer), nil
			}
			base = newer
			tok, err = r.redeem(ctx, base)
		}
	}
	if err != nil {
		return nil, r.fail(err, base)
	}
	return r.commit(ctx, base, tok)
}

// load reads the store. A missing entry is (nil, nil), and so is an entry
// known to be older than memory (after a failed save): adopting it would
// redeem a refresh token that was already rotated. When the store cannot be
// read but memory holds a token, the run goes on with memory.
func (r *refresh) load(ctx context.Context) (*oauth2.Token, error) {
	if r.prev != nil && r.prev.unsaved {
		return nil, nil
	}
	t, err := r.s.store.Load(ctx, r.s.key)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, storage.ErrNotFound):
		return nil, nil
	case r.prev != nil && r.prev.tok != nil:
		r.s.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "tokensource: store unreadable; refreshing from memory",
			slog.String("key", r.s.key), slog.String("error", err.Error()))
		return nil, nil
	case errors.Is(err, storage.ErrKeyLost), errors.Is(err, storage.ErrCorrupt):
		return nil, &reauthError{msg: "stored token unusable: " + err.Error(), err: err}
	default:
		return nil, err
	}
}

// stillDead reports whether the provider refused the session and the store
// offers nothing newer than the refresh token it refused.
func (r *refresh) stillDead(stored *oauth2.Token) bool {
	p := r.prev
	return p != nil && p.err != nil && (stored == nil || stored.RefreshToken == p.deadRT)
}

// usable reports whether a stored token can be served without a refresh.
func (r *refresh) usable(t *oauth2.Token) bool {
	if t == nil {
		return false
	}
	if p := r.prev; p != nil && p.tok != nil && p.rejected && p.tok.AccessToken == t.AccessToken {
		return false // the one a server just refused
	}
	return r.s.cfg.now().Before(r.s.stateFor(t, r.s.cfg.now()).staleAt)
}

// base picks the token whose refresh token is redeemed: memory when the
// store is behind it (a failed save), else the store, which another process
// may have updated, else memory.
func (r *refresh) base(stored *oauth2.Token) *oauth2.Token {
	switch p := r.prev; {
	case p != nil && p.unsaved:
		return p.tok
	case stored != nil:
		return stored
	case p != nil:
		return p.tok
	}
	return nil
}

// redeem calls the Refresher, retrying what the policy calls transient on a
// fresh backoff schedule until ctx ends.
func (r *refresh) redeem(ctx context.Context, base *oauth2.Token) (*oauth2.Token, error) {
	s := r.s
	b := &serverWait{BackOff: s.cfg.newBackOff(), ctx: ctx, now: s.cfg.now}
	var last error
	op := func() (*oauth2.Token, error) {
		r.attempts++
		actx, cancel := context.WithTimeout(ctx, s.cfg.attemptTimeout)
		defer cancel()
		t, err := s.refresher.Refresh(actx, tokencodec.Clone(base))
		if err == nil {
			if err = r.check(t); err == nil {
				return t, nil
			}
		}
		last = err
		retry, wait := s.cfg.retry(err)
		if !retry || needsReauth(err) {
			return nil, backoff.Permanent(err)
		}
		b.wait = wait
		level := slog.LevelWarn
		if s.ctx.Err() != nil {
			level = slog.LevelDebug // Close ended it: not a provider problem
		}
		s.cfg.logger.LogAttrs(ctx, level, "tokensource: refresh attempt failed; retrying",
			slog.String("key", s.key), slog.Int("attempt", r.attempts),
			slog.String("error", describe(err, secretsOf(base))))
		return nil, err
	}
	t, err := backoff.RetryWithData(op, backoff.WithContext(b, ctx))
	if err != nil && last != nil && ctx.Err() != nil {
		err = last // the deadline ended the retries; the provider's error says more
	}
	return t, err
}

// check rejects answers a Source cannot serve.
func (r *refresh) check(t *oauth2.Token) error {
	switch {
	case t == nil:
		return fmt.Errorf("%w: the refresher returned no token", oauthwire.ErrMalformed)
	case t.AccessToken == "":
		return fmt.Errorf("%w: no access token", oauthwire.ErrMalformed)
	}
	now := r.s.cfg.now()
	if !now.Before(r.s.stateFor(t, now).expireAt) {
		return fmt.Errorf("%w: the provider issued an already expired token (expires_in %d)", oauthwire.ErrMalformed, t.ExpiresIn)
	}
	return nil
}

// commit merges, saves and serves a new token. If it cannot be saved, the
// token is served from memory, saving is retried, and this run fails with
// ErrNotSaved so that the problem is seen.
func (r *refresh) commit(ctx context.Context, base, t *oauth2.Token) (*oauth2.Token, error) {
	s := r.s
	t = merge(base, t)
	st := s.stateFor(t, s.cfg.now())
	if err := s.store.Save(ctx, s.key, t); err != nil {
		st.unsaved = true
		s.cur.Store(st)
		s.keepSaving()
		err = fmt.Errorf("tokensource: refreshed %q but could not save it: %w: %w", s.key, ErrNotSaved, err)
		r.report(SaveFailed, t, err)
		return nil, err
	}
	s.cur.Store(st)
	r.report(Refreshed, t, nil)
	return t, nil
}

// merge completes a refresh answer with what the provider may leave out: the
// refresh token when it does not rotate it (RFC 6749 section 6), and extra
// fields such as scope and id_token, which keep their previous values unless
// the answer carries new ones.
func merge(base, t *oauth2.Token) *oauth2.Token {
	t = tokencodec.Clone(t)
	if base == nil {
		return t
	}
	if t.RefreshToken == "" {
		t.RefreshToken = base.RefreshToken
	}
	old := tokencodec.Extras(base)
	if len(old) == 0 {
		return t
	}
	extra := tokencodec.Extras(t)
	if extra == nil {
		extra = make(map[string]any, len(old))
	}
	for k, v := range old {
		if _, ok := extra[k]; !ok {
			extra[k] = v
		}
	}
	return tokencodec.WithExtras(t, extra)
}

// adopt serves a token that another process or an earlier run saved.
func (r *refresh) adopt(t *oauth2.Token) *oauth2.Token {
	r.s.cur.Store(r.s.stateFor(t, r.s.cfg.now()))
	r.report(Adopted, t, nil)
	return t
}

// fail wraps err for callers. A failure that needs the user makes the Source
// return it, without calling the provider, until the store offers a new
// token.
func (r *refresh) fail(err error, base *oauth2.Token) error {
	reauth := needsReauth(err)
	var rerr error = &RefreshError{Key: r.s.key, Attempts: r.attempts, Err: err, reauth: reauth, secrets: hide(secretsOf(base))}
	if reauth {
		// A token that is still valid is served until it expires; after
		// that, the error.
		dead := &state{err: rerr}
		if p := r.prev; p != nil && p.tok != nil && !p.rejected && r.s.cfg.now().Before(p.expireAt) {
			dead.tok, dead.staleAt, dead.expireAt = p.tok, p.expireAt, p.expireAt
		}
		if base != nil {
			dead.deadRT = base.RefreshToken
		}
		r.s.cur.Store(dead)
	}
	r.report(Failed, nil, rerr)
	return rerr
}

func secretsOf(t *oauth2.Token) []string {
	if t == nil {
		return nil
	}
	return []string{t.AccessToken, t.RefreshToken}
}

// report logs the outcome and calls the hook.
func (r *refresh) report(kind EventKind, t *oauth2.Token, err error) {
	s := r.s
	ev := Event{
		Kind:       kind,
		Key:        s.key,
		Background: r.background,
		Attempts:   r.attempts,
		Duration:   s.cfg.now().Sub(r.start),
		Err:        err,
	}
	if r.prev != nil && r.prev.tok != nil {
		ev.OldExpiry = r.prev.tok.Expiry
	}
	if t != nil {
		ev.NewExpiry = t.Expiry
	}
	level := slog.LevelInfo
	switch {
	case kind == Adopted:
		level = slog.LevelDebug
	case kind == SaveFailed, kind == Failed && !r.background:
		level = slog.LevelError
	case kind == Failed && s.ctx.Err() != nil:
		level = slog.LevelDebug // Close cancelled a background refresh
	case kind == Failed:
		level = slog.LevelWarn // the old token is still served
	}
	attrs := []slog.Attr{
		slog.String("key", s.key),
		slog.Bool("background", r.background),
		slog.Int("attempts", r.attempts),
		slog.Duration("duration", ev.Duration),
		slog.Time("old_expiry", ev.OldExpiry),
		slog.Time("new_expiry", ev.NewExpiry),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	s.cfg.logger.LogAttrs(context.Background(), level, "tokensource: "+kind.String(), attrs...)
	if s.cfg.hook != nil {
		s.cfg.hook(ev)
	}
}
