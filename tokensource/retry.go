package tokensource

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/oauthwire"
)

// RetryPolicy decides whether a failed refresh attempt is worth repeating.
// wait is the least time to wait before the next attempt (from Retry-After);
// zero leaves the wait to the backoff schedule.
type RetryPolicy func(err error) (retry bool, wait time.Duration)

// DefaultRetryPolicy retries what a later attempt may cure: network errors
// and timeouts, HTTP 408, 429 and 5xx, the OAuth error
// temporarily_unavailable, and answers that are not a usable token response
// (HTML error pages, truncated JSON, no access_token). It honours
// Retry-After, in seconds or as an HTTP-date. It does not retry OAuth errors
// such as invalid_grant or invalid_scope, other 4xx answers, or refused
// plain-HTTP endpoints.
func DefaultRetryPolicy(err error) (retry bool, wait time.Duration) {
	if needsReauth(err) || errors.Is(err, oauthwire.ErrInsecureEndpoint) {
		return false, 0
	}
	if errors.Is(err, oauthwire.ErrMalformed) {
		return true, 0
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response != nil {
			wait, _ = oauthwire.RetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		}
		if re.ErrorCode == "temporarily_unavailable" || re.ErrorCode == "server_error" {
			return true, wait
		}
		if re.Response == nil {
			return false, 0
		}
		switch code := re.Response.StatusCode; {
		case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
			return true, wait
		case code >= 200 && code < 300:
			return false, 0 // a 200 that carried an OAuth error other than the above
		case re.ErrorCode == "" && code != http.StatusBadRequest && code != http.StatusUnauthorized:
			// No OAuth error code: a proxy or gateway, not the provider, answered.
			return code == http.StatusBadGateway, wait
		default:
			return false, 0
		}
	}
	// Transport failures (refused, reset or dropped connections, timeouts)
	// and bodies cut short.
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true, 0
	}
	return false, 0
}

// DefaultBackOff is the schedule between refresh attempts: 250 ms doubling
// to at most 10 s, each randomised by ±50 %. There is no elapsed-time limit
// of its own: the refresh's deadline bounds it.
func DefaultBackOff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}
