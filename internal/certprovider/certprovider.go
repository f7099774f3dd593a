// Package certprovider runs a certified foreign authorization server for
// tokenkeep's conformance tests: Node's oidc-provider (OpenID Certified),
// pinned by the lockfile in testdata/oidc-provider and configured strictly by
// the script there. Refresh tokens rotate on every use and a spent one
// presented again revokes the grant; access tokens live 2 s; there is no
// clock tolerance; public clients must use PKCE.
//
// Each [Start] runs one provider process on a loopback port for one test and
// ends it, checking that nothing is left running, when the test ends. Tests
// skip only where node is not installed. Where the npm packages are missing
// or stale, Start installs them with npm ci once.
//
// The provider offers test-only routes, which this package wraps: logins
// approved without a browser ([Provider.Login], [Provider.LoginDevice]),
// counters ([Provider.Stats], [Provider.WaitStats], [Provider.Grant]) and a
// slow token endpoint ([Provider.DelayToken]).
package certprovider

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
)

// Registered clients. Each may use the authorization code grant with a
// redirect to RedirectURL, the device client excepted.
const (
	// PublicClientID is a command-line tool's client: no secret, PKCE
	// required, any loopback port in its redirect (RFC 8252).
	PublicClientID = "tokenkeep-public"
	// BasicClientID authenticates with HTTP Basic (client_secret_basic).
	BasicClientID     = "tokenkeep-basic"
	BasicClientSecret = "tokenkeep-basic-secret"
	// PostClientID sends its credentials in the body (client_secret_post).
	PostClientID     = "tokenkeep-post"
	PostClientSecret = "tokenkeep-post-secret"
	// DeviceClientID is a public client of the device flow (RFC 8628).
	DeviceClientID = "tokenkeep-device"
)

// RedirectURL is the redirect every client registered. The public client may
// use it with any port.
const RedirectURL = "http://127.0.0.1/callback"

// Resource is the one resource server the provider knows (RFC 8707).
const Resource = "urn:tokenkeep:test-api"

// Scopes ask for a refresh token, as OpenID Connect requires.
var Scopes = []string{"openid", "offline_access"}

// AccessTTL is the lifetime of the access tokens the provider issues.
const AccessTTL = 2 * time.Second

// readyTimeout bounds the wait for the provider's first line. Starting node
// takes well under a second on an idle machine; a busy one with the race
// detector running beside it may take many times that.
const readyTimeout = 90 * time.Second

// Provider is a running oidc-provider. Its methods are safe for concurrent
// use.
type Provider struct {
	// Issuer is the provider's base URL, http on a loopback address.
	Issuer string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncbuf.Buffer
	exited chan struct{} // closed when the process has been waited for
	hc     *http.Client  // for the test-only routes
}

