// Package transport provides Transport, an http.RoundTripper that adds
// OAuth 2.0 bearer tokens to requests, sends them only where they belong,
// and recovers once from a token the server refused. [NewClient] wraps one
// in an http.Client with sane timeouts.
//
//	src, _ := tokensource.New(refresher, store, "alice")
//	client := transport.NewClient(src, transport.WithHosts("api.example.com"))
//	resp, err := client.Get("https://api.example.com/v1/me")
//
// # Where the token goes
//
// A token is a password for as long as it lives, so a Transport sends it to
// trusted hosts only. Those are the entries of [Transport.Hosts], matched by
// host and port, a missing port standing for the scheme's default; or, if
// Hosts is empty, the scheme and host of the first request the Transport
// sees. Hosts are compared as net/http dials them: ASCII names
// case-insensitively, other names by the ASCII form IDNA maps them to
// (UTS #46), never by Unicode case folding, which takes "σς.example" and
// "σσ.example", two different hosts, for one. A name with no IDNA form
// gets no token. Requests to any other host, and plain-http
// requests when the trusted origin is https (a downgrade), are still sent,
// but without a token: the server answers them as it would an anonymous
// request.
//
// Because http.Client follows a redirect by calling RoundTrip again with
// the new URL, a redirect to another host or from https to http carries no
// token either. (http.Client's own rule, which forwards an Authorization
// header to the same domain and its subdomains only, does not apply: the
// Transport adds the header after the client has chosen the headers.)
//
// Following RFC 6750, section 5.3, a token goes over plain http only to a
// loopback host ("localhost", 127.0.0.1, ::1), unless a Hosts entry is
// written "http://host" to allow it.
//
// # Requests that carry their own credentials
//
// A request that already has an Authorization header, even an empty one,
// and whatever the case of its name in the Header map ("authorization"
// counts), is sent untouched: the Transport adds no token and does not act on a 401
// answer. This lets one client mix calls that need other credentials. If it
// is the first request of a Transport without Hosts, its origin is still
// the one pinned.
//
// # Refused tokens
//
// A server refuses a token that has expired early, been revoked or
// rotated out by answering 401 with
//
//	WWW-Authenticate: Bearer error="invalid_token"
//
// When a response is 401 and its Bearer challenge has that error, or no
// Bearer challenge has any error, or the header is missing, the Transport
// tells the Source with [TokenSource.Invalidate], gets a token again and
// sends the request once more. Many requests refused at once with the same
// token cause a single refresh: only the first Invalidate counts, and the
// Source refreshes once for all its callers.
//
// A request is sent again only if its body can be: it has none, or
// Request.GetBody can make a new one (http.NewRequest sets it for
// *bytes.Buffer, *bytes.Reader and *strings.Reader bodies). Otherwise the
// 401 response is returned as it is; the token is still invalidated, so
// the next request gets a new one. The first response's body is drained a
// little and closed before the request is sent again. A request is never
// sent more than twice, and the second answer is returned whatever it is.
//
// A 401 with another error, such as insufficient_scope, and any 403 mean
// that no token of this session would do: they are returned as they are.
//
// # A server that refuses every token
//
// A server that answers 401 to every token, fresh ones included (a
// misconfigured audience, a revoked client, a broken gateway), would
// otherwise cost a refresh per request. So after a 401 answer has made the
// Transport invalidate a token, 401 answers to requests sent with any other
// token (the new one, typically) invalidate nothing for
// [Transport.RecoveryInterval], 30 seconds by default: such a request is
// sent again only if the Source already holds a newer token, and otherwise
// its 401 answer is returned as it is. Refusals of the token last
// invalidated still count, since they join the refresh under way. A
// server that refuses every token thus costs at most one refresh per
// interval and Transport. [WithRecoveryInterval] sets the interval for
// [NewClient]; a negative interval turns the limit off.
//
// # Errors
//
// If the Source cannot supply a token, no request is sent and RoundTrip
// returns its error wrapped, so that errors.Is sees through it and through
// the *url.Error of http.Client.Do:
//
//	if errors.Is(err, tokensource.ErrReauthRequired) {
//		// ask the user to log in again
//	}
//
// Neither errors nor anything else the package produces contain a token.
package transport
