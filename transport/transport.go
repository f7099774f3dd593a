package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/oauth2"
)

// TokenSource supplies the tokens a [Transport] sends and hears which of
// them a server refused. [*github.com/tokenkeep/tokenkeep/tokensource.Source]
// satisfies it.
type TokenSource interface {
	// TokenContext returns a valid token, waiting no longer than ctx allows.
	// The token is shared and must not be modified.
	TokenContext(ctx context.Context) (*oauth2.Token, error)
	// Invalidate reports that a server refused used. If used is still the
	// current token, the next TokenContext obtains a new one; if it was
	// already replaced, Invalidate does nothing.
	Invalidate(used *oauth2.Token)
}

// drainLimit bounds how much of a refused response is read before its
// connection is given back for the replay.
const drainLimit = 4 << 10

// Transport is an [http.RoundTripper] that adds an Authorization header with
// a token from Source to requests for trusted hosts, and recovers once from
// a 401 answer that says the token was refused. See the package
// documentation for which hosts are trusted, which requests are left alone
// and when a request is replayed.
//
// A Transport is safe for concurrent use. Its fields must not change after
// the first request, and a Transport must not be copied after first use.
type Transport struct {
	// Source supplies the tokens. If nil, every request that would carry a
	// token fails.
	Source TokenSource

	// Base sends the requests. If nil, http.DefaultTransport is used.
	Base http.RoundTripper

	// Hosts lists the hosts that may receive the token, as "host" or
	// "host:port" ("[::1]:8080" for IPv6), matched as net/http dials them:
	// case-insensitively, and a name that is not ASCII by its IDNA ASCII
	// form ("bücher.example" is "xn--bcher-kva.example"); a missing port
	// stands for the default port of the request's scheme.
	// The token goes to them over https, and over plain http only when the
	// host is a loopback address or the entry is written "http://host" or
	// "http://host:port". An "https://" prefix is allowed and changes
	// nothing.
	//
	// If Hosts is empty, the scheme and host of the first request the
	// Transport sees are the only ones trusted. A request whose URL is not
	// http or https, or names no host, gets no token and pins nothing.
	Hosts []string

	// RecoveryInterval is the least time between two refreshes that 401
	// answers cause. Once a 401 answer has made the Transport invalidate a
	// token, a 401 answer to a request sent with another token, such as
	// the new one, invalidates nothing until RecoveryInterval has passed:
	// the request is sent again only if the Source has a newer token
	// anyway, and otherwise the 401 answer is returned as it is. So an
	// endpoint that refuses every token costs one refresh per interval,
	// not one per request. If zero, DefaultRecoveryInterval is used; if
	// negative, every refusal invalidates the token it refused.
	RecoveryInterval time.Duration

	rules    atomic.Pointer[[]hostRule] // Hosts, parsed on first use
	pin      atomic.Pointer[origin]     // the first request's origin, when Hosts is empty
	auth     atomic.Pointer[authHeader] // the header value of the token last sent
	recovery atomic.Pointer[recovery]   // the last token a 401 answer made the Transport invalidate
}

// DefaultRecoveryInterval is the least time between two refreshes caused
// by 401 answers when Transport.RecoveryInterval is zero.
const DefaultRecoveryInterval = 30 * time.Second

// recovery is a token a 401 answer refused, and when the Transport
// invalidated it.
type recovery struct {
	tok *oauth2.Token
	at  time.Time
}

