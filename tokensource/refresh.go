package tokensource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/oauthwire"
	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
	"github.com/tokenkeep/tokenkeep/storage"
)

// refresh is one run of the refresh protocol, made while the Source holds
// its turn:
//
//  1. take the store's lock (kept from an earlier run while a save is
//     pending) and read the store: a pending save is made first; an ended
//     session, or a fresh token saved by another process, is adopted as it
//     is; a store that cannot be read stops the run, unless memory is known
//     to be newer than the store;
//  2. redeem the newest refresh token, retrying transient failures, never
//     sending once the lock is lost or Close was called;
//  3. on invalid_grant and its kin, read the store once more (another
//     process may have rotated the token), else save an ended record;
//  4. save the new token over the generation it was derived from, then
//     serve it. A refresh token in an otherwise unusable answer is saved
//     too.
type refresh struct {
	s          *Source
	start      *state // what was served when the run began; may be nil
	background bool
	began      time.Time
	attempts   int
	soft       context.Context // ends at the refresh deadline or at Close: start nothing new
	hard       context.Context // ends at the refresh deadline or when Close's grace is over
	lease      context.Context // ends when the store's lock is lost; nil when it cannot be
	reread     bool            // the store was read again after a refusal
}

func (r *refresh) run() (*oauth2.Token, error) {
	s := r.s
	if t, err, done := r.lockOrAdopt(); done {
		return t, err
	}
	st := s.cur.Load()
	if st != nil && st.unsaved {
		next, err := s.flush(r.soft)
		if err != nil {
			// Memory is newer than the store, which this Source keeps
			// locked: go on from memory.
			if st.overwrite || st.ended != nil {
				return nil, r.fail(err, nil)
			}
			return r.redeemFrom(st.tok, st.gen-1, st)
		}
		st = next
	}
	rec, err := s.load(r.soft)
	switch {
	case err != nil:
		// Never redeem a refresh token that may be behind the store.
		return nil, r.fail(err, nil)
	case rec == nil && s.seen.Load() > 0:
		return nil, r.adoptEnded(nil)
	case rec == nil:
		return r.redeemFrom(nil, 0, nil) // nothing stored: client credentials and kin
	case rec.State == storage.Ended:
		return nil, r.adoptEnded(rec)
	case r.usable(rec):
		if t, ok := r.adopt(rec); ok {
			return t, nil
		}
	}
	return r.redeemFrom(rec.Token, rec.Generation, s.stateOf(rec, epochOf(st), time.Now()))
}

// lockOrAdopt takes the store's lock for the run. While it waits, a record
// that another process saves meanwhile is adopted without the lock if it
// can be served as it is, and then done is true. The lock is waited for
// whatever the store shows when memory holds a save still pending or the
// session in memory was replaced since the run began (Put, Close): memory
// decides then, under the lock. An entry that seems gone is looked at
// again under the lock too, since a writer replaces an unreadable entry by
// deleting it first.
func (r *refresh) lockOrAdopt() (t *oauth2.Token, err error, done bool) {
	s := r.s
	after := s.seen.Load()
	confirm := false
	for {
		st := s.cur.Load()
		var lease context.Context
		var moved bool
		if confirm || (st != nil && st.unsaved) || epochOf(st) != epochOf(r.start) {
			lease, err = s.lock(r.soft)
		} else {
			lease, moved, err = s.lockOrMoved(r.soft, after)
		}
		if err != nil {
			return nil, r.fail(s.closedOr(err), nil), true
		}
		if !moved {
			r.lease = lease
			return nil, nil, false
		}
		rec, err := s.load(r.soft)
		switch {
		case err != nil:
			return nil, r.fail(err, nil), true
		case rec == nil:
			confirm = true
		case rec.State == storage.Ended:
			next := s.fromRecord(rec, epochOf(r.start), time.Now())
			if s.install(r.start, next) {
				return nil, next.ended, true
			}
		case r.usable(rec):
			// Served only if memory did not move on meanwhile and no
			// server refused the token as it was being adopted.
			if s.install(r.start, s.stateOf(rec, epochOf(r.start), time.Now())) && !s.refused(rec.Token) {
				r.report(Adopted, rec.Token, nil)
				return rec.Token, nil, true
			}
			after = rec.Generation
		default:
			after = rec.Generation
		}
	}
}

// usable reports whether a stored live record can be served without a
// refresh.
func (r *refresh) usable(rec *storage.Record) bool {
	if cur := r.s.cur.Load(); cur != nil && cur.rejected != "" && cur.rejected == rec.Token.AccessToken {
		return false // the one a server just refused
	}
	now := time.Now()
	return now.Before(r.s.stateFor(rec.Token, rec.Lifetime, now).staleAt)
}

