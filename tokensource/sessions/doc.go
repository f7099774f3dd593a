// Package sessions holds the OAuth2 sessions of many users in one process:
// a backend that calls an API on behalf of thousands of users, each logged
// in once.
//
// A [Set] keeps one [tokensource.Source] per user, under the user's key in
// one store. It opens a session on first use, from a template (a
// Refresher, or one per user; a store; options), and closes it once it has
// gone unused for a while. All sessions share one HTTP transport, one
// [tokensource.Scheduler] that refreshes their tokens before they turn
// stale, and one [tokensource.Limits] that caps their requests to the
// provider.
//
//	set, err := sessions.New(sessions.Config{Refresher: refresher, Store: store})
//	...
//	client, err := set.Client(ctx, userID)
//	if errors.Is(err, tokensource.ErrReauthRequired) {
//		// this user must log in again
//	}
//	resp, err := client.Get("https://api.example.com/v1/me")
//
// # What sessions cost
//
// An open session that nobody uses holds its token, its Source and its
// place in the scheduler's heap, and no goroutine: about 810 bytes beyond
// the token with a Memory store, its client included
// (BenchmarkIdleSessions). However many sessions are open, the Set runs one
// goroutine (closing idle sessions), the Scheduler one, plus one per
// refresh under way, which the Scheduler and the Limits bound. A user's
// client costs about 180 bytes and no connection of its own: every client
// sends through the Set's one Base transport, so connections to an API are
// pooled across users.
//
// # Refreshes
//
// The Scheduler refreshes each session's token in the background when it
// turns stale, whether or not anyone calls, so that requests do not wait
// for refreshes. When many sessions turn stale together — they logged in
// together, or the machine woke from sleep — the Scheduler runs a few
// refreshes at a time, and [tokensource.Limits] caps how many requests
// run at once and how many a second go to each provider; a request whose
// token is still valid never waits on either. Only a user whose token
// already expired waits, within the request's context.
//
// # Closing
//
// A session left unused for [Config.Idle] is closed, unless it is busy: a
// refresh under way, or a token that could not be saved yet and is being
// retried, which closing could lose. A client made by [Set.Client] stays
// usable: its next request opens the session again. [Set.Close] closes
// every session and reports, as an error matching
// [tokensource.ErrNotSaved], any token that could not be saved.
//
// # Keep-alive
//
// Providers end refresh tokens that go unused for long (see
// [tokensource.WithKeepAlive]). The Scheduler keeps alive only the
// sessions that are open and have served a token or taken a Put. To keep
// every stored session alive, set Config.Idle negative, so that sessions
// stay open, and open them all at start-up:
//
//	set.ListStored(ctx, func(key string) bool {
//		_, err := set.Client(ctx, key)
//		return err == nil || errors.Is(err, tokensource.ErrReauthRequired)
//	})
//
// # Listing
//
// [Set.List] returns the keys of the open sessions; [Set.ListStored] visits
// every session in the store when the store implements [storage.Lister].
package sessions
