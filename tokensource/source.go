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
	store     storage.Store // and its storage.Locker and GenerationWaiter, if it is one
	key       string
	cfg       config

	cur  atomic.Pointer[state] // the served state; nil until first use
	seen atomic.Uint64         // the highest generation loaded or written
	held *heldLock             // guarded by the turn: the store's lock, kept while a save is pending

	stopped stopSignal // fired by Close: start nothing new
	hard    stopSignal // fired by Close once its grace has passed

	mu      sync.Mutex     // guards call, waiting, closed, turn and wg.Add
	call    *call          // the refresh under way, which callers join; nil when none
	waiting *turnWaiter    // the operations waiting for the turn, first come first
	wg      sync.WaitGroup // refreshes, save retries and Puts under way
	closed  bool           // Close was called
	// turn is held by the one operation that may write the store: a
	// refresh, Put, Revoke, a save retry, or Close's last save. It is held
	// across I/O, but never by a caller whose token is fresh.
	turn bool

	background atomic.Bool  // a background refresh is running
	saving     atomic.Bool  // the save retry loop is running
	notBefore  atomic.Int64 // no background refresh before this (Unix ns)

	slot slot // guarded by cfg.sched's mu: this Source's place in its Scheduler
}

// heldLock is the store's lock as a Source holds it.
type heldLock struct {
	unlock func() error
	lease  context.Context // done when the lock is known lost; nil for locks that cannot be lost
}

// lost reports whether the lock is known to be lost.
func (h *heldLock) lost() bool { return h.lease != nil && h.lease.Err() != nil }

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
		if o != nil {
			o(&s.cfg)
		}
	}
	return s, nil
}

// usable reports whether s was made by New; a zero Source is not.
func (s *Source) usable() error {
	if s == nil || s.refresher == nil {
		return errors.New("tokensource: Source not made by New")
	}
	return nil
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
		now := time.Now()
		if now.Before(st.staleAt) {
			return st.tok, nil
		}
		if now.Before(st.expireAt) {
			s.refreshEarly(st, now)
			return st.tok, nil
		}
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	return s.wait(ctx)
}

// wait joins (or starts) the refresh and waits for it or for ctx. While the
// provider's back-off runs, it waits for its end if ctx and the refresh
// deadline allow, and otherwise fails at once without calling the provider.
func (s *Source) wait(ctx context.Context) (*oauth2.Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokensource: token for %q: %w", s.key, err)
	}
	if st := s.cur.Load(); st != nil && st.ended == nil {
		if err := s.waitBackOff(ctx, st.retryAfter); err != nil {
			return nil, err
		}
	}
	for joined := false; ; joined = true {
		c, first := s.join()
		if first {
			go s.run(c, false)
		}
		select {
		case <-c.done:
			switch {
			case c.err != nil:
				return nil, c.err
			case !first && !joined && s.refused(c.tok):
				// The refresh joined began before a server refused the
				// token it ended with (Invalidate): one more is needed.
				continue
			}
			return c.tok, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("tokensource: waiting for refresh of %q: %w", s.key, ctx.Err())
		}
	}
}

// refused reports whether t is the token a server refused (Invalidate)
// since it was served.
func (s *Source) refused(t *oauth2.Token) bool {
	st := s.cur.Load()
	return st != nil && st.rejected != "" && t != nil && st.rejected == t.AccessToken
}

// waitBackOff waits until the provider's back-off ends at until, or
// returns a *BackOffError if ctx or the refresh deadline end first.
func (s *Source) waitBackOff(ctx context.Context, until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); d > s.cfg.refreshTimeout || (ok && until.After(deadline)) {
		return &BackOffError{Key: s.key, Until: until}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tokensource: waiting for the provider's back-off of %q: %w", s.key, ctx.Err())
	case <-s.stopped.Done():
		return ErrClosed
	}
}