// redeemFrom redeems base, stored as generation gen (base is nil when
// nothing is stored), and saves the outcome. from is the state base is
// served in, if any.
func (r *refresh) redeemFrom(base *oauth2.Token, gen uint64, from *state) (*oauth2.Token, error) {
	s := r.s
	if from != nil && time.Now().Before(from.retryAfter) {
		return nil, r.fail(&BackOffError{Key: s.key, Until: from.retryAfter}, base)
	}
	for {
		var t *oauth2.Token
		var err error
		t, base, gen, err = r.redeem(base, gen)
		var boe *BackOffError
		switch {
		case err == nil:
			return r.commit(base, gen, t, Refreshed)
		case errors.As(err, &boe):
			r.rememberBackOff(from, gen, boe.Until)
			return nil, r.fail(err, base)
		case needsReauth(err) && base != nil && !r.reread:
			r.reread = true
			newer, lerr := s.load(r.soft)
			switch {
			case lerr != nil || newer == nil || newer.Generation <= gen:
				return nil, r.end(err, base, gen)
			case newer.State == storage.Ended:
				return nil, r.adoptEnded(newer)
			case r.usable(newer):
				if t, ok := r.adopt(newer); ok {
					return t, nil
				}
			}
			base, gen = newer.Token, newer.Generation
		case needsReauth(err) && base != nil:
			return nil, r.end(err, base, gen)
		default:
			return nil, r.fail(err, base)
		}
	}
}

// salvageable reports whether a failed answer still carries a refresh
// token the provider issued.
func salvageable(t, base *oauth2.Token) bool {
	return t != nil && t.RefreshToken != "" && (base == nil || t.RefreshToken != base.RefreshToken)
}

// salvage keeps the refresh token of an unusable answer, as a token that is
// already expired, so that the next refresh redeems it.
func salvage(t *oauth2.Token) *oauth2.Token {
	return &oauth2.Token{RefreshToken: t.RefreshToken, TokenType: t.TokenType}
}

// redeem calls the Refresher for base, stored as generation gen, retrying
// what the policy calls transient on one backoff schedule until the
// refresh deadline or Close. It never sends a request once the store's lock
// is lost or Close was called. A failed answer that carries a new refresh
// token has that token saved at once, and the retries go on from it, within
// the same schedule; redeem returns the token and generation it ended on. A
// provider's wait longer than the deadline allows is returned as a
// *BackOffError.
func (r *refresh) redeem(base *oauth2.Token, gen uint64) (*oauth2.Token, *oauth2.Token, uint64, error) {
	s := r.s
	b := s.cfg.newBackOff()
	var last error
	for {
		if err := r.mayStart(last); err != nil {
			return nil, base, gen, err
		}
		release, err := r.waitLimits(last)
		if err != nil {
			return nil, base, gen, err
		}
		r.attempts++
		t, err := r.attempt(base, gen)
		release()
		if err == nil {
			if err = r.check(t); err == nil {
				return t, base, gen, nil
			}
		}
		if salvageable(t, base) {
			// The provider rotated the refresh token but the rest of its
			// answer is unusable: keep the new refresh token.
			st, serr := r.save(base, gen, salvage(t), Salvaged)
			if serr != nil {
				return nil, base, gen, err
			}
			base, gen = st.tok, st.gen
		}
		last = err
		if errors.Is(err, ErrInDoubt) {
			r.report(InDoubt, nil, err)
		}
		retry, wait := s.cfg.retry(err)
		if !retry || needsReauth(err) {
			return nil, base, gen, err
		}
		d := b.NextBackOff()
		if d == backoff.Stop {
			return nil, base, gen, err
		}
		now := time.Now()
		d = max(d, wait)
		if deadline, ok := r.soft.Deadline(); ok && now.Add(d).After(deadline) {
			if wait > 0 {
				return nil, base, gen, &BackOffError{Key: s.key, Until: now.Add(wait), Err: err}
			}
			return nil, base, gen, err
		}
		level := slog.LevelWarn
		if s.stopped.Err() != nil {
			level = slog.LevelDebug // Close ended it: not a provider problem
		}
		s.cfg.logger.LogAttrs(r.soft, level, "tokensource: refresh attempt failed; retrying",
			slog.String("key", s.key), slog.Int("attempt", r.attempts), slog.Duration("wait", d),
			slog.String("error", describe(err, secretsOf(base))))
		t2 := time.NewTimer(d)
		select {
		case <-t2.C:
		case <-r.soft.Done():
			t2.Stop()
		}
	}
}