// RoundTrip implements [http.RoundTripper]. It sends req with a token if
// req is for a trusted host and carries no Authorization header of its own,
// and otherwise sends req unchanged. It never modifies req: the token is
// set on a copy. If the answer says the token was refused, RoundTrip may
// send req once more with a new token (see the package documentation).
//
// If the Source fails, RoundTrip sends nothing and returns its error,
// wrapped, so that errors.Is sees through it and the *url.Error of
// [http.Client.Do].
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req == nil:
		return nil, errors.New("transport: nil Request")
	case t == nil:
		closeBody(req)
		return nil, errors.New("transport: nil Transport")
	}
	base := t.base()
	if req.URL == nil {
		return base.RoundTrip(req) // which reports the error
	}
	// Ask trusted first: a request that brings its own credentials still
	// pins the origin, lest a redirect elsewhere become the first to
	// receive the token.
	trusted := t.trusted(req.URL.Scheme, req.URL.Hostname(), req.URL.Port())
	if !trusted || hasAuthorization(req.Header) {
		return base.RoundTrip(req)
	}
	tok, err := t.token(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := base.RoundTrip(t.authorized(req, req.Body, tok))
	if err != nil || resp == nil || !refused(resp) {
		return resp, err
	}
	return t.replay(req, resp, tok)
}

// hasAuthorization reports whether h holds an Authorization field under
// any spelling of its name, empty or not: net/http sends a key as it is
// spelt in the map, so a caller's "authorization" goes out beside ours.
func hasAuthorization(h http.Header) bool {
	if _, ok := h["Authorization"]; ok {
		return true
	}
	for k := range h {
		if len(k) == len("Authorization") && strings.EqualFold(k, "Authorization") {
			return true
		}
	}
	return false
}

// replay handles a 401 answer to req sent with used: it invalidates used
// and, if req's body can be sent again, sends req once more with a new
// token. Otherwise it returns resp as it is.
func (t *Transport) replay(req *http.Request, resp *http.Response, used *oauth2.Token) (*http.Response, error) {
	if t.mayInvalidate(used) {
		t.Source.Invalidate(used)
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}
	tok, err := t.token(req.Context())
	if err != nil {
		discard(resp)
		return nil, err
	}
	if tok.AccessToken == used.AccessToken {
		return resp, nil // the Source has nothing better to offer
	}
	body := req.Body
	if body != nil && body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return resp, nil // as if the body could not be sent again
		}
	}
	discard(resp)
	return t.base().RoundTrip(t.authorized(req, body, tok))
}

// mayInvalidate reports whether a 401 answer to a request sent with used
// may invalidate it, and notes it if so: always for the token last
// invalidated (other requests refused at once join its refresh, which the
// Source makes once), and for another token only once RecoveryInterval has
// passed since then.
func (t *Transport) mayInvalidate(used *oauth2.Token) bool {
	interval := t.RecoveryInterval
	switch {
	case interval < 0:
		return true
	case interval == 0:
		interval = DefaultRecoveryInterval
	}
	for {
		last := t.recovery.Load()
		switch {
		case last != nil && last.tok == used:
			return true
		case last != nil && time.Since(last.at) < interval:
			return false
		}
		if t.recovery.CompareAndSwap(last, &recovery{tok: used, at: time.Now()}) {
			return true
		}
	}
}

// token returns a token from the Source, with errors ready to return.
func (t *Transport) token(ctx context.Context) (*oauth2.Token, error) {
	if t.Source == nil {
		return nil, errors.New("transport: nil Source")
	}
	tok, err := t.Source.TokenContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if tok == nil {
		return nil, errors.New("transport: Source returned no token")
	}
	return tok, nil
}

// authorized returns a shallow copy of req, as Request.WithContext makes,
// with body and a header of its own that carries tok.
func (t *Transport) authorized(req *http.Request, body io.ReadCloser, tok *oauth2.Token) *http.Request {
	r := new(http.Request)
	*r = *req
	r.Body = body
	r.Header = withValue(req.Header, "Authorization", t.header(tok))
	return r
}

// authHeader is an Authorization header value and the token it was made
// from.
type authHeader struct {
	tok   *oauth2.Token
	value string
}

// header returns the Authorization header value for tok, formatting it
// only when tok is not the token last sent.
func (t *Transport) header(tok *oauth2.Token) string {
	if h := t.auth.Load(); h != nil && h.tok == tok {
		return h.value
	}
	h := &authHeader{tok: tok, value: tok.Type() + " " + tok.AccessToken}
	t.auth.Store(h)
	return h.value
}

