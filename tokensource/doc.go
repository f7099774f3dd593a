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
// If the store also implements [storage.GenerationWaiter] (Memory, File and
// the Redis store do), a Source waiting for the lock watches the stored
// generation meanwhile. When the holder saves, every waiter adopts the new
// token at once, without the lock, instead of taking it in turn only to
// load the same record; a revoked or deleted session is learned the same
// way. A record that cannot be served as it is (its token is stale too)
// leaves the Source waiting for the lock.
//
// # The session ledger
//
// The store keeps each session as a [storage.Record] with a generation
// that grows by one on every write, and every write is conditional on the
// generation it was derived from. A Source serves one state at a time and
// remembers the generation it came from; every change to it — a refresh, an
// adoption, Put, Revoke, Invalidate, a save retry, Close — is made against
// the state it started from, and one operation at a time may write the
// store. A late save retry, a slow save or a refresh that began before a
// Put therefore loses to the newer state instead of overwriting it.
//
// Revoke, and a provider that refuses the refresh token, save an ended
// record (a tombstone) in place of the session: every Source that reads it,
// in any process, returns an error matching [ErrReauthRequired] without
// calling the provider, and no refresh derived from an older generation can
// replace it. Only [Source.Put] (a new login) does. A session the provider
// refused therefore costs one provider request, however many processes
// share it. To remove an entry for good, call the store's Delete: a Source
// that has seen the session then reports it deleted.
//
// A Source remembers the highest generation it has loaded or written, and
// refuses a lower one with an error matching [storage.ErrCorrupt] that says
// rollback: someone put an older copy of the entry back while the program
// ran. A program that starts after the copy was put back cannot tell.
//
// # Failures
//
// Transient failures — network errors, HTTP 408, 429 and 5xx, answers that
// are not a token — are retried on a fresh exponential backoff with jitter
// (see [DefaultRetryPolicy], [WithBackOff]). A Retry-After the provider
// sends with 429 or 503 is honoured; when it reaches past the refresh
// deadline, it is remembered for the session and saved in the store, and
// until it passes no caller, background refresh or other process sends a
// request: callers get a [*BackOffError] saying until when, or wait for it
// when their context and the refresh deadline allow. The provider's refusal
// of the grant or the client (invalid_grant, invalid_client,
// unauthorized_client) is not retried: the store is read once more, in case
// another process rotated the refresh token, and otherwise the session
// ends as described above.
//
// A store that cannot be read makes the refresh fail with a transient error
// rather than redeem the refresh token held in memory, which another
// process may have rotated already — unless memory holds a token newer than
// the store, whose save is pending.
//
// A refreshed token is saved before it is returned. A refresh answer without
// a refresh token keeps the previous one, and extra fields the answer leaves
// out (id_token, scope) keep their previous values. The lifetime the
// provider granted is recorded when the token arrives, so that a token
// without expires_in (client credentials) loaded by another process is
// still refreshed early. If the save fails, the call returns an error
// matching [ErrNotSaved], the new token is served from memory, and the
// Source keeps the store's lock — other processes wait, within their lock
// timeout, rather than redeem the refresh token it replaced — while saving
// is retried; [Source.Close] makes a last attempt and reports a loss.
//
// # In-doubt requests
//
// Once a refresh request has been written to the connection, the provider
// may have redeemed the refresh token and issued a new one. Such a request
// is never abandoned: [WithAttemptTimeout] bounds connecting and sending
// (for [ConfigRefresher]; other Refreshers cannot tell, and the timeout
// bounds their whole call), and the answer is awaited until the refresh
// deadline. A caller whose context ends stops waiting; the request goes on.
// [Source.Close] lets a request that was sent finish, for up to
// [WithCloseGrace], and saves its result; it cancels at once only work that
// sent nothing. An answer whose access token part is unusable but that
// carries a new refresh token has the refresh token saved (the [Salvaged]
// event). An outcome that stays unknown — the deadline or the grace ended,
// the connection dropped after sending — is reported as an [InDoubt] event
// and a log record before any retry with the same refresh token: that
// token is all the Source has, providers with a reuse interval accept it,
// and those without answer invalid_grant, which ends the session visibly
// instead of silently. A Refresher that ignores its context is left
// running; if it returns later with a new refresh token, that token is
// saved, provided the session has not moved on.
//
// # Many sessions
//
// A [Scheduler] shared through [WithScheduler] refreshes the tokens of many
// Sources without any caller asking: one goroutine and one timer over a
// heap of due times, jittered, respecting the provider's back-off, and
// re-evaluated when the wall clock jumps (sleep, a paused VM). With
// [WithKeepAlive], a refresh token with an idle lifetime is redeemed before
// it dies unused. [Limits] shared through [WithLimits] cap the token
// requests under way and rate them per provider; only a refresh about to
// send waits on them, never a caller whose token is still valid. The
// sessions package builds a set of per-user Sources on these.
//
// # Secrets
//
// No token value appears in an error, a log record or an [Event]. Errors
// from the token endpoint are described by status and OAuth error code, not
// by the provider's raw answer. Token and revocation endpoints must use
// https; plain http is accepted for loopback hosts only.
package tokensource
