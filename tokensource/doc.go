// Package tokensource provides Source, a persistent oauth2.TokenSource that
// refreshes tokens before they expire, saves every new token before it is
// used, and never lets two callers — or two processes — redeem the same
// refresh token.
//
// # Fresh, stale and invalid
//
// A token is fresh until its stale point, stale until its expiry point, and
// invalid from then on:
//
//	expiry point = Expiry - min(ExpiryDelta, lifetime/10)
//	stale point  = expiry point - min(EarlyRefresh, lifetime/4) - jitter
//
// where lifetime is the expires_in the provider granted (or the time left,
// when that is unknown) and jitter is uniform in [0, window/4]. A fresh token
// is returned from an atomic load, with no lock and no allocation. A stale
// token is returned at once while a single background refresh runs. Only an
// invalid token (or none, or one a server refused, see [Source.Invalidate])
// makes callers wait. Because the margins scale with the lifetime, a token
// that lives five seconds is still served, and a provider that answers with
// a token shorter than the early-refresh window does not cause a refresh
// loop.
//
// # One refresh at a time
//
// However many goroutines ask, one refresh runs. It runs on a context of its
// own, bounded by [WithRefreshTimeout]; a caller whose context ends returns
// at once with that context's error, and the refresh goes on for the
// others. No mutex is held while the network is used.
//
// If the store implements [storage.Locker], a refresh takes the store's lock
// and reads the store again before calling the provider: a token another
// process saved meanwhile is adopted instead of redeeming the same refresh
// token twice, which providers with reuse detection (Okta, Auth0) punish by
// revoking the whole session. Fresh tokens never touch the lock.
//
// # Failures
//
// Transient failures — network errors, HTTP 408, 429 and 5xx, answers that
// are not a token — are retried on a fresh exponential backoff with jitter,
// honouring Retry-After (see [DefaultRetryPolicy], [WithBackOff]). The
// provider's refusal of the grant or the client (invalid_grant,
// invalid_client, unauthorized_client) is not retried: the store is read
// once more, in case another process rotated the refresh token, and
// otherwise the error matches [ErrReauthRequired]. The Source then keeps
// returning that error without calling the provider until a new login is
// stored with [Source.Put], here or by another process.
//
// A refreshed token is saved before it is returned. A refresh answer without
// a refresh token keeps the previous one, and extra fields the answer leaves
// out (id_token, scope) keep their previous values. If the save fails, the
// call returns an error matching [ErrNotSaved], the new token is served from
// memory, saving is retried in the background, and [Source.Close] reports
// whether it was finally saved.
//
// # Secrets
//
// No token value appears in an error, a log record or an [Event]. Errors
// from the token endpoint are described by status and OAuth error code, not
// by the provider's raw answer. Token and revocation endpoints must use
// https; plain http is accepted for loopback hosts only.
package tokensource