// Start starts a provider for t and registers its end with t.Cleanup. It
// skips t where node is not installed and fails t where the provider does
// not start.
func Start(t testing.TB) *Provider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("certprovider: node is not installed; the conformance tests need Node.js 20 or later (Debian package nodejs) and `npm ci --prefix testdata/oidc-provider`")
	}
	dir, err := Dir()
	if err != nil {
		t.Fatalf("certprovider: %v", err)
	}
	if err := ensureInstalled(dir); err != nil {
		t.Fatalf("certprovider: %v", err)
	}
	p, err := start(node, dir)
	if p != nil {
		t.Cleanup(func() {
			if err := p.stop(); err != nil {
				t.Errorf("certprovider: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("certprovider: %v", err)
	}
	return p
}

func start(node, dir string) (*Provider, error) {
	p := &Provider{
		stderr: new(syncbuf.Buffer),
		exited: make(chan struct{}),
		hc:     &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	p.cmd = exec.Command(node, "provider.mjs")
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(os.Environ(), "NODE_ENV=test")
	ownGroup(p.cmd)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		first <- line
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var line string
	select {
	case line = <-first:
	case <-p.exited:
		return p, fmt.Errorf("the provider exited before it was ready (%v); its output:\n%s", p.cmd.ProcessState, p.stderr)
	case <-timer.C:
		return p, fmt.Errorf("the provider printed nothing in %v; its output:\n%s", readyTimeout, p.stderr)
	}
	var ready struct{ Issuer string }
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.Issuer == "" {
		return p, fmt.Errorf("the provider's first line %q is not {\"issuer\": …}; its output:\n%s", line, p.stderr)
	}
	p.Issuer = ready.Issuer
	return p, nil
}

// stop closes the provider's stdin, which ends it, kills it if it has not
// ended within a bound, and reports any process of its group left running.
func (p *Provider) stop() error {
	p.stdin.Close()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	var errs []error
	select {
	case <-p.exited:
	case <-timer.C:
		errs = append(errs, errors.New("the provider did not exit when its stdin closed; killed"))
		killGroup(p.cmd)
		<-p.exited
	}
	if err := groupLeft(p.cmd); err != nil {
		errs = append(errs, err)
	}
	p.hc.CloseIdleConnections()
	return errors.Join(errs...)
}

// Pid returns the provider's process id.
func (p *Provider) Pid() int { return p.cmd.Process.Pid }

// Output returns what the provider wrote to stderr so far, for failure
// messages.
func (p *Provider) Output() string { return p.stderr.String() }

// Endpoint returns the provider's endpoints. AuthStyle is left unset, as a
// user who copies a provider's URLs leaves it.
func (p *Provider) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{
		AuthURL:       p.Issuer + "/auth",
		TokenURL:      p.Issuer + "/token",
		DeviceAuthURL: p.Issuer + "/device/auth",
	}
}

// RevocationURL returns the RFC 7009 endpoint.
func (p *Provider) RevocationURL() string { return p.Issuer + "/token/revocation" }

// UserinfoURL returns the OpenID Connect userinfo endpoint, which accepts
// the access tokens issued without a resource indicator.
func (p *Provider) UserinfoURL() string { return p.Issuer + "/me" }

// Config returns the configuration of a registered client, with Scopes and
// the auth style unset.
func (p *Provider) Config(clientID string) *oauth2.Config {
	c := &oauth2.Config{ClientID: clientID, Endpoint: p.Endpoint(), RedirectURL: RedirectURL, Scopes: Scopes}
	switch clientID {
	case BasicClientID:
		c.ClientSecret = BasicClientSecret
	case PostClientID:
		c.ClientSecret = PostClientSecret
	case DeviceClientID:
		c.RedirectURL = ""
	}
	return c
}

// registeredStyle is how clientID authenticates, as the provider registered
// it: logins use it so that only the code under test guesses.
func registeredStyle(clientID string) oauth2.AuthStyle {
	if clientID == BasicClientID {
		return oauth2.AuthStyleInHeader
	}
	return oauth2.AuthStyleInParams
}

// Login obtains a token for cfg's client with the authorization code grant
// and PKCE (required of the public client, used by all). An HTTP client with
// a cookie jar stands in for the browser, the provider approves the login at
// once, and the redirect to the client is caught before it is followed, so
// nothing needs to listen on the redirect's port. The public client
// redirects to a loopback port of its own, as RFC 8252 lets a command-line
// tool do. The code is exchanged with the auth style the client registered,
// so that only the code under test has to guess it. opts are added to the
// authorization request and the exchange (a resource indicator, say).
func (p *Provider) Login(ctx context.Context, cfg *oauth2.Config, opts ...oauth2.AuthCodeOption) (*oauth2.Token, error) {
	c := *cfg
	c.Endpoint.AuthStyle = registeredStyle(cfg.ClientID)
	c.RedirectURL = RedirectURL
	if cfg.ClientID == PublicClientID {
		c.RedirectURL = publicRedirectURL
	}
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()
	authOpts := append([]oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("prompt", "consent"), // offline_access needs it
	}, opts...)
	code, err := browse(ctx, c.AuthCodeURL(state, authOpts...), c.RedirectURL, state)
	if err != nil {
		return nil, err
	}
	return c.Exchange(ctx, code, append([]oauth2.AuthCodeOption{oauth2.VerifierOption(verifier)}, opts...)...)
}

// LoginDevice obtains a token for cfg's client with the device authorization
// grant (RFC 8628), approving the user code as the user would.
func (p *Provider) LoginDevice(ctx context.Context, cfg *oauth2.Config) (*oauth2.Token, error) {
	c := *cfg
	c.Endpoint.AuthStyle = registeredStyle(cfg.ClientID)
	da, err := c.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("device authorization: %w", err)
	}
	if err := p.post(ctx, "/test/device/approve", url.Values{"user_code": {da.UserCode}}, nil); err != nil {
		return nil, fmt.Errorf("approve the user code: %w", err)
	}
	return c.DeviceAccessToken(ctx, da)
}

// Stats are the provider's counters since it started.
type Stats struct {
	TokenRequests        int            `json:"token_requests"`        // requests to the token endpoint
	GrantTypes           map[string]int `json:"grant_types"`           // token requests by grant_type
	RefreshGrants        int            `json:"refresh_grants"`        // refresh_token grants that issued tokens
	ReuseDetections      int            `json:"reuse_detections"`      // spent refresh tokens presented again
	GrantsRevoked        int            `json:"grants_revoked"`        // grants ended by reuse detection or revocation
	RevocationRequests   int            `json:"revocation_requests"`   // requests to the revocation endpoint
	TokenErrors          map[string]int `json:"token_errors"`          // token endpoint errors by code
	DeviceAuthorizations int            `json:"device_authorizations"` // device flows started
	Delayed              int            `json:"delayed"`               // token requests DelayToken held back
}

// Counter names for WaitStats: the JSON names of Stats' integer fields.
const (
	CounterTokenRequests      = "token_requests"
	CounterRefreshGrants      = "refresh_grants"
	CounterReuseDetections    = "reuse_detections"
	CounterGrantsRevoked      = "grants_revoked"
	CounterRevocationRequests = "revocation_requests"
)

// Stats returns the provider's counters.
func (p *Provider) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := p.get(ctx, "/test/stats", nil, &s)
	return s, err
}

