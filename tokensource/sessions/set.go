package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// Defaults for the zero fields of a [Config].
const (
	// DefaultIdle is how long a session stays open unused.
	DefaultIdle = 15 * time.Minute
	// DefaultConcurrency caps the token requests of a Set's sessions that
	// run at once.
	DefaultConcurrency = 16
	// DefaultTimeout bounds each request of a client, as
	// transport.NewClient does.
	DefaultTimeout = 60 * time.Second
)

// Config is the template a [Set] makes its sessions from. Refresher or
// RefresherFor, and Store, are required; every other field has a default.
type Config struct {
	// Refresher renews the tokens of every user's session.
	Refresher tokensource.Refresher
	// RefresherFor returns the Refresher of one user's session, for
	// sessions that need their own (another tenant's endpoint, another
	// client). It is called each time the session is opened, and must be
	// safe for concurrent use. Set either Refresher or RefresherFor.
	RefresherFor func(key string) (tokensource.Refresher, error)

	// Store holds every user's session, under the user's key.
	Store storage.Store

	// Options are given to every session's Source, after the Set's own
	// WithScheduler and WithLimits, which they may replace.
	Options []tokensource.Option

	// Idle is how long a session stays open after its last use through the
	// Set (a token for one of its clients, Client, Source, Put, Revoke).
	// If 0, DefaultIdle; if negative, sessions stay open until Close.
	Idle time.Duration

	// Scheduler refreshes the sessions' tokens before they turn stale, so
	// that no request waits for a refresh. If nil, the Set makes one.
	// Share one Scheduler between the Sets of a process.
	Scheduler *tokensource.Scheduler
	// Limits caps the sessions' token requests: how many run at once and,
	// with Limits.Rate, how many per second. If nil, the Set makes Limits
	// that let DefaultConcurrency run at once, without a rate.
	Limits *tokensource.Limits

	// Base sends the requests of every user's client; its connection pool
	// is shared by all of them. If nil, http.DefaultTransport is used, as
	// it is: not cloned.
	Base http.RoundTripper
	// Hosts lists the hosts that may receive the users' tokens, as
	// transport.Transport.Hosts does. If empty, each client trusts the
	// origin of its first request only.
	Hosts []string
	// Timeout bounds each request of a client, as http.Client.Timeout does.
	// If 0, DefaultTimeout; if negative, there is no limit.
	Timeout time.Duration

	// Logger receives a record when a session closed for idleness could
	// not save its newest token. If nil, nothing is logged. Each Source
	// logs through the Logger given in Options.
	Logger *slog.Logger
}

// Set holds the sessions of many users, each a [tokensource.Source] kept
// under the user's key in one store. See the package documentation.
//
// A Set is safe for concurrent use.
type Set struct {
	refresher func(key string) (tokensource.Refresher, error)
	store     storage.Store
	opts      []tokensource.Option
	idle      time.Duration
	base      http.RoundTripper
	hosts     []string
	timeout   time.Duration
	logger    *slog.Logger

	mu       sync.RWMutex       // guards the fields below
	members  map[string]*member // the open sessions
	closed   bool               // Close was called
	sweeping bool               // the sweeper goroutine runs
	stop     chan struct{}      // closed by Close: ends the sweeper
}

// member is one open session.
type member struct {
	src    *tokensource.Source
	used   atomic.Int64                // last use through the Set, in Unix nanoseconds
	client atomic.Pointer[http.Client] // made on first use
}

// touchGrain is how stale a member's last use may be before it is written
// again, so that requests of one user do not all write one cache line.
const touchGrain = time.Second

// touch notes a use of m now.
func (m *member) touch() {
	now := time.Now().UnixNano()
	if now-m.used.Load() >= int64(touchGrain) {
		m.used.Store(now)
	}
}

