package tokensource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// flush saves the served state if the store is behind it, and returns the
// state served afterwards. The caller holds the turn and, with a Locker
// store, the lock.
//
// A pending refresh result is saved only over the generation it was derived
// from; if the store moved past it (a lost lease, a writer that does not
// lock), the store's record wins and the loss is reported. A pending login
// or logout (overwrite) is saved over whatever the store holds.
func (s *Source) flush(ctx context.Context) (*state, error) {
	for tries := 0; ; tries++ {
		st := s.cur.Load()
		if st == nil || !st.unsaved {
			return st, nil
		}
		rec, err := s.store.Load(ctx, s.key)
		var stored uint64
		switch {
		case err == nil:
			stored = rec.Generation
		case errors.Is(err, storage.ErrNotFound):
		case st.overwrite && errors.Is(err, storage.ErrCorrupt):
			// A new login or a logout replaces an entry nobody can read.
			s.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "tokensource: replacing an unreadable stored session",
				slog.String("key", s.key), slog.String("error", err.Error()))
			if err := s.store.Delete(ctx, s.key); err != nil {
				return st, err
			}
		default:
			return st, err
		}
		next := *st
		next.unsaved, next.overwrite = false, false
		switch {
		case st.overwrite:
			next.gen = stored + 1
		case stored+1 == st.gen:
		default:
			// The store moved on although this Source held its lock.
			s.event(Event{Kind: Lost, Err: fmt.Errorf("tokensource: %q: the store moved to generation %d while generation %d waited to be saved; the stored session wins", s.key, stored, st.gen)})
			if rec != nil && rec.Generation < s.seen.Load() {
				return st, &rollbackError{key: s.key, got: rec.Generation, seen: s.seen.Load()}
			}
			if rec != nil {
				s.observe(rec.Generation)
			}
			s.install(st, s.fromRecord(rec, st.epoch, time.Now()))
			return s.cur.Load(), nil
		}
		if err := s.store.Save(ctx, s.key, next.record()); err != nil {
			if errors.Is(err, storage.ErrConflict) && tries < 3 {
				continue
			}
			return st, err
		}
		if st.overwrite {
			s.seen.Store(next.gen) // a login or logout starts the ledger's count anew if it was purged
		} else {
			s.observe(next.gen)
		}
		s.install(st, &next) // if a Put replaced st meanwhile, it is saved next
		return s.cur.Load(), nil
	}
}