// WaitStats waits until counter has reached atLeast, or ctx ends, and
// returns the counters. The provider answers when the counter moves, so
// nothing polls.
func (p *Provider) WaitStats(ctx context.Context, counter string, atLeast int) (Stats, error) {
	for {
		var s Stats
		q := url.Values{"wait_for": {counter}, "at_least": {fmt.Sprint(atLeast)}, "timeout_ms": {"20000"}}
		err := p.get(ctx, "/test/stats", q, &s)
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusRequestTimeout {
			continue // the long poll ended; ctx has not
		}
		return s, err
	}
}

// Grant is what the provider knows of one grant: a login and every token
// issued from it.
type Grant struct {
	ID              string `json:"id"`
	Live            bool   `json:"live"`             // not revoked, not expired
	Refreshes       int    `json:"refreshes"`        // refresh_token grants that issued tokens
	ReuseDetections int    `json:"reuse_detections"` // spent refresh tokens presented again
	Revoked         bool   `json:"revoked"`
	RevokedBy       string `json:"revoked_by"` // "revocation" or "reuse"
}

// GrantOf returns the grant a live or spent refresh token belongs to. A
// refresh token whose grant was revoked is forgotten: use GrantByID.
func (p *Provider) GrantOf(ctx context.Context, refreshToken string) (Grant, error) {
	var g Grant
	err := p.get(ctx, "/test/grant", url.Values{"refresh_token": {refreshToken}}, &g)
	return g, err
}

// GrantByID returns the grant with id.
func (p *Provider) GrantByID(ctx context.Context, id string) (Grant, error) {
	var g Grant
	err := p.get(ctx, "/test/grant", url.Values{"id": {id}}, &g)
	return g, err
}

// AccessToken is what the provider knows of an access token it issued.
type AccessToken struct {
	GrantID string `json:"grant_id"`
	Latest  bool   `json:"latest"`  // the last one issued from its grant
	Expired bool   `json:"expired"` // by the provider's clock
	// Audience is the resource server the token is for (RFC 8707), or
	// empty for the provider's own userinfo endpoint.
	Audience string `json:"audience"`
	Scope    string `json:"scope"`
}

// AccessTokenInfo looks up an access token the provider issued, expired or
// not. It answers an error for one the provider does not know.
func (p *Provider) AccessTokenInfo(ctx context.Context, value string) (AccessToken, error) {
	var at AccessToken
	err := p.get(ctx, "/test/access-token", url.Values{"value": {value}}, &at)
	return at, err
}

// DelayToken holds back the next count requests to the token endpoint:
// before the provider processes them, and after it has answered but before
// the answer leaves (by then a refresh token has rotated).
func (p *Provider) DelayToken(ctx context.Context, before, after time.Duration, count int) error {
	return p.post(ctx, "/test/token-delay", url.Values{
		"before_ms": {fmt.Sprint(before.Milliseconds())},
		"after_ms":  {fmt.Sprint(after.Milliseconds())},
		"count":     {fmt.Sprint(count)},
	}, nil)
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("certprovider: %d %s", e.code, strings.TrimSpace(e.body))
}

func (p *Provider) get(ctx context.Context, path string, q url.Values, out any) error {
	u := p.Issuer + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return p.do(req, out)
}

func (p *Provider) post(ctx context.Context, path string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return p.do(req, out)
}

func (p *Provider) do(req *http.Request, out any) error {
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.StatusCode, string(body)}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// Dir returns the directory of the provider script and its lockfile,
// testdata/oidc-provider at the root of the module holding the working
// directory.
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "testdata", "oidc-provider"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}
