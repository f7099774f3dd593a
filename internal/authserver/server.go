// Package authserver is an in-process OAuth 2.0 authorization server and
// protected resource that behaves like a strict real provider. Tests,
// benchmarks and the demo run against it.
//
// It implements the authorization code grant with PKCE (RFC 7636), the
// device authorization grant (RFC 8628), client credentials, the
// refresh_token grant with optional rotation and reuse detection (a reused
// refresh token revokes its whole family, as Okta and Auth0 do), and token
// revocation (RFC 7009). Faults can be injected per request — refusals,
// delays, dropped connections, spoiled or trickled answers, and answers
// that arrive after the client gave up — and every request is counted, so
// that tests can assert "exactly one refresh".
//
// Token values carry the prefixes "tkat_" (access) and "tkrt_" (refresh), so
// that tests can search output for leaked secrets.
package authserver

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/pipenet"
)

// Registered clients.
const (
	ClientID       = "tokenkeep-test"
	ClientSecret   = "tokenkeep-test-secret"
	PublicClientID = "tokenkeep-cli" // no secret; PKCE and device flow
)

// Endpoints, for Inject, SetFailRate and SetLatency.
const (
	EndpointAuthorize = "/authorize"
	EndpointToken     = "/token"
	EndpointDevice    = "/device/code"
	EndpointRevoke    = "/revoke"
	EndpointResource  = "/resource"
	EndpointUserinfo  = "/userinfo"
)

// Config sets the server's behaviour. The zero value issues one-hour access
// tokens and non-expiring, non-rotating refresh tokens.
type Config struct {
	AccessTTL  time.Duration    // lifetime of access tokens; 0 means 1h; expires_in states it rounded up to whole seconds
	RefreshTTL time.Duration    // lifetime of refresh tokens; 0 means no expiry
	Rotate     bool             // issue a new refresh token on every refresh and retire the old one
	Now        func() time.Time // the server's clock; nil means time.Now
	TLS        bool             // serve HTTPS; Client trusts the certificate
	Subject    string           // the user the authorize endpoint logs in; default "alice"

	// InMemory serves over an in-memory network (package pipenet) rather
	// than a loopback port: only Client reaches the server. Its URLs name
	// port 1 of the loopback address, where nothing listens, so that a
	// request sent with another client fails at once. A test in a
	// testing/synctest bubble that starts such a server there sees every
	// delay, timeout and abandoned request on the bubble's clock.
	InMemory bool

	// ReuseDetection makes a retired refresh token, presented again, revoke
	// its whole family: every token descended from the same login.
	ReuseDetection bool
	// OmitRefreshTokenOnRefresh leaves refresh_token out of refresh answers
	// when it is not rotated, as Google does.
	OmitRefreshTokenOnRefresh bool
	// RefuseBasicForPublic makes the public client's HTTP Basic
	// authentication (its id and an empty secret) an error, 400
	// invalid_request, at every endpoint, as a provider does for a client
	// registered without a secret (token_endpoint_auth_method "none"): such
	// a client must send its client_id in the body.
	RefuseBasicForPublic bool

	DeviceInterval     time.Duration // polling interval for the device flow; 0 means 5s
	DeviceTTL          time.Duration // device code lifetime; 0 means 10 min
	DeviceSlowDownStep time.Duration // interval increase on slow_down; 0 means 5s (RFC 8628)
}

// Server is a running authorization server. It is safe for concurrent use.
type Server struct {
	cfg Config
	hs  *httptest.Server

	mu       sync.Mutex // guards the maps below
	codes    map[string]*authCode
	devices  map[string]*deviceGrant // by device code
	users    map[string]string       // user code to device code
	refresh  map[string]*refreshToken
	access   map[string]*accessToken
	families int     // families issued, for ids
	reuses   []Reuse // every reuse detection, in order

	faults faults
	stats  counters

	done      chan struct{} // closed by Close: held answers give up waiting
	closeOnce sync.Once
}

// inMemoryAddr is the address in an in-memory server's URLs.
const inMemoryAddr = "127.0.0.1:1"

