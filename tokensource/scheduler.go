package tokensource

import (
	"container/heap"
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Scheduler refreshes the tokens of many Sources in the background when
// they turn stale, so that their callers never wait, however seldom they
// call: a job that asks once an hour for a token that lives an hour finds a
// fresh one every time. With [WithKeepAlive], it also redeems a refresh
// token before it dies unused.
//
// One Scheduler serves a whole process. It keeps its Sources in a timer
// heap, ordered by the moment each is due, and runs one goroutine and one
// timer for all of them — none per Source — plus one goroutine per refresh
// under way, at most MaxRunning. A Source joins the heap once it serves a
// session (after its first token or Put) and leaves it when the session
// ends or the Source is closed; every change of the session moves it, in
// O(log n). A Source is due at its stale point (see the package
// documentation), which its jitter already spreads across Sources; never
// before the provider's back-off ends (HTTP 429 or 503 with Retry-After); and,
// after a refresh that failed, an eighth of the time left later, as for a
// refresh started by a caller. A scheduled refresh is the Source's
// background refresh: one at a time per Source, shared with callers who
// arrive meanwhile, bounded by the refresh deadline and by the Source's
// [Limits], and stopped by Close.
//
// The Scheduler wakes at least once a minute. When the wall clock has moved
// more or less than the monotonic clock since it last woke — the machine
// slept, a virtual machine was paused, the clock was set — it works out
// again when every Source is due, from the wall clock, on which token
// expiries are stated. Sources that came due meanwhile are then refreshed,
// MaxRunning at a time.
//
// A zero Scheduler is ready to use. Its goroutine starts with the first
// Source and ends when no Source is left, so a Scheduler needs no closing.
// A Scheduler is safe for concurrent use; its fields must not change after
// the first Source joins it.
type Scheduler struct {
	// MaxRunning caps the refreshes the Scheduler runs at once. If 0 or
	// less, 16. Refreshes that callers start are not counted; a cap on all
	// refreshes, and a rate toward each provider, are set with [Limits].
	MaxRunning int

	// Logger receives a record when a clock jump is detected. If nil,
	// nothing is logged.
	Logger *slog.Logger

	mu       sync.Mutex    // guards the fields below and the slot of every Source that uses the Scheduler
	queue    queue         // Sources by due time, earliest first
	running  int           // scheduled refreshes under way
	active   bool          // the goroutine runs
	wake     chan struct{} // nudges the goroutine: an earlier head, a finished refresh; made on first use
	lastWall time.Time     // the wall clock when the goroutine last woke
	lastMono time.Time     // the same moment, with its monotonic reading
	jumps    int           // clock jumps detected

	skew time.Duration // tests: added to the wall clock, to fake a jump
}

// slot is a Source's place in its Scheduler. It is guarded by the
// Scheduler's mu.
type slot struct {
	pos     int   // index in the queue + 1; 0 when not queued
	when    int64 // when the Source is due, in Unix nanoseconds of the wall clock
	running bool  // a refresh the Scheduler started is under way; not queued meanwhile
}

const (
	defaultMaxRunning = 16

	// maxSleep bounds the Scheduler's sleep, so that a clock jump is seen
	// within it even though timers run on the monotonic clock, which stands
	// still while the machine sleeps.
	maxSleep = time.Minute

	// jumpThreshold is the difference between wall and monotonic time
	// elapsed above which the Scheduler reckons the clock jumped.
	jumpThreshold = time.Second

	// busyRetry is how long the Scheduler leaves a Source that was due but
	// already refreshing on behalf of a caller.
	busyRetry = time.Second
)

// WithScheduler makes sc refresh the Source's token in the background when
// it turns stale, without waiting for a caller (see [Scheduler]). If nil or
// not given, a stale token is refreshed when a caller asks for it.
func WithScheduler(sc *Scheduler) Option {
	return func(c *config) { c.sched = sc }
}

// keepAlive configures WithKeepAlive.
type keepAlive struct {
	on   bool
	idle time.Duration // assumed when the provider states none; 0 for none
}

// WithKeepAlive makes the Source redeem its refresh token before it dies
// unused: providers end a refresh token that was not used for its idle
// lifetime (Okta and Auth0 inactivity lifetimes, Google after six months,
// Entra ID after 90 days), and a session whose Source nobody asks for meets
// that end silently.
//
// The idle lifetime is the provider's refresh_expires_in when its answer
// has one, and idle otherwise; an idle of 0 keeps a session alive only
// when the provider states it. The refresh token is redeemed once three
// quarters of its idle lifetime have passed since it was issued — that is,
// since the access token issued with it, whose lifetime tells when — by
// making the token stale at that moment if it is not stale sooner. With a
// [Scheduler] that happens without callers; with WithEarlyRefresh(0) the
// Scheduler then refreshes for keep-alive only, one request per idle
// lifetime instead of one per access token. A token without an expiry, or
// with no lifetime known, is not kept alive: when it was issued is unknown.
func WithKeepAlive(idle time.Duration) Option {
	return func(c *config) { c.keepAlive = keepAlive{on: true, idle: max(idle, 0)} }
}

// keepAliveAt returns when t's refresh token is to be redeemed so that it
// does not die unused, and when it dies; ok is false when keep-alive is off
// or does not apply. lifetime is the one granted with t, or 0.
func (s *Source) keepAliveAt(t *oauth2.Token, lifetime time.Duration) (at, dies time.Time, ok bool) {
	if !s.cfg.keepAlive.on || t == nil || t.RefreshToken == "" || t.Expiry.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	if lifetime <= 0 {
		lifetime = time.Duration(t.ExpiresIn) * time.Second
	}
	if lifetime <= 0 {
		return time.Time{}, time.Time{}, false
	}
	issued := t.Expiry.Round(0).Add(-lifetime)
	idle := s.cfg.keepAlive.idle
	if e := refreshExpiry(t, issued); !e.IsZero() {
		idle = e.Sub(issued)
	}
	if idle <= 0 {
		return time.Time{}, time.Time{}, false
	}
	return issued.Add(idle - idle/4), issued.Add(idle), true
}

// due returns when s is next due for a scheduled refresh, in Unix
// nanoseconds of the wall clock, or false when nothing is to be scheduled:
// no session is served, it ended, the Source closed, or neither background
// refresh nor keep-alive applies.
func (s *Source) due() (int64, bool) {
	st := s.cur.Load()
	if st == nil || st.tok == nil || st.ended != nil || s.stopped.Err() != nil {
		return 0, false
	}
	var at time.Time
	if s.cfg.early > 0 {
		at = st.staleAt // the keep-alive point, if sooner (see stateFor)
	} else {
		k, _, ok := s.keepAliveAt(st.tok, st.lifetime)
		if !ok {
			return 0, false
		}
		at = k
	}
	if !at.Before(never) {
		return 0, false
	}
	if at.Before(st.retryAfter) {
		at = st.retryAfter
	}
	when := unixNano(at)
	return max(when, s.notBefore.Load()), true
}

// unixNano returns t in Unix nanoseconds, as math.MinInt64 for the zero
// time (due at once) and clamped to what an int64 holds.
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return math.MinInt64
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// retryPause is how long a failed scheduled refresh is left before the next
// try: an eighth of the time left before the token (or, kept alive, its
// refresh token) must be renewed, as for a refresh a caller started; for a
// token already past it, an eighth of its lifetime, at least a minute, so
// that many expired sessions and a failing provider do not make a loop.
func (s *Source) retryPause(now time.Time) time.Duration {
	st := s.cur.Load()
	if st == nil {
		return time.Minute
	}
	deadline := never
	if s.cfg.early > 0 {
		deadline = st.expireAt
	}
	if _, dies, ok := s.keepAliveAt(st.tok, st.lifetime); ok && dies.Before(deadline) {
		deadline = dies
	}
	if left := deadline.Sub(now); left > 0 {
		return max(time.Second, left/8)
	}
	return max(time.Minute, st.lifetime/8)
}

// refreshScheduled starts a background refresh of s on behalf of the
// Scheduler, unless one is running or s is closed, and reports whether it
// did. done runs when the refresh has ended, after a failure was noted.
func (s *Source) refreshScheduled(done func()) bool {
	if !s.background.CompareAndSwap(false, true) {
		return false
	}
	if !s.enter() {
		s.background.Store(false)
		return false
	}
	go func() {
		defer s.wg.Done()
		defer done()
		defer s.background.Store(false)
		if _, err := s.share(true); err != nil {
			now := time.Now()
			s.notBefore.Store(now.Add(s.retryPause(now)).UnixNano())
		}
	}()
	return true
}

// update moves s to the moment it is next due, or out of the queue. It is
// called after every change of the served state (see Source.swap), and
// takes the Scheduler's mutex for an O(log n) heap operation.
func (sc *Scheduler) update(s *Source) {
	sc.mu.Lock()
	sc.place(s)
	sc.mu.Unlock()
}

// place queues s at the time its current state is due, or removes it. The
// caller holds mu. Reading the state under mu, rather than taking the one
// a writer installed, keeps the queue right when writers race: the last to
// place s sees the newest state.
func (sc *Scheduler) place(s *Source) {
	if s.slot.running {
		return // finish places it
	}
	when, ok := s.due()
	switch {
	case !ok:
		if s.slot.pos > 0 {
			heap.Remove(&sc.queue, s.slot.pos-1)
			if len(sc.queue) == 0 && sc.running == 0 {
				sc.nudge() // nothing left: let the goroutine end
			}
		}
		return
	case s.slot.pos > 0:
		s.slot.when = when
		heap.Fix(&sc.queue, s.slot.pos-1)
	default:
		s.slot.when = when
		heap.Push(&sc.queue, s)
	}
	switch {
	case !sc.active:
		sc.active = true
		sc.wake = make(chan struct{}, 1)
		go sc.run(sc.wake)
	case s.slot.pos == 1:
		sc.nudge() // a new head: the goroutine may sleep too long
	}
}

// nudge wakes the goroutine without blocking. The caller holds mu.
func (sc *Scheduler) nudge() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

func (sc *Scheduler) max() int {
	if sc.MaxRunning > 0 {
		return sc.MaxRunning
	}
	return defaultMaxRunning
}

// run is the Scheduler's goroutine: it starts the refreshes that are due,
// no more than MaxRunning at once, sleeps until the next is due, and ends
// when no Source is left.
func (sc *Scheduler) run(wake <-chan struct{}) {
	timer := time.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		sc.mu.Lock()
		now := time.Now()
		sc.checkClock(now)
		due := sc.popDue(now)
		if len(sc.queue) == 0 && sc.running == 0 {
			sc.active = false
			sc.mu.Unlock()
			return
		}
		sleep := maxSleep
		if len(sc.queue) > 0 && sc.running < sc.max() {
			sleep = min(sleep, time.Duration(sc.queue[0].slot.when-now.UnixNano()))
		}
		sc.mu.Unlock()

		if len(due) > 0 {
			for _, s := range due {
				sc.start(s)
			}
			continue
		}
		timer.Reset(max(sleep, 0))
		select {
		case <-timer.C:
		case <-wake:
		}
	}
}