// New returns an empty Set that opens sessions from cfg.
func New(cfg Config) (*Set, error) {
	s := &Set{
		store:   cfg.Store,
		idle:    cfg.Idle,
		base:    cfg.Base,
		hosts:   slices.Clone(cfg.Hosts),
		timeout: cfg.Timeout,
		logger:  cfg.Logger,
		members: make(map[string]*member),
		stop:    make(chan struct{}),
	}
	switch {
	case cfg.Store == nil:
		return nil, errors.New("sessions: Config.Store is nil")
	case cfg.Refresher == nil && cfg.RefresherFor == nil:
		return nil, errors.New("sessions: Config needs a Refresher or a RefresherFor")
	case cfg.Refresher != nil && cfg.RefresherFor != nil:
		return nil, errors.New("sessions: Config has both a Refresher and a RefresherFor; set one")
	case cfg.Refresher != nil:
		r := cfg.Refresher
		if v, ok := r.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, fmt.Errorf("sessions: %w", err)
			}
		}
		s.refresher = func(string) (tokensource.Refresher, error) { return r, nil }
	default:
		s.refresher = cfg.RefresherFor
	}
	if s.idle == 0 {
		s.idle = DefaultIdle
	}
	if s.base == nil {
		s.base = http.DefaultTransport
	}
	switch {
	case s.timeout == 0:
		s.timeout = DefaultTimeout
	case s.timeout < 0:
		s.timeout = 0
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	sched, limits := cfg.Scheduler, cfg.Limits
	if sched == nil {
		sched = &tokensource.Scheduler{}
	}
	if limits == nil {
		limits = tokensource.NewLimits(DefaultConcurrency)
	}
	s.opts = append([]tokensource.Option{tokensource.WithScheduler(sched), tokensource.WithLimits(limits)}, cfg.Options...)
	return s, nil
}

// errClosed is returned once the Set is closed.
var errClosed = fmt.Errorf("sessions: set closed: %w", tokensource.ErrClosed)

// open returns the open session of key, opening it if needed. Opening does
// no I/O: the Source reads the store on first use.
func (s *Set) open(key string) (*member, error) {
	s.mu.RLock()
	m, ok := s.members[key]
	closed := s.closed
	s.mu.RUnlock()
	switch {
	case ok:
		m.touch()
		return m, nil
	case closed:
		return nil, errClosed
	}
	r, err := s.refresher(key)
	if err != nil {
		return nil, fmt.Errorf("sessions: refresher for %q: %w", key, err)
	}
	src, err := tokensource.New(r, s.store, key, s.opts...)
	if err != nil {
		return nil, fmt.Errorf("sessions: open %q: %w", key, err)
	}
	s.mu.Lock()
	if m, ok = s.members[key]; !ok && !s.closed {
		m = &member{src: src}
		s.members[key] = m
		if s.idle > 0 && !s.sweeping {
			s.sweeping = true
			go s.sweep()
		}
	}
	closed = s.closed
	s.mu.Unlock()
	if m == nil || m.src != src {
		src.Close() // unused: it did nothing yet
	}
	if m == nil || closed {
		return nil, errClosed
	}
	m.touch()
	return m, nil
}

// do runs f on the open Source of key. A Source the Set closed for
// idleness between the lookup and f is opened again, once.
func (s *Set) do(key string, f func(src *tokensource.Source) error) (*member, error) {
	for try := 0; ; try++ {
		m, err := s.open(key)
		if err != nil {
			return nil, err
		}
		err = f(m.src)
		if !errors.Is(err, tokensource.ErrClosed) || try > 0 || !s.evicted(key, m) {
			return m, err
		}
	}
}

// evicted reports whether m was closed for idleness: it is no longer the
// open session of key, and the Set is open.
func (s *Set) evicted(key string, m *member) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closed && s.members[key] != m
}

// Client returns an http.Client whose requests carry the tokens of key's
// session, opening the session if needed. It first obtains a token,
// waiting no longer than ctx allows, so that a user who must log in is
// told here: the error then matches tokensource.ErrReauthRequired.
//
// The clients of all users send their requests through the Set's one Base
// transport and its connection pool. A client stays usable after the Set
// closed the session for idleness: its next request opens it again.
// Clients are shared: do not modify them.
func (s *Set) Client(ctx context.Context, key string) (*http.Client, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	m, err := s.do(key, func(src *tokensource.Source) error {
		_, err := src.TokenContext(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if c := m.client.Load(); c != nil {
		return c, nil
	}
	u := &user{set: s, key: key}
	u.m.Store(m)
	c := &http.Client{
		Transport: &transport.Transport{Source: u, Base: s.base, Hosts: s.hosts},
		Timeout:   s.timeout,
	}
	if !m.client.CompareAndSwap(nil, c) {
		c = m.client.Load()
	}
	return c, nil
}

// Source returns the Source of key's session, opening it if needed (with
// no I/O). The Set closes it once it has not been used through the Set for
// the idle time: use it at once, or call Source again, rather than keep it.
func (s *Set) Source(key string) (*tokensource.Source, error) {
	m, err := s.open(key)
	if err != nil {
		return nil, err
	}
	return m.src, nil
}

// Put stores t as key's session, typically after a login, replacing
// whatever the store held (see tokensource.Source.Put).
func (s *Set) Put(ctx context.Context, key string, t *oauth2.Token) error {
	_, err := s.do(key, func(src *tokensource.Source) error { return src.Put(ctx, t) })
	return err
}

// Revoke ends key's session at the provider and in the store (see
// tokensource.Source.Revoke). Until a new login is Put, the session's
// clients fail with errors matching tokensource.ErrReauthRequired.
func (s *Set) Revoke(ctx context.Context, key string) error {
	_, err := s.do(key, func(src *tokensource.Source) error { return src.Revoke(ctx) })
	return err
}

// List returns the keys of the open sessions, sorted.
func (s *Set) List() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.members))
}