// withValue returns a copy of h, with one backing array for all values as
// http.Header.Clone makes, in which key is set to value.
func withValue(h http.Header, key, value string) http.Header {
	n := 1
	for _, vv := range h {
		n += len(vv)
	}
	sv := make([]string, n)
	h2 := make(http.Header, len(h)+1)
	for k, vv := range h {
		if vv == nil {
			h2[k] = nil // as Clone does: a nil value suppresses a default header
			continue
		}
		n := copy(sv, vv)
		h2[k] = sv[:n:n]
		sv = sv[n:]
	}
	sv[0] = value
	h2[key] = sv[:1:1]
	return h2
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// refused reports whether resp says the token was refused, so that a new
// one may succeed: a 401 whose Bearer challenge has error="invalid_token",
// or which has no Bearer challenge with an error at all. A 401 with another
// error, such as insufficient_scope, is final, as is any 403.
func refused(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	other := false
	for _, c := range ParseChallenges(resp.Header.Values("WWW-Authenticate")) {
		if !strings.EqualFold(c.Scheme, "Bearer") {
			continue
		}
		switch e, ok := c.Params["error"]; {
		case !ok:
		case e == "invalid_token":
			return true
		default:
			other = true
		}
	}
	return !other
}

// discard reads a little of resp's body, so that its connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, drainLimit)
	resp.Body.Close()
}

// closeBody closes the body of a request that will not be sent, as the
// RoundTripper contract requires.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// origin is the scheme, host in dialName's form and port (the scheme's
// default if none was given) of a URL.
type origin struct {
	scheme, host, port string
}

// hostRule is one parsed entry of Transport.Hosts.
type hostRule struct {
	host      string // in dialName's form, without brackets
	port      string // empty for the default port of the request's scheme
	plainHTTP bool   // the entry was written with "http://"
}

// trusted reports whether the token may go to the URL with this scheme,
// host and port. Without Hosts, the first URL asked about becomes the only
// trusted one.
func (t *Transport) trusted(scheme, host, port string) bool {
	if host == "" {
		return false // nowhere to send it; and it must not become the pin
	}
	var https bool
	switch {
	case strings.EqualFold(scheme, "https"):
		https = true
	case strings.EqualFold(scheme, "http"):
	default:
		return false
	}
	if port == "" {
		port = "80"
		if https {
			port = "443"
		}
	}
	host, ok := dialName(host)
	if !ok {
		return false // net/http cannot dial it; and it must not become the pin
	}
	if len(t.Hosts) > 0 {
		return t.listed(https, host, port)
	}
	p := t.pin.Load()
	if p == nil {
		p = &origin{scheme: strings.ToLower(scheme), host: host, port: port}
		if !t.pin.CompareAndSwap(nil, p) {
			p = t.pin.Load()
		}
	}
	if host != p.host || port != p.port {
		return false
	}
	if https {
		return true // the pin's own scheme, or an upgrade from http
	}
	return p.scheme == "http" && isLoopback(host)
}

// listed reports whether host, in dialName's form, and port match an entry
// of Hosts that allows the scheme.
func (t *Transport) listed(https bool, host, port string) bool {
	for _, r := range t.hostRules() {
		if host != r.host {
			continue
		}
		if r.port != port && (r.port != "" || port != defaultPort(https)) {
			continue
		}
		if https || r.plainHTTP || isLoopback(host) {
			return true
		}
	}
	return false
}

func defaultPort(https bool) string {
	if https {
		return "443"
	}
	return "80"
}

// hostRules returns Hosts parsed, parsing them on first use.
func (t *Transport) hostRules() []hostRule {
	if rs := t.rules.Load(); rs != nil {
		return *rs
	}
	rs := make([]hostRule, 0, len(t.Hosts))
	for _, h := range t.Hosts {
		if r, ok := parseHost(h); ok {
			rs = append(rs, r)
		}
	}
	t.rules.Store(&rs)
	return rs
}