// New starts a server on a loopback port, or in memory if cfg.InMemory.
// Close stops it.
func New(cfg Config) *Server {
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Subject == "" {
		cfg.Subject = "alice"
	}
	if cfg.DeviceInterval == 0 {
		cfg.DeviceInterval = 5 * time.Second
	}
	if cfg.DeviceTTL == 0 {
		cfg.DeviceTTL = 10 * time.Minute
	}
	if cfg.DeviceSlowDownStep == 0 {
		cfg.DeviceSlowDownStep = 5 * time.Second
	}
	s := &Server{
		cfg:     cfg,
		codes:   make(map[string]*authCode),
		devices: make(map[string]*deviceGrant),
		users:   make(map[string]string),
		refresh: make(map[string]*refreshToken),
		access:  make(map[string]*accessToken),
		done:    make(chan struct{}),
	}
	s.faults.init()
	mux := http.NewServeMux()
	mux.HandleFunc(EndpointAuthorize, s.wrap(EndpointAuthorize, s.authorize))
	mux.HandleFunc(EndpointToken, s.wrap(EndpointToken, s.token))
	mux.HandleFunc(EndpointDevice, s.wrap(EndpointDevice, s.deviceCode))
	mux.HandleFunc(EndpointRevoke, s.wrap(EndpointRevoke, s.revoke))
	mux.HandleFunc(EndpointResource, s.wrap(EndpointResource, s.resource))
	mux.HandleFunc(EndpointResource+"/admin", s.wrap(EndpointResource, s.resource))
	mux.HandleFunc(EndpointUserinfo, s.wrap(EndpointUserinfo, s.userinfo))
	var pipe *pipenet.Listener
	if cfg.InMemory {
		pipe = pipenet.Listen(inMemoryAddr)
		s.hs = &httptest.Server{Listener: pipe, Config: &http.Server{Handler: mux}}
	} else {
		s.hs = httptest.NewUnstartedServer(mux)
	}
	if cfg.TLS {
		s.hs.StartTLS()
	} else {
		s.hs.Start()
	}
	if pipe != nil {
		s.hs.Client().Transport.(*http.Transport).DialContext = pipe.DialContext
	}
	return s
}

// Close stops the server and closes its connections. Answers held by a
// fault are dropped.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	s.hs.Close()
}

// URL returns the server's base URL.
func (s *Server) URL() string { return s.hs.URL }

// Client returns the HTTP client that reaches the server and trusts its
// certificate. Every call returns the same client: a change made to it is
// seen by every user of the server.
func (s *Server) Client() *http.Client { return s.hs.Client() }

// Endpoint returns the server's endpoints for x/oauth2. Clients
// authenticate with HTTP Basic.
func (s *Server) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{
		AuthURL:       s.hs.URL + EndpointAuthorize,
		TokenURL:      s.hs.URL + EndpointToken,
		DeviceAuthURL: s.hs.URL + EndpointDevice,
		AuthStyle:     oauth2.AuthStyleInHeader,
	}
}

// RevocationURL returns the RFC 7009 endpoint.
func (s *Server) RevocationURL() string { return s.hs.URL + EndpointRevoke }

// ResourceURL returns the protected resource. ResourceURL()+"/admin" needs
// the "admin" scope.
func (s *Server) ResourceURL() string { return s.hs.URL + EndpointResource }

// UserinfoURL returns an endpoint that answers who the token belongs to.
func (s *Server) UserinfoURL() string { return s.hs.URL + EndpointUserinfo }

// OAuth2Config returns the configuration of the confidential client. Its
// RedirectURL is a loopback address; any loopback port is accepted.
func (s *Server) OAuth2Config(scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     ClientID,
		ClientSecret: ClientSecret,
		Endpoint:     s.Endpoint(),
		RedirectURL:  "http://127.0.0.1/callback",
		Scopes:       scopes,
	}
}

// PublicConfig returns the configuration of the public client, which has no
// secret and must use PKCE.
func (s *Server) PublicConfig(scopes ...string) *oauth2.Config {
	c := s.OAuth2Config(scopes...)
	c.ClientID, c.ClientSecret = PublicClientID, ""
	c.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	return c
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// randomValue returns prefix and 32 random bytes in base64url.
func randomValue(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}