// ListStored calls yield with the key of every session in the store, open
// or not, live or ended, until yield returns false, as storage.Lister
// does. If the store cannot list its entries, the error matches
// errors.ErrUnsupported.
func (s *Set) ListStored(ctx context.Context, yield func(key string) bool) error {
	l, ok := s.store.(storage.Lister)
	if !ok {
		return fmt.Errorf("sessions: the store cannot list its entries: %w", errors.ErrUnsupported)
	}
	return l.List(ctx, yield)
}

// closeConcurrency bounds the Sources Close closes at once: closing one
// may wait for a refresh that reached the provider.
const closeConcurrency = 32

// Close closes every open session and the Set. A session whose newest
// token could not be saved loses it, and Close then returns an error that
// matches tokensource.ErrNotSaved (see tokensource.Source.Close); errors of
// several sessions are joined. Afterwards every method returns an error
// matching tokensource.ErrClosed.
func (s *Set) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	members := s.members
	s.members = nil
	s.mu.Unlock()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs []error
		sem  = make(chan struct{}, closeConcurrency)
	)
	for _, m := range members {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := m.src.Close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sweep closes the sessions left unused for the idle time, a fraction of
// it apart, until the Set is closed or no session is open.
func (s *Set) sweep() {
	period := min(max(s.idle/4, time.Second), time.Minute)
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.sweepOnce() {
			return
		}
		t.Reset(period)
	}
}

// sweepOnce closes the sessions left unused for the idle time and not
// busy (a busy one may hold a token not saved yet, which closing could
// lose), and reports whether any session is still open.
func (s *Set) sweepOnce() bool {
	cutoff := time.Now().Add(-s.idle).UnixNano()
	idle := func(m *member) bool { return m.used.Load() < cutoff && !m.src.Busy() }
	var keys []string
	s.mu.RLock()
	for key, m := range s.members {
		if idle(m) {
			keys = append(keys, key)
		}
	}
	s.mu.RUnlock()

	var gone []*member
	s.mu.Lock()
	for _, key := range keys {
		if m, ok := s.members[key]; ok && idle(m) {
			delete(s.members, key)
			gone = append(gone, m)
		}
	}
	more := len(s.members) > 0
	if !more {
		s.sweeping = false
	}
	s.mu.Unlock()

	for i, m := range gone {
		if err := m.src.Close(); err != nil {
			s.logger.LogAttrs(context.Background(), slog.LevelError, "sessions: closing an idle session lost its newest token",
				slog.String("key", keys[i]), slog.String("error", err.Error()))
		}
	}
	return more
}

// user is the token source of one user's client. It finds the user's
// session through the Set, so that the client outlives a close for
// idleness.
type user struct {
	set *Set
	key string
	m   atomic.Pointer[member] // the session last used
}

// TokenContext implements transport.TokenSource.
func (u *user) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	m := u.m.Load()
	m.touch()
	tok, err := m.src.TokenContext(ctx)
	if !errors.Is(err, tokensource.ErrClosed) {
		return tok, err
	}
	var next *member
	next, err = u.set.do(u.key, func(src *tokensource.Source) error {
		tok, err = src.TokenContext(ctx)
		return err
	})
	if next != nil {
		u.m.Store(next)
	}
	return tok, err
}

// Invalidate implements transport.TokenSource.
func (u *user) Invalidate(used *oauth2.Token) {
	u.m.Load().src.Invalidate(used)
}