// refreshEarly starts a background refresh of st unless one is running, the
// last one failed too recently, or the provider asked to wait.
func (s *Source) refreshEarly(st *state, now time.Time) {
	if now.UnixNano() < s.notBefore.Load() || now.Before(st.retryAfter) || !s.background.CompareAndSwap(false, true) {
		return
	}
	if !s.enter() {
		s.background.Store(false)
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.background.Store(false)
		if _, err := s.share(true); err != nil {
			// Try again after an eighth of the time left, so that a
			// provider outage costs a handful of attempts per lifetime.
			now := time.Now()
			pause := max(time.Second, st.expireAt.Sub(now)/8)
			s.notBefore.Store(now.Add(pause).UnixNano())
		}
	}()
}

// call is one refresh, shared by the callers who arrive while it runs,
// so that a Source runs one at a time. A singleflight.Group would keep the
// map in which it finds its calls for as long as the Source lives; a
// Source keeps nothing of a call once it ended.
type call struct {
	done chan struct{} // closed once tok and err are set
	tok  *oauth2.Token
	err  error
}

// errAbandoned is what the callers of a refresh are told if it panicked
// or called runtime.Goexit.
var errAbandoned = errors.New("tokensource: the refresh ended without a result")

// join returns the refresh under way, or a new one that the caller must
// start with run (first is then true).
func (s *Source) join() (c *call, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.call != nil {
		return s.call, false
	}
	s.call = &call{done: make(chan struct{})}
	return s.call, true
}

// run runs the refresh c, which join returned first, then tells its
// callers and lets the next refresh start.
func (s *Source) run(c *call, background bool) {
	c.err = errAbandoned // unless flight returns
	defer func() {
		s.mu.Lock()
		s.call = nil
		s.mu.Unlock()
		close(c.done)
	}()
	c.tok, c.err = s.flight(background)
}

// share joins the refresh under way, or runs one on the calling goroutine,
// and returns its result.
func (s *Source) share(background bool) (*oauth2.Token, error) {
	c, first := s.join()
	if first {
		s.run(c, background)
	} else {
		<-c.done
	}
	return c.tok, c.err
}

// flight runs one refresh, detached from callers, bounded by the refresh
// timeout and by Close.
func (s *Source) flight(background bool) (*oauth2.Token, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.wg.Done()
	deadline := time.Now().Add(s.cfg.refreshTimeout)
	hard, cancelHard := s.hard.withDeadline(deadline)
	defer cancelHard()
	soft, cancelSoft := s.stopped.withDeadline(deadline) // Close ends it before hard
	defer cancelSoft()

	if !s.takeTurn(soft) {
		if st := s.cur.Load(); st.servable(time.Now()) {
			return st.tok, nil // the turn's holder was a Put or a save: nothing to refresh
		}
		return nil, s.closedOr(fmt.Errorf("tokensource: refresh %q: %w", s.key, soft.Err()))
	}
	defer s.giveTurn()
	st := s.cur.Load()
	if st != nil && st.tok != nil && st.rejected == "" && st.ended == nil && time.Now().Before(st.staleAt) {
		return st.tok, nil // a refresh that ended while this one waited for the turn
	}
	r := &refresh{s: s, start: st, background: background, began: time.Now(), soft: soft, hard: hard}
	defer s.unlockUnlessPending() // before the turn is given back, even if the run ends in runtime.Goexit
	return r.run()
}

// closedOr returns ErrClosed once Close was called, and err otherwise.
func (s *Source) closedOr(err error) error {
	if s.stopped.Err() != nil {
		return ErrClosed
	}
	return err
}

// turnWaiter is an operation waiting for the turn.
type turnWaiter struct {
	given chan struct{} // closed when the turn is handed to it
	next  *turnWaiter
}