// mayStart reports why no attempt may start now, or nil.
func (r *refresh) mayStart(last error) error {
	s := r.s
	switch {
	case r.lease != nil && r.lease.Err() != nil:
		return fmt.Errorf("tokensource: refresh %q: the store's lock was lost; not sending: %w", s.key, errLockLost)
	case r.soft.Err() != nil && s.stopped.Err() != nil:
		return ErrClosed
	case r.soft.Err() != nil && last != nil:
		return last // the deadline ended the retries; the provider's error says more
	case r.soft.Err() != nil:
		return fmt.Errorf("tokensource: refresh %q: %w", s.key, r.soft.Err())
	}
	return nil
}

// errLockLost is wrapped when a refresh stops because its lock was lost.
var errLockLost = errors.New("lock lost")

// sendBounded is implemented by Refreshers that honour a send timeout set
// with oauthwire.WithSendTimeout: they give up on a request only before it
// was written, and report ErrInDoubt after.
type sendBounded interface{ boundsSending() }

// attempt makes one call to the Refresher. For a Refresher that bounds
// sending, the attempt timeout bounds connecting and sending, and the
// answer is awaited until the refresh deadline; for others, the attempt
// timeout bounds the whole call, and a timeout after which the provider may
// have redeemed the refresh token is reported as in doubt. A Refresher that
// does not return when its context ends is left running; if it returns a
// token later, that token is saved if the session has not moved on.
func (r *refresh) attempt(base *oauth2.Token, gen uint64) (*oauth2.Token, error) {
	s := r.s
	_, bounded := s.refresher.(sendBounded)
	var ctx context.Context
	var cancel context.CancelFunc
	if bounded {
		ctx, cancel = context.WithCancel(oauthwire.WithSendTimeout(r.hard, s.cfg.attemptTimeout))
	} else {
		ctx, cancel = context.WithTimeout(r.hard, s.cfg.attemptTimeout)
	}
	done := make(chan attemptResult, 1)
	go func() {
		t, err := s.refresher.Refresh(ctx, tokencodec.Clone(base))
		done <- attemptResult{t, err}
	}()
	var res attemptResult
	select {
	case res = <-done:
		cancel()
	case <-ctx.Done():
		cancel()
		select {
		case res = <-done:
		default:
			go s.late(done, base, gen)
			return nil, fmt.Errorf("tokensource: the refresher had not returned when its context ended: %w: %w", ErrInDoubt, ctx.Err())
		}
	}
	err := res.err
	if err != nil && !bounded && base != nil && base.RefreshToken != "" &&
		ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) &&
		!errors.Is(err, ErrInDoubt) {
		err = fmt.Errorf("%w: %w", ErrInDoubt, err)
	}
	return res.t, err
}

// attemptResult is what one call to the Refresher returned.
type attemptResult struct {
	t   *oauth2.Token
	err error
}

// late waits for the answer of an attempt that was given up because its
// Refresher ignored its context, and saves a new refresh token it carries
// if the store still holds generation gen, the one base came from: the
// provider issued it, and nothing it issued is thrown away.
func (s *Source) late(done <-chan attemptResult, base *oauth2.Token, gen uint64) {
	res := <-done
	if res.t == nil || (res.err != nil && !salvageable(res.t, base)) {
		return
	}
	if !s.enter() {
		s.event(Event{Kind: Lost, Err: fmt.Errorf("tokensource: %q: a refresh answer arrived after Close", s.key)})
		return
	}
	defer s.wg.Done()
	ctx, cancel := s.saveCtx()
	defer cancel()
	if !s.takeTurn(ctx) {
		return
	}
	defer s.giveTurn()
	r := &refresh{s: s, start: s.cur.Load(), began: time.Now(), soft: ctx, hard: ctx}
	if _, err := s.lock(ctx); err != nil {
		r.report(Lost, nil, fmt.Errorf("tokensource: %q: a late refresh answer could not be saved: %w", s.key, err))
		return
	}
	defer s.unlockUnlessPending()
	rec, err := s.load(ctx)
	switch {
	case err != nil:
		r.report(Lost, nil, fmt.Errorf("tokensource: %q: a late refresh answer could not be saved: %w", s.key, err))
		return
	case (rec == nil && gen != 0) || (rec != nil && (rec.Generation != gen || rec.State != storage.Live)):
		r.report(Lost, nil, fmt.Errorf("tokensource: %q: a late refresh answer came after the session moved on; it was dropped", s.key))
		return
	}
	t := res.t
	if res.err != nil {
		t = salvage(t)
	}
	r.save(base, gen, t, Salvaged)
}