// keepSaving retries saving the served state in the background until it is
// saved, or the Source closes (Close then makes a last attempt).
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
		// Short waits: while the token is unsaved, this Source holds the
		// store's lock and other processes wait for it.
		b := backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(100*time.Millisecond),
			backoff.WithMaxInterval(2*time.Second),
			backoff.WithMaxElapsedTime(0),
		)
		for {
			d := b.NextBackOff()
			t := time.NewTimer(d)
			select {
			case <-s.stopped.Done():
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

// saveOnce tries once to save the served state, and reports whether it is
// still unsaved.
func (s *Source) saveOnce() (again bool) {
	ctx, cancel := s.saveCtx()
	defer cancel()
	if !s.takeTurn(ctx) {
		return s.stopped.Err() == nil
	}
	defer s.giveTurn()
	_, err := s.lock(ctx)
	if err == nil {
		_, err = s.flush(ctx)
	}
	if err != nil {
		s.cfg.logger.LogAttrs(ctx, slog.LevelError, "tokensource: saving the newest token failed again",
			slog.String("key", s.key), slog.String("error", err.Error()))
		return true
	}
	s.unlockUnlessPending()
	st := s.cur.Load()
	return st != nil && st.unsaved
}

// Revoke ends the session: it revokes the refresh token at the provider
// (RFC 7009) when the Refresher is a Revoker, then saves an ended record (a
// tombstone) in place of the session. From then on every Source sharing the
// store, in this process or another, returns errors matching
// ErrReauthRequired without calling the provider, until a new login is Put.
//
// Revoke is bounded by ctx and by the revoke timeout (see
// [WithRevokeTimeout]), whatever the provider or the store do. The session
// ends locally even when revocation at the provider fails; the error then
// says so. With no revocation endpoint the error matches
// ErrNoRevocationEndpoint: the provider still honours the refresh token.
// If the tombstone cannot be saved, the error matches ErrNotSaved and saving
// is retried in the background.
func (s *Source) Revoke(ctx context.Context) error {
	if err := s.usable(); err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.wg.Done()
	rctx, cancel := context.WithTimeout(ctx, s.cfg.revokeTimeout)
	defer cancel()
	defer s.hard.AfterFunc(cancel)()
	if !s.takeTurn(rctx) {
		return fmt.Errorf("tokensource: revoke %q: %w", s.key, s.closedOr(rctx.Err()))
	}
	defer s.giveTurn()
	if _, err := s.lock(rctx); err != nil {
		// The tombstone is a conditional write: it cannot be lost to a
		// rival refresh, which then adopts it.
		s.cfg.logger.LogAttrs(rctx, slog.LevelWarn, "tokensource: revoking without the store lock",
			slog.String("key", s.key), slog.String("error", err.Error()))
	}
	st := s.cur.Load()
	rec, err := s.load(rctx)
	var tok *oauth2.Token
	switch {
	case st != nil && st.unsaved && st.ended == nil:
		tok = st.tok
	case err != nil:
		return fmt.Errorf("tokensource: revoke %q: read the stored session: %w", s.key, err)
	case rec != nil && rec.State == storage.Ended:
		s.install(st, s.fromRecord(rec, epochOf(st), time.Now()))
		s.unlock()
		return nil // already ended, here or elsewhere
	case rec != nil:
		tok = rec.Token
	case st != nil && st.ended == nil:
		tok = st.tok
	}
	var revokeErr error
	if tok != nil {
		revokeErr = s.revokeAt(rctx, tok)
	}
	next := s.endedState(0, 0, "revoked")
	next.unsaved, next.overwrite = true, true
	s.replace(next)
	sctx, scancel := s.saveCtx()
	defer scancel()
	if _, err := s.flush(sctx); err != nil {
		s.keepSaving()
		return fmt.Errorf("tokensource: revoke %q: the session ended here, but not yet in the store: %w: %w", s.key, ErrNotSaved, err)
	}
	s.unlockUnlessPending()
	if revokeErr != nil {
		return &revokeError{key: s.key, err: revokeErr, secrets: hide(secretsOf(tok))}
	}
	return nil
}

// revokeAt asks the provider to revoke tok, bounded by ctx even if the
// Revoker ignores it (it is then left running).
func (s *Source) revokeAt(ctx context.Context, tok *oauth2.Token) error {
	rv, ok := s.refresher.(Revoker)
	if !ok {
		return ErrNoRevocationEndpoint
	}
	done := make(chan error, 1)
	go func() { done <- rv.Revoke(ctx, tok) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("revocation request: %w", ctx.Err())
	}
}

// revokeError reports a revocation the provider did not confirm. Like
// RefreshError, it prints its message and nothing else under every fmt
// verb and slog handler.
type revokeError struct {
	key     string
	err     error
	secrets secretList
}

func (e *revokeError) Error() string {
	return fmt.Sprintf("tokensource: revoke %q at the provider (the session ended locally): %s",
		e.key, describe(e.err, e.secrets.values()))
}

func (e *revokeError) Unwrap() error { return e.err }

func (e *revokeError) Format(f fmt.State, verb rune) { formatAs(f, verb, e.Error()) }
func (e *revokeError) GoString() string              { return e.Error() }
func (e *revokeError) LogValue() slog.Value          { return slog.StringValue(e.Error()) }

// Close stops background work. A refresh whose request already reached the
// provider is let finish, for up to the close grace (see [WithCloseGrace]),
// and its result is saved; work that sent nothing is cancelled at once. If
// the newest token was never saved, Close makes a last attempt and returns
// an error matching ErrNotSaved when it fails: the token is then lost, and
// the session with it at providers that rotate refresh tokens. Afterwards
// every method returns ErrClosed.
func (s *Source) Close() error {
	if err := s.usable(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stopped.fire()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	grace := time.NewTimer(s.cfg.closeGrace)
	select {
	case <-done:
	case <-grace.C:
		s.hard.fire()
		<-done
	}
	grace.Stop()
	s.hard.fire()

	var err error
	// The last save may have to wait for the store's lock, held by another
	// process: as long as any lock wait, and then as long as any save.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.lockTimeout+s.cfg.attemptTimeout)
	defer cancel()
	s.takeTurn(context.Background()) // free: everything that took it has returned
	if st := s.cur.Load(); st != nil && st.unsaved {
		_, err = s.lock(ctx)
		if err == nil {
			_, err = s.flush(ctx)
		}
		if err != nil {
			err = fmt.Errorf("tokensource: close %q: the newest token is lost: %w: %w", s.key, ErrNotSaved, err)
			s.event(Event{Kind: Lost, Err: err})
		}
	}
	s.unlock()
	s.giveTurn()
	s.replace(&state{ended: ErrClosed})
	return err
}