// takeTurn waits for the turn until ctx ends, and reports whether it took
// it. The turn goes to waiters in the order they came. A free turn is
// taken even if ctx has ended.
func (s *Source) takeTurn(ctx context.Context) bool {
	s.mu.Lock()
	if !s.turn {
		s.turn = true
		s.mu.Unlock()
		return true
	}
	w := &turnWaiter{given: make(chan struct{})}
	last := &s.waiting
	for *last != nil {
		last = &(*last).next
	}
	*last = w
	s.mu.Unlock()

	select {
	case <-w.given:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := &s.waiting; *p != nil; p = &(*p).next {
		if *p == w {
			*p = w.next
			return false
		}
	}
	return true // handed the turn as ctx ended: it is ours to give back
}

// giveTurn hands the turn to the first waiter, or frees it.
func (s *Source) giveTurn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.waiting; w != nil {
		s.waiting = w.next
		close(w.given)
		return
	}
	s.turn = false
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

// lock makes sure the Source holds the store's lock, taking it if needed,
// waiting no longer than ctx and the lock timeout allow. The caller holds
// the turn. It returns the lease context of the lock, or nil.
func (s *Source) lock(ctx context.Context) (context.Context, error) {
	locker, ok := s.store.(storage.Locker)
	if !ok {
		return nil, nil
	}
	if s.held != nil && !s.held.lost() {
		return s.held.lease, nil
	}
	if s.held != nil {
		s.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "tokensource: store lock lost; taking it again", slog.String("key", s.key))
		s.held.unlock()
		s.held = nil
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.lockTimeout)
	defer cancel()
	h := &heldLock{}
	var err error
	if leaser, ok := s.store.(storage.LeaseLocker); ok {
		h.lease, h.unlock, err = leaser.LockLease(lctx, s.key)
	} else {
		h.unlock, err = locker.Lock(lctx, s.key)
	}
	if err != nil {
		return nil, fmt.Errorf("tokensource: lock %q: %w", s.key, err)
	}
	s.held = h
	return h.lease, nil
}

// lockOrMoved is lock for a Source that has nothing to save, over a store
// that can tell when an entry moves on: while it waits for the lock, it
// watches the stored generation, and gives up waiting as soon as it is
// other than after, reporting moved. Another process saved the entry
// meanwhile, and what it saved can often be adopted without the lock: the
// processes waiting behind a refresh all learn its token at once instead of
// taking the lock one by one. A failed watch leaves the lock to be waited
// for.
func (s *Source) lockOrMoved(ctx context.Context, after uint64) (lease context.Context, moved bool, err error) {
	waiter, ok := s.store.(storage.GenerationWaiter)
	if _, locks := s.store.(storage.Locker); !ok || !locks || s.held != nil {
		lease, err = s.lock(ctx)
		return lease, false, err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var changed atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if gen, err := waiter.WaitGeneration(lctx, s.key, after); err == nil && gen != after {
			changed.Store(true)
			cancel()
		}
	}()
	lease, err = s.lock(lctx)
	cancel()
	<-watched
	if err != nil && changed.Load() && ctx.Err() == nil {
		return nil, true, nil
	}
	return lease, false, err
}

// unlockUnlessPending releases the store's lock unless the served token
// still has to be saved: until it is, other processes must wait rather
// than redeem the refresh token it replaced. The caller holds the turn.
func (s *Source) unlockUnlessPending() {
	if st := s.cur.Load(); st != nil && st.unsaved {
		return
	}
	s.unlock()
}

// unlock releases the store's lock if the Source holds it. The caller
// holds the turn.
func (s *Source) unlock() {
	if s.held == nil {
		return
	}
	if err := s.held.unlock(); err != nil {
		s.cfg.logger.LogAttrs(context.Background(), slog.LevelWarn, "tokensource: releasing the store lock failed",
			slog.String("key", s.key), slog.String("error", err.Error()))
	}
	s.held = nil
}

// load reads the stored record: nil when there is none. A generation lower
// than one this Source has seen is a rollback, reported as an error that
// matches storage.ErrCorrupt.
func (s *Source) load(ctx context.Context) (*storage.Record, error) {
	rec, err := s.store.Load(ctx, s.key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case rec == nil:
		return nil, fmt.Errorf("tokensource: store returned no record for %q: %w", s.key, storage.ErrCorrupt)
	}
	if seen := s.seen.Load(); rec.Generation < seen {
		return nil, &rollbackError{key: s.key, got: rec.Generation, seen: seen}
	}
	s.observe(rec.Generation)
	return rec, nil
}

// observe raises the highest generation seen to gen.
func (s *Source) observe(gen uint64) {
	for {
		seen := s.seen.Load()
		if gen <= seen || s.seen.CompareAndSwap(seen, gen) {
			return
		}
	}
}