// check rejects answers a Source cannot serve.
func (r *refresh) check(t *oauth2.Token) error {
	switch {
	case t == nil:
		return fmt.Errorf("%w: the refresher returned no token", oauthwire.ErrMalformed)
	case t.AccessToken == "":
		return fmt.Errorf("%w: no access token", oauthwire.ErrMalformed)
	}
	now := time.Now()
	if !now.Before(r.s.stateFor(t, lifetimeOf(t, now), now).expireAt) {
		return fmt.Errorf("%w: the provider issued an already expired token (expires_in %d)", oauthwire.ErrMalformed, t.ExpiresIn)
	}
	return nil
}

// commit saves a new token over generation gen and serves it.
func (r *refresh) commit(base *oauth2.Token, gen uint64, t *oauth2.Token, kind EventKind) (*oauth2.Token, error) {
	st, err := r.save(base, gen, t, kind)
	if err != nil {
		return nil, err
	}
	return st.tok, nil
}

// save merges t with base, saves it as generation gen+1 and serves it. If
// the store refuses the write because it moved on, the store wins. If the
// store fails, the token is served from memory, the lock is kept, saving is
// retried, and the error matches ErrNotSaved so that the problem is seen.
func (r *refresh) save(base *oauth2.Token, gen uint64, t *oauth2.Token, kind EventKind) (*state, error) {
	s := r.s
	t = merge(base, t)
	now := time.Now()
	next := s.stateFor(t, lifetimeOf(t, now), now)
	next.gen, next.epoch = gen+1, epochOf(r.start)
	next.refreshExp = refreshExpiry(t, now)
	ctx, cancel := s.saveCtx()
	defer cancel()
	err := s.store.Save(ctx, s.key, next.record())
	switch {
	case err == nil:
		s.observe(next.gen)
		s.install(r.start, next)
		r.report(kind, t, nil)
		return next, nil
	case errors.Is(err, storage.ErrConflict):
		err = fmt.Errorf("tokensource: refreshed %q, but the store moved on meanwhile; the stored session wins: %w", s.key, err)
		r.report(Lost, t, err)
		if rec, lerr := s.load(ctx); lerr == nil {
			s.install(r.start, s.fromRecord(rec, epochOf(r.start), time.Now()))
		}
		return nil, err
	}
	next.unsaved = true
	s.install(r.start, next)
	s.keepSaving()
	err = fmt.Errorf("tokensource: refreshed %q but could not save it: %w: %w", s.key, ErrNotSaved, err)
	r.report(SaveFailed, t, err)
	return nil, err
}

// refreshExpiry reads the idle lifetime of t's refresh token from the
// provider's refresh_expires_in, if it sent one.
func refreshExpiry(t *oauth2.Token, now time.Time) time.Time {
	var secs int64
	switch v := t.Extra("refresh_expires_in").(type) {
	case float64:
		secs = int64(v)
	case string:
		secs, _ = strconv.ParseInt(v, 10, 64)
	case interface{ Int64() (int64, error) }:
		secs, _ = v.Int64()
	}
	if secs <= 0 {
		return time.Time{}
	}
	return now.Add(time.Duration(secs) * time.Second)
}

