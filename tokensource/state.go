package tokensource

import (
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// state is what a Source serves. It is replaced whole, and only through
// [Source.swap], on every change: the served state is the Source's one
// ordering point.
type state struct {
	gen      uint64        // the stored generation tok came from, or will be saved as when unsaved
	epoch    uint64        // +1 whenever Put, Revoke or Close replaces the session
	tok      *oauth2.Token // nil when nothing can be served
	staleAt  time.Time     // from here on, tok is served and refreshed in the background
	expireAt time.Time     // from here on, tok is not served
	lifetime time.Duration // granted when tok was issued; 0 when unknown

	rejected   string    // the access token a server refused (Invalidate); never served again
	unsaved    bool      // tok is newer than the store: its record is not saved yet
	overwrite  bool      // with unsaved: a login or a logout, saved over whatever the store holds
	ended      error     // the session ended; served once tok is gone or expired
	endReason  string    // with ended: why, for the stored record
	retryAfter time.Time // the provider asked not to be called before this
	refreshExp time.Time // the refresh token dies unused at this moment; zero when unknown
}

// never is later than any expiry.
var never = time.Unix(1<<62, 0)

// servable reports whether st's token may be handed out at now.
func (st *state) servable(now time.Time) bool {
	return st != nil && st.tok != nil && now.Before(st.expireAt)
}

// record returns the record st stands for.
func (st *state) record() *storage.Record {
	if st.ended != nil {
		return &storage.Record{Generation: st.gen, State: storage.Ended, Reason: st.endReason}
	}
	r := storage.NewRecord(st.gen-1, st.tok)
	r.Lifetime, r.RetryAfter, r.RefreshExpiry = st.lifetime, st.retryAfter, st.refreshExp
	return r
}

// lifetimeOf returns the lifetime granted for t, received at now: the
// provider's expires_in, else the time left until its expiry, else 0.
func lifetimeOf(t *oauth2.Token, now time.Time) time.Duration {
	switch {
	case t == nil:
		return 0
	case t.ExpiresIn > 0:
		return time.Duration(t.ExpiresIn) * time.Second
	case !t.Expiry.IsZero():
		return max(t.Expiry.Round(0).Sub(now), 0)
	}
	return 0
}

// stateFor computes when t, granted for lifetime, turns stale and invalid.
// The lifetime scales both margins, so that short-lived tokens are still
// used and a token loaded from storage late in its life is refreshed early.
// A lifetime of 0 (unknown: a token stored by an older release) falls back
// to expires_in, then to the time left.
func (s *Source) stateFor(t *oauth2.Token, lifetime time.Duration, now time.Time) *state {
	st := &state{tok: t, lifetime: lifetime}
	if t.AccessToken == "" {
		return st // only a refresh token: refresh before use
	}
	if t.Expiry.IsZero() {
		st.staleAt, st.expireAt = never, never
		return st
	}
	// Round(0) drops the monotonic reading a freshly received Expiry
	// carries, so that comparisons use the wall clock: the monotonic clock
	// stands still while the machine sleeps, and a token must not look
	// fresh to a laptop that wakes up hours after it expired.
	expiry := t.Expiry.Round(0)
	life := lifetime
	if life <= 0 {
		life = lifetimeOf(t, now)
	}
	st.expireAt = expiry.Add(-min(s.cfg.expiryDelta, life/10))
	window := min(s.cfg.early, life/4)
	if window > 0 {
		window += time.Duration(s.cfg.jitter(int64(window/4) + 1))
	}
	st.staleAt = st.expireAt.Add(-window)
	return st
}

// stateOf returns the state that serves the live record r.
func (s *Source) stateOf(r *storage.Record, epoch uint64, now time.Time) *state {
	st := s.stateFor(r.Token, r.Lifetime, now)
	st.gen, st.epoch = r.Generation, epoch
	st.retryAfter, st.refreshExp = r.RetryAfter, r.RefreshExpiry
	return st
}

// fromRecord returns the state that serves rec, which may be nil (the
// entry was deleted), ended or live.
func (s *Source) fromRecord(rec *storage.Record, epoch uint64, now time.Time) *state {
	switch {
	case rec == nil:
		return s.endedState(0, epoch, "the stored session was deleted")
	case rec.State == storage.Ended:
		return s.endedState(rec.Generation, epoch, rec.Reason)
	}
	return s.stateOf(rec, epoch, now)
}

// endedState is the state of a session that ended for reason.
func (s *Source) endedState(gen, epoch uint64, reason string) *state {
	return &state{gen: gen, epoch: epoch, endReason: reason,
		ended: &reauthError{msg: fmt.Sprintf("tokensource: session %q ended (%s); log in again", s.key, reason)}}
}

// swap replaces from by to in one compare-and-swap. A writer that loses
// has been overtaken and must look at the new state before deciding again.
func (s *Source) swap(from, to *state) bool { return s.cur.CompareAndSwap(from, to) }