// install serves next in place of from, unless the session was replaced
// (Put, Revoke, Close) since from; it reports whether it did. A rejection
// of next's token that was made meanwhile (Invalidate) is kept.
func (s *Source) install(from, next *state) bool {
	for {
		if s.swap(from, next) {
			return true
		}
		cur := s.cur.Load()
		if epochOf(cur) != epochOf(from) {
			return false
		}
		if cur.rejected != "" && next.tok != nil && cur.rejected == next.tok.AccessToken {
			c := *next
			c.rejected, c.staleAt, c.expireAt = cur.rejected, time.Time{}, time.Time{}
			next = &c
		}
		from = cur
	}
}

// replace serves next whatever is served, as a new epoch: the session is
// replaced.
func (s *Source) replace(next *state) {
	for {
		cur := s.cur.Load()
		next.epoch = epochOf(cur) + 1
		if s.swap(cur, next) {
			return
		}
	}
}

func epochOf(st *state) uint64 {
	if st == nil {
		return 0
	}
	return st.epoch
}

// saveCtx bounds one store write that must happen even while Close runs:
// the write of a token the provider already issued.
func (s *Source) saveCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.attemptTimeout)
}

// Put stores t, typically the token of a new login, and serves it from now
// on, replacing whatever session the store held. It clears any need to
// re-authenticate, in every process sharing the store.
//
// If t cannot be saved within ctx and the lock timeout — the store fails,
// or its lock is held elsewhere — Put returns an error matching ErrNotSaved,
// serves t from memory and keeps trying to save it in the background.
func (s *Source) Put(ctx context.Context, t *oauth2.Token) error {
	if err := s.usable(); err != nil {
		return err
	}
	if t == nil || (t.AccessToken == "" && t.RefreshToken == "") {
		return errors.New("tokensource: Put needs a token with an access or refresh token")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.wg.Done()
	t = tokencodec.Clone(t)
	now := time.Now()
	next := s.stateFor(t, lifetimeOf(t, now), now)
	next.unsaved, next.overwrite = true, true
	s.notBefore.Store(0)

	pctx, cancel := context.WithTimeout(ctx, s.cfg.lockTimeout)
	defer cancel()
	defer s.stopped.AfterFunc(cancel)() // Close saves it instead
	if !s.takeTurn(pctx) {
		s.replace(next)
		s.keepSaving()
		return fmt.Errorf("tokensource: put %q: another operation holds the session: %w: %w", s.key, ErrNotSaved, pctx.Err())
	}
	defer s.giveTurn()
	s.replace(next)
	if _, err := s.lock(pctx); err != nil {
		s.keepSaving()
		return fmt.Errorf("tokensource: put %q: %w: %w", s.key, ErrNotSaved, err)
	}
	if _, err := s.flush(pctx); err != nil {
		s.keepSaving()
		return fmt.Errorf("tokensource: put %q: %w: %w", s.key, ErrNotSaved, err)
	}
	s.unlockUnlessPending()
	return nil
}

// Invalidate reports that a server refused used (for example with HTTP 401).
// If used is still the token being served, the next call refreshes instead
// of serving it, and no refresh adopts it again; if it was already
// replaced, Invalidate does nothing, so many requests failing with the same
// token cause one refresh.
func (s *Source) Invalidate(used *oauth2.Token) {
	if s == nil || used == nil || used.AccessToken == "" {
		return
	}
	for {
		st := s.cur.Load()
		if st == nil || st.tok == nil || st.rejected != "" || st.tok.AccessToken != used.AccessToken {
			return
		}
		next := *st
		next.rejected = used.AccessToken
		next.staleAt, next.expireAt = time.Time{}, time.Time{}
		if s.swap(st, &next) {
			return
		}
	}
}

// String describes the Source without any token.
func (s *Source) String() string {
	if s == nil {
		return "tokensource.Source(nil)"
	}
	return fmt.Sprintf("tokensource.Source{key: %q}", s.key)
}

// LogValue implements slog.LogValuer: only the key is logged.
func (s *Source) LogValue() slog.Value {
	if s == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("key", s.key))
}