// rememberBackOff serves the provider's back-off and shares it through the
// store, so that no process calls the provider before until. from is the
// state of the stored generation gen that base came from, or nil when
// nothing is stored.
func (r *refresh) rememberBackOff(from *state, gen uint64, until time.Time) {
	s := r.s
	var mine *state
	for {
		cur := s.cur.Load()
		switch {
		case cur != nil && (cur.unsaved || cur.gen != gen):
			return // memory moved on; its next refresh meets the back-off again
		case cur == nil && from == nil:
			mine = &state{retryAfter: until}
		case cur == nil:
			c := *from
			c.retryAfter = until
			mine = &c
		default:
			c := *cur
			c.retryAfter = until
			mine = &c
		}
		if s.swap(cur, mine) {
			break
		}
	}
	if from == nil || from.tok == nil {
		return
	}
	rec := mine.record()
	rec.Generation = gen + 1
	ctx, cancel := s.saveCtx()
	defer cancel()
	if err := s.store.Save(ctx, s.key, rec); err == nil {
		s.observe(rec.Generation)
		next := *mine
		next.gen = rec.Generation
		s.swap(mine, &next)
	}
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

// adopt serves a live record that another process or an earlier run saved.
// It reports false if a server refused the record's token while it was
// being adopted: the token must be refreshed instead.
func (r *refresh) adopt(rec *storage.Record) (*oauth2.Token, bool) {
	s := r.s
	s.install(r.start, s.stateOf(rec, epochOf(r.start), time.Now()))
	if cur := s.cur.Load(); cur != nil && cur.rejected != "" && cur.rejected == rec.Token.AccessToken {
		return nil, false
	}
	r.report(Adopted, rec.Token, nil)
	return rec.Token, true
}

// adoptEnded serves the end of a session that was revoked or refused,
// here or elsewhere (rec is nil when the entry was deleted).
func (r *refresh) adoptEnded(rec *storage.Record) error {
	s := r.s
	st := s.fromRecord(rec, epochOf(r.start), time.Now())
	s.install(r.start, st)
	return st.ended
}

// end saves an ended record after the provider refused base, stored as
// generation gen, so that no process presents it again. A token that is
// still valid is served until it expires; after that, the error.
func (r *refresh) end(err error, base *oauth2.Token, gen uint64) error {
	s := r.s
	rerr := r.wrap(err, base)
	reason := "refused by the provider"
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode != "" {
		reason += ": " + re.ErrorCode
	}
	dead := s.endedState(gen+1, epochOf(r.start), reason)
	dead.ended = rerr
	if p := r.start; p != nil && p.tok != nil && p.rejected == "" && p.ended == nil && time.Now().Before(p.expireAt) {
		dead.tok, dead.staleAt, dead.expireAt = p.tok, p.expireAt, p.expireAt
	}
	ctx, cancel := s.saveCtx()
	defer cancel()
	if serr := s.store.Save(ctx, s.key, dead.record()); serr == nil {
		s.observe(dead.gen)
	} else if errors.Is(serr, storage.ErrConflict) {
		// Another writer moved the session on: what it saved is newer than
		// the refused token.
		if rec, lerr := s.load(ctx); lerr == nil && rec != nil {
			s.install(r.start, s.fromRecord(rec, epochOf(r.start), time.Now()))
			r.report(Failed, nil, rerr)
			return rerr
		}
	} else {
		dead.unsaved = true
		s.keepSaving()
	}
	s.install(r.start, dead)
	r.report(Failed, nil, rerr)
	return rerr
}

// fail wraps err for callers and reports it. The served state stays as it
// is: a token that is still valid goes on being served.
func (r *refresh) fail(err error, base *oauth2.Token) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	rerr := r.wrap(err, base)
	r.report(Failed, nil, rerr)
	return rerr
}

// wrap makes a *RefreshError of err. An unreadable store entry or a lost
// key needs the user; a rollback does not: it needs whoever put the old
// entry back.
func (r *refresh) wrap(err error, base *oauth2.Token) error {
	var rb *rollbackError
	reauth := needsReauth(err) ||
		(!errors.As(err, &rb) && (errors.Is(err, storage.ErrKeyLost) || errors.Is(err, storage.ErrCorrupt)))
	return &RefreshError{Key: r.s.key, Attempts: r.attempts, Err: err, reauth: reauth, secrets: hide(secretsOf(base))}
}

func secretsOf(t *oauth2.Token) []string {
	if t == nil {
		return nil
	}
	return []string{t.AccessToken, t.RefreshToken}
}

// report logs the outcome of a refresh and calls the hook.
func (r *refresh) report(kind EventKind, t *oauth2.Token, err error) {
	ev := Event{Kind: kind, Background: r.background, Attempts: r.attempts, Duration: time.Since(r.began), Err: err}
	if r.start != nil && r.start.tok != nil {
		ev.OldExpiry = r.start.tok.Expiry
	}
	if t != nil {
		ev.NewExpiry = t.Expiry
	}
	r.s.event(ev)
}

// event logs ev and calls the hook.
func (s *Source) event(ev Event) {
	ev.Key = s.key
	level := slog.LevelInfo
	switch {
	case ev.Kind == Adopted:
		level = slog.LevelDebug
	case ev.Kind == SaveFailed, ev.Kind == Lost, ev.Kind == Failed && !ev.Background:
		level = slog.LevelError
	case ev.Kind == Failed && s.stopped.Err() != nil:
		level = slog.LevelDebug // Close cancelled a background refresh
	case ev.Kind == Failed, ev.Kind == InDoubt:
		level = slog.LevelWarn
	}
	s.cfg.logger.LogAttrs(context.Background(), level, "tokensource: "+ev.Kind.String(), ev.attrs()...)
	if s.cfg.hook != nil {
		s.cfg.hook(ev)
	}
}
