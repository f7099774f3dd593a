package tokensource

import (
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Option configures a Source.
type Option func(*config)

type config struct {
	early          time.Duration
	expiryDelta    time.Duration
	refreshTimeout time.Duration
	attemptTimeout time.Duration
	lockTimeout    time.Duration
	revokeTimeout  time.Duration
	closeGrace     time.Duration
	newBackOff     func() backoff.BackOff
	retry          RetryPolicy
	logger         *slog.Logger
	hook           func(Event)

	jitter func(n int64) int64 // uniform in [0, n)

	sched     *Scheduler // WithScheduler; nil for none (scheduler.go)
	keepAlive keepAlive  // WithKeepAlive (scheduler.go)
	limits    *Limits    // WithLimits; nil for none (limits.go)
}

// discard is the logger of Sources given none: one for all of them.
var discard = slog.New(slog.DiscardHandler)

func defaults() config {
	return config{
		early:          5 * time.Minute,
		expiryDelta:    10 * time.Second,
		refreshTimeout: 30 * time.Second,
		attemptTimeout: 10 * time.Second,
		lockTimeout:    30 * time.Second,
		revokeTimeout:  30 * time.Second,
		closeGrace:     10 * time.Second,
		newBackOff:     DefaultBackOff,
		retry:          DefaultRetryPolicy,
		logger:         discard,
		jitter:         rand.Int64N,
	}
}

// WithEarlyRefresh sets how long before expiry a token is refreshed in the
// background while it is still served. The default is 5 minutes. For a token
// that lives less than four times d, a quarter of its lifetime is used; a
// random extra of up to a quarter of the window spreads the refreshes of
// many processes. Zero turns background refresh off: callers then wait for
// the refresh when the token expires.
func WithEarlyRefresh(d time.Duration) Option {
	return func(c *config) { c.early = max(d, 0) }
}

// WithExpiryDelta sets how long before its stated expiry a token is no
// longer served, to allow for clock skew and transit. The default is 10
// seconds, reduced to a tenth of the lifetime for tokens that live less than
// 100 seconds, so that short-lived tokens are still used.
func WithExpiryDelta(d time.Duration) Option {
	return func(c *config) { c.expiryDelta = max(d, 0) }
}

// WithRefreshTimeout bounds one refresh, retries and lock wait included,
// and so how long the answer to a request that reached the provider is
// awaited. The default is 30 seconds. Callers waiting with a shorter
// context return when it ends; the refresh goes on for the others.
func WithRefreshTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.refreshTimeout = d
		}
	}
}

// WithAttemptTimeout bounds connecting to the token endpoint and sending
// each request, so that one hung connection leaves time to retry. The
// default is 10 seconds. Once a request was written, the provider may have
// redeemed the refresh token: its answer is awaited until the refresh
// deadline rather than abandoned (see the package documentation, "In-doubt
// requests"). For a Refresher other than ConfigRefresher, which cannot say
// whether its request was sent, the timeout bounds the whole call and a
// call cut short by it is reported as in doubt. It also bounds each save of
// a token that was already issued.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.attemptTimeout = d
		}
	}
}

// WithLockTimeout bounds the wait for a store's cross-process lock. The
// default is 30 seconds; the refresh deadline applies as well.
func WithLockTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.lockTimeout = d
		}
	}
}

// WithRevokeTimeout bounds [Source.Revoke], provider request and store
// write included, whatever its context. The default is 30 seconds.
func WithRevokeTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.revokeTimeout = d
		}
	}
}

// WithCloseGrace bounds how long [Source.Close] waits for a refresh whose
// request already reached the provider, so that its answer — perhaps a
// rotated refresh token — is saved rather than lost. The default is 10
// seconds. Work that has sent nothing is cancelled at once.
func WithCloseGrace(d time.Duration) Option {
	return func(c *config) {
		if d >= 0 {
			c.closeGrace = d
		}
	}
}

// WithBackOff sets the schedule between refresh attempts. newBackOff is
// called once per refresh, since a BackOff is not safe for concurrent use.
// The default is DefaultBackOff. Use backoff.WithMaxRetries to cap attempts.
func WithBackOff(newBackOff func() backoff.BackOff) Option {
	return func(c *config) {
		if newBackOff != nil {
			c.newBackOff = newBackOff
		}
	}
}

// WithRetryPolicy sets which failures are retried. The default is
// DefaultRetryPolicy. Failures that need re-authentication are never
// retried, whatever the policy says.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *config) {
		if p != nil {
			c.retry = p
		}
	}
}

// WithLogger sets the logger for refreshes, adoptions and failures. Records
// carry the store key, expiry times, attempt counts and errors, never a
// token. If nil or not given, nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithHook sets a function called after every refresh, adoption of a token
// saved by another process, and failure. It runs on the refreshing goroutine
// and must not block or call the Source.
func WithHook(f func(Event)) Option {
	return func(c *config) { c.hook = f }
}

// EventKind says what an Event reports.
type EventKind int

const (
	// Refreshed: the token endpoint issued a new token, which was saved.
	Refreshed EventKind = iota + 1
	// Adopted: the store held a newer token, saved by another process or
	// Source; it was used without calling the provider.
	Adopted
	// Failed: the refresh failed; Err says why.
	Failed
	// SaveFailed: a new token could not be saved; it is served from memory
	// and saving is retried. Err says why.
	SaveFailed
	// InDoubt: a refresh request reached the provider but no answer came
	// back, so the provider may have redeemed the refresh token. Reported
	// before any retry with the same token. Err says why.
	InDoubt
	// Salvaged: an answer that could not be served carried a new refresh
	// token, which was saved; or a late answer was saved.
	Salvaged
	// Lost: a token the provider issued could not be kept: the store moved
	// on meanwhile, or Close could not save it. Err says why.
	Lost
)

func (k EventKind) String() string {
	switch k {
	case Refreshed:
		return "refreshed"
	case Adopted:
		return "adopted"
	case Failed:
		return "failed"
	case SaveFailed:
		return "save-failed"
	case InDoubt:
		return "in-doubt"
	case Salvaged:
		return "salvaged"
	case Lost:
		return "lost"
	}
	return "unknown"
}

// Event describes one refresh for a hook. It holds no token value.
type Event struct {
	Kind       EventKind
	Key        string
	Background bool          // the refresh ran early, while the old token was served
	Attempts   int           // token endpoint requests made
	Duration   time.Duration // from start to end, lock wait included
	OldExpiry  time.Time     // zero when there was no token or it had no expiry
	NewExpiry  time.Time     // zero on failure or when the new token has no expiry
	Err        error
}