// popDue takes the Sources that are due at now off the queue, as many as
// may start, and counts them as running. The caller holds mu.
func (sc *Scheduler) popDue(now time.Time) []*Source {
	var due []*Source
	wall := now.UnixNano()
	for len(sc.queue) > 0 && sc.running < sc.max() && sc.queue[0].slot.when <= wall {
		s := heap.Pop(&sc.queue).(*Source)
		when, ok := s.due() // moved on without a swap: a failure noted, Close under way
		switch {
		case !ok:
			continue
		case when > wall:
			s.slot.when = when
			heap.Push(&sc.queue, s)
			continue
		}
		s.slot.running = true
		sc.running++
		due = append(due, s)
	}
	return due
}

// start starts the scheduled refresh of s. If s is already refreshing for
// a caller, it is looked at again shortly: that refresh moves it if it
// succeeds, and notes when to try again if it fails.
func (sc *Scheduler) start(s *Source) {
	if s.refreshScheduled(func() { sc.finish(s) }) {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	s.slot.running = false
	sc.running--
	when, ok := s.due()
	if !ok {
		return
	}
	s.slot.when = max(when, time.Now().Add(busyRetry).UnixNano())
	heap.Push(&sc.queue, s)
}

// finish ends a scheduled refresh of s and queues s again.
func (sc *Scheduler) finish(s *Source) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	s.slot.running = false
	sc.running--
	sc.place(s)
	sc.nudge() // a refresh may start in its place
}