// parseHost parses an entry of Hosts: "host", "host:port", "[v6]:port" or
// a bare IPv6 address, optionally after "https://" or "http://".
func parseHost(s string) (hostRule, bool) {
	var r hostRule
	s = strings.TrimSpace(s)
	if len(s) >= len("http://") && strings.EqualFold(s[:len("http://")], "http://") {
		r.plainHTTP = true
		s = s[len("http://"):]
	} else if len(s) >= len("https://") && strings.EqualFold(s[:len("https://")], "https://") {
		s = s[len("https://"):]
	}
	s = strings.TrimSuffix(s, "/")
	host, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return r, false
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			var ok bool
			if port, ok = strings.CutPrefix(rest, ":"); !ok {
				return r, false
			}
		}
	case strings.Count(s, ":") == 1:
		host, port, _ = strings.Cut(s, ":")
	}
	if host == "" {
		return r, false
	}
	host, ok := dialName(host)
	if !ok {
		return r, false
	}
	r.host, r.port = host, port
	return r, true
}

// dialName returns host as net/http dials it, for comparing hosts: an
// ASCII name in lower case, any other in the ASCII form that IDNA's lookup
// mapping (UTS #46, as net/http applies it) gives it. Unicode case folding
// will not do: it equates "σς" and "σσ", which IDNA maps to two different
// names. ok is false for a name that has no such form, which net/http
// cannot dial either.
func dialName(host string) (name string, ok bool) {
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf {
			a, err := idna.Lookup.ToASCII(host)
			if err != nil {
				return "", false
			}
			return strings.ToLower(a), true
		}
	}
	return strings.ToLower(host), true // no copy when it is lower case already
}

// isLoopback reports whether host names this machine: "localhost", a name
// under "localhost." or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || len(host) > len(".localhost") && strings.EqualFold(host[len(host)-len(".localhost"):], ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// clientConfig collects the Options of NewClient.
type clientConfig struct {
	base     http.RoundTripper
	hosts    []string
	timeout  time.Duration
	recovery time.Duration
}

// Option configures a client made by [NewClient].
type Option func(*clientConfig)

// WithBase sets the RoundTripper that sends the client's requests. If nil
// or not given, a clone of http.DefaultTransport is used.
func WithBase(rt http.RoundTripper) Option {
	return func(c *clientConfig) { c.base = rt }
}

// WithHosts sets the hosts that may receive the token, as
// [Transport.Hosts] does. If not given, the first request's scheme and host
// are the only ones trusted.
func WithHosts(hosts ...string) Option {
	return func(c *clientConfig) { c.hosts = append([]string(nil), hosts...) }
}

// WithTimeout bounds each request made with the client, redirects, the
// wait for a token and the reading of the response body included (see
// http.Client.Timeout). The default is 60 seconds; zero means no limit.
func WithTimeout(d time.Duration) Option {
	return func(c *clientConfig) { c.timeout = d }
}

// WithRecoveryInterval sets the least time between two refreshes that 401
// answers cause, as [Transport.RecoveryInterval] does. The default is
// DefaultRecoveryInterval; negative means no limit.
func WithRecoveryInterval(d time.Duration) Option {
	return func(c *clientConfig) { c.recovery = d }
}

// NewClient returns an http.Client whose requests carry tokens from src
// through a [Transport]. Each request, redirects included, is limited to
// 60 seconds unless WithTimeout says otherwise, and requests go through a
// clone of http.DefaultTransport — so with connection pools of their own —
// unless WithBase says otherwise.
//
// Redirects are followed as http.Client does by default; the Transport sends
// the token to trusted hosts only, so a redirect elsewhere carries none.
func NewClient(src TokenSource, opts ...Option) *http.Client {
	c := clientConfig{timeout: 60 * time.Second}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.base == nil {
		c.base = http.DefaultTransport
		if t, ok := c.base.(*http.Transport); ok {
			c.base = t.Clone()
		}
	}
	return &http.Client{
		Transport: &Transport{Source: src, Base: c.base, Hosts: c.hosts, RecoveryInterval: c.recovery},
		Timeout:   c.timeout,
	}
}
