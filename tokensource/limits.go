package tokensource

import (
	"context"
	"fmt"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
)

// Limits caps the refresh requests that many Sources send: how many run at
// once, process-wide, and how many per second go to one provider.
//
// A refresh waits for its Limits just before each request it sends to the
// token endpoint, and for nothing else: a caller whose token is fresh or
// stale never waits on them, and neither does a refresh that adopts a token
// another process saved. A caller whose token is invalid waits for them as
// it waits for the refresh, no longer than its context allows; the refresh
// waits no longer than its own deadline (see [WithRefreshTimeout]).
//
// One Limits made by [NewLimits] carries the cap on concurrent requests;
// [Limits.Rate] derives Limits that share that cap and add a rate limit,
// one per provider:
//
//	all := tokensource.NewLimits(32)      // at most 32 token requests at once
//	google := all.Rate(50, 5)             // and at most 50 a second to Google
//	okta := all.Rate(10, 1)               // and 10 a second to Okta
//
// A nil *Limits, or a zero Limits, limits nothing. Limits are safe for
// concurrent use.
type Limits struct {
	slots *semaphore.Weighted // shared by every Limits derived from one NewLimits; nil for no cap
	rate  *rate.Limiter       // this provider's; nil for no rate limit
}

// NewLimits returns Limits that let at most concurrent token requests run
// at once across every Source that shares them or Limits derived from them
// with [Limits.Rate]. A concurrent of 0 or less sets no cap.
func NewLimits(concurrent int) *Limits {
	l := &Limits{}
	if concurrent > 0 {
		l.slots = semaphore.NewWeighted(int64(concurrent))
	}
	return l
}

// Rate returns Limits that share l's cap on concurrent requests and also
// send at most r requests a second, with bursts of up to burst, for the
// Sources of one provider. Over any period of d seconds, at most
// burst + r*d requests are let go. They reach the provider a little less
// evenly than they leave, as the scheduling of goroutines and the network
// shift them: to stay under a limit the provider enforces per second, set
// r some way below it (BenchmarkStaleStorm in package sessions uses 90 %)
// and burst small. A burst below 1 is taken as 1; an r of rate.Inf sets no
// rate limit.
func (l *Limits) Rate(r rate.Limit, burst int) *Limits {
	c := &Limits{rate: rate.NewLimiter(r, max(burst, 1))}
	if l != nil {
		c.slots = l.slots
	}
	return c
}

// WithLimits makes the Source's refreshes wait for l before each request
// to the token endpoint (see [Limits]). If nil or not given, nothing is
// limited.
func WithLimits(l *Limits) Option {
	return func(c *config) { c.limits = l }
}

// acquire waits for the rate limit, then for a slot, until ctx ends. The
// slot is taken last, so that a request waiting for its provider's rate
// does not hold a slot that another provider's request could use. release
// gives the slot back; it must be called once.
func (l *Limits) acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	if l.rate != nil {
		if err := l.rate.Wait(ctx); err != nil {
			// Wait also fails at once when the wait would outlast ctx's
			// deadline; say so rather than quote the limiter.
			if ctx.Err() == nil {
				err = context.DeadlineExceeded
			}
			return nil, err
		}
	}
	if l.slots == nil {
		return func() {}, nil
	}
	if err := l.slots.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return func() { l.slots.Release(1) }, nil
}

// waitLimits waits for the Source's Limits before an attempt. last is the
// previous attempt's error, returned instead of the deadline's when the
// wait ends the retries.
func (r *refresh) waitLimits(last error) (release func(), err error) {
	s := r.s
	release, err = s.cfg.limits.acquire(r.soft)
	switch {
	case err == nil:
		return release, nil
	case s.stopped.Err() != nil:
		return nil, ErrClosed
	case last != nil:
		return nil, last
	}
	return nil, fmt.Errorf("tokensource: refresh %q: waiting for the refresh limits: %w", s.key, err)
}