// checkClock compares the wall and monotonic time elapsed since the last
// wake, and works out every due time again when they differ by more than
// jumpThreshold. The caller holds mu.
func (sc *Scheduler) checkClock(now time.Time) {
	wall := now.Round(0).Add(sc.skew)
	if !sc.lastMono.IsZero() {
		jump := wall.Sub(sc.lastWall) - now.Sub(sc.lastMono)
		if jump > jumpThreshold || jump < -jumpThreshold {
			sc.jumps++
			sc.reevaluate()
			if sc.Logger != nil {
				sc.Logger.LogAttrs(context.Background(), slog.LevelInfo, "tokensource: clock jump; rescheduling refreshes",
					slog.Duration("jump", jump), slog.Int("sources", len(sc.queue)))
			}
		}
	}
	sc.lastWall, sc.lastMono = wall, now
}

// reevaluate works out again when every queued Source is due, drops those
// that no longer are, and rebuilds the heap. The caller holds mu.
func (sc *Scheduler) reevaluate() {
	q := sc.queue[:0]
	for _, s := range sc.queue {
		when, ok := s.due()
		if !ok {
			s.slot.pos = 0
			continue
		}
		s.slot.when = when
		q = append(q, s)
	}
	clear(sc.queue[len(q):])
	sc.queue = q
	for i, s := range sc.queue {
		s.slot.pos = i + 1
	}
	heap.Init(&sc.queue)
}

// queue is a heap of Sources by due time; each Source knows its index.
type queue []*Source

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].slot.when < q[j].slot.when }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].slot.pos = i + 1
	q[j].slot.pos = j + 1
}

func (q *queue) Push(x any) {
	s := x.(*Source)
	s.slot.pos = len(*q) + 1
	*q = append(*q, s)
}

func (q *queue) Pop() any {
	old := *q
	n := len(old)
	s := old[n-1]
	old[n-1] = nil
	*q = old[:n-1]
	s.slot.pos = 0
	return s
}
