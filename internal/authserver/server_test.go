package authserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	srv := New(cfg)
	t.Cleanup(srv.Close)
	return srv
}

// inBubble runs f in a synctest bubble with a server started there, in
// memory: delays, timeouts and abandoned requests happen on the bubble's
// clock, exactly, however loaded the machine is.
func inBubble(t *testing.T, cfg Config, f func(t *testing.T, srv *Server)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		cfg.InMemory = true
		f(t, newServer(t, cfg))
	})
}

// clientCtx is a context whose x/oauth2 calls go through srv's client.
func clientCtx(t testing.TB, srv *Server) context.Context {
	return context.WithValue(t.Context(), oauth2.HTTPClient, srv.Client())
}

// reply is a raw HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	err    error // transport or body read error
}

// json decodes the body as a JSON object, failing the test if it is not one.
func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// errorCode returns the "error" member of a JSON error body, or "".
func (r reply) errorCode() string {
	var m struct {
		Error string `json:"error"`
	}
	json.Unmarshal(r.body, &m)
	return m.Error
}

type clientAuth func(r *http.Request, form url.Values)

func basicAuth(id, secret string) clientAuth {
	return func(r *http.Request, _ url.Values) {
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
}

func bodyAuth(id, secret string) clientAuth {
	return func(_ *http.Request, form url.Values) {
		form.Set("client_id", id)
		if secret != "" {
			form.Set("client_secret", secret)
		}
	}
}

var (
	confidential = basicAuth(ClientID, ClientSecret)
	public       = bodyAuth(PublicClientID, "")
)

// post sends form to endpoint with client, or srv.Client() if nil.
func postWith(t testing.TB, client *http.Client, srv *Server, endpoint string, form url.Values, auth clientAuth) reply {
	t.Helper()
	if client == nil {
		client = srv.Client()
	}
	form = cloneValues(form)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+endpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != nil {
		auth(req, form)
	}
	enc := form.Encode()
	req.Body = io.NopCloser(strings.NewReader(enc))
	req.ContentLength = int64(len(enc))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

func post(t testing.TB, srv *Server, endpoint string, form url.Values, auth clientAuth) reply {
	t.Helper()
	return postWith(t, nil, srv, endpoint, form, auth)
}

// get sends a GET to url with an optional bearer token.
func get(t testing.TB, client *http.Client, rawURL, bearer string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = slices.Clone(vs)
	}
	return c
}

// retrieveErr returns the OAuth error code and HTTP status of an x/oauth2
// error, or "" and 0 if err is not a *oauth2.RetrieveError.
func retrieveErr(err error) (string, int) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return re.ErrorCode, status
	}
	return "", 0
}

func wantRetrieveErr(t testing.TB, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%d)", code, status)
	}
	gotCode, gotStatus := retrieveErr(err)
	if gotCode != code || gotStatus != status {
		t.Fatalf("got error %v (code %q, status %d), want code %q, status %d", err, gotCode, gotStatus, code, status)
	}
}

// refresh redeems rt through x/oauth2.
func refresh(ctx context.Context, cfg *oauth2.Config, rt string) (*oauth2.Token, error) {
	return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

// authorizeCode runs the authorize endpoint for cfg and returns the code.
func authorizeCode(t testing.TB, srv *Server, cfg *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	code, err := FollowAuthorize(t.Context(), srv.Client(), cfg.AuthCodeURL("st4te", opts...), "st4te")
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	if !strings.HasPrefix(code, "tkcode_") {
		t.Fatalf("code %q lacks its prefix", code)
	}
	return code
}

func checkTokenShape(t testing.TB, tok *oauth2.Token, wantRefresh bool) {
	t.Helper()
	if !strings.HasPrefix(tok.AccessToken, "tkat_") {
		t.Errorf("access token %q lacks prefix tkat_", tok.AccessToken)
	}
	if wantRefresh && !strings.HasPrefix(tok.RefreshToken, "tkrt_") {
		t.Errorf("refresh token %q lacks prefix tkrt_", tok.RefreshToken)
	}
	if !wantRefresh && tok.RefreshToken != "" {
		t.Errorf("got refresh token %q, want none", tok.RefreshToken)
	}
	if tok.Type() != "Bearer" {
		t.Errorf("token type %q, want Bearer", tok.Type())
	}
	if tok.Expiry.IsZero() {
		t.Errorf("token has no expiry")
	}
}

func TestLogin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		public    bool
		inParams  bool
		scopes    []string
		wantTTL   time.Duration
		wantIDTok bool
	}{
		{name: "confidential", wantTTL: time.Hour},
		{name: "confidential TLS", cfg: Config{TLS: true}, wantTTL: time.Hour},
		{name: "confidential secret in body", inParams: true, wantTTL: time.Hour},
		{name: "public", public: true, wantTTL: time.Hour},
		{name: "public TLS short TTL", public: true, cfg: Config{TLS: true, AccessTTL: 90 * time.Second}, wantTTL: 90 * time.Second},
		{name: "openid", scopes: []string{"openid", "email"}, wantTTL: time.Hour, wantIDTok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inBubble(t, tc.cfg, func(t *testing.T, srv *Server) {
				cfg := srv.OAuth2Config(tc.scopes...)
				wantClient := ClientID
				if tc.public {
					cfg = srv.PublicConfig(tc.scopes...)
					wantClient = PublicClientID
				}
				if tc.inParams {
					cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
				}
				if tc.cfg.TLS && !strings.HasPrefix(srv.URL(), "https://") {
					t.Fatalf("TLS server URL %q", srv.URL())
				}
				before := time.Now()
				tok, err := srv.Login(t.Context(), cfg, nil)
				if err != nil {
					t.Fatalf("Login: %v", err)
				}
				checkTokenShape(t, tok, true)
				if ttl := tok.Expiry.Sub(before); ttl != tc.wantTTL {
					t.Errorf("expiry in %v, want %v", ttl, tc.wantTTL)
				}
				if got, want := tok.Extra("scope"), strings.Join(tc.scopes, " "); got != want {
					t.Errorf("scope %q, want %q", got, want)
				}
				idt, _ := tok.Extra("id_token").(string)
				if tc.wantIDTok {
					parts := strings.Split(idt, ".")
					if len(parts) != 3 {
						t.Fatalf("id_token %q is not JWT-shaped", idt)
					}
					var claims map[string]any
					b, err := base64.RawURLEncoding.DecodeString(parts[1])
					if err != nil || json.Unmarshal(b, &claims) != nil {
						t.Fatalf("id_token claims %q undecodable: %v", parts[1], err)
					}
					if claims["sub"] != "alice" || claims["aud"] != wantClient || claims["iss"] != srv.URL() {
						t.Errorf("id_token claims %v", claims)
					}
				} else if idt != "" {
					t.Errorf("unexpected id_token %q", idt)
				}
				if !srv.AccessTokenActive(tok.AccessToken) || !srv.RefreshTokenActive(tok.RefreshToken) {
					t.Errorf("fresh tokens not active")
				}
				st := srv.Stats()
				if st.CodeGrants != 1 || st.TokenRequests != 1 {
					t.Errorf("stats %+v, want one code grant and one token request", st)
				}
				// The tokens work against the resource through x/oauth2's client.
				rc := cfg.Client(clientCtx(t, srv), tok)
				resp, err := rc.Get(srv.UserinfoURL())
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("userinfo answered %s", resp.Status)
				}
			})
		})
	}
}

func TestCodeGrantErrors(t *testing.T) {
	type exchangeFunc func(ctx context.Context, srv *Server, clock *fakeClock, cfg *oauth2.Config, code, verifier string) error
	exchange := func(ctx context.Context, cfg *oauth2.Config, code string, opts ...oauth2.AuthCodeOption) error {
		_, err := cfg.Exchange(ctx, code, opts...)
		return err
	}
	for _, tc := range []struct {
		name       string
		public     bool
		noPKCE     bool
		run        exchangeFunc
		wantCode   string
		wantStatus int
	}{
		{
			name: "ok",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
		},
		{
			name:   "ok public",
			public: true,
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
		},
		{
			name:   "ok confidential without PKCE",
			noPKCE: true,
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, _ string) error {
				return exchange(ctx, cfg, code)
			},
		},
		{
			// RFC 9700 section 2.1.1: a code_verifier is accepted only if
			// the authorization request had a code_challenge.
			name:   "verifier without challenge (PKCE downgrade)",
			noPKCE: true,
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "wrong verifier",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, _ string) error {
				return exchange(ctx, cfg, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name:   "wrong verifier public",
			public: true,
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, _ string) error {
				return exchange(ctx, cfg, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "missing verifier",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, _ string) error {
				return exchange(ctx, cfg, code)
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "code reused",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				if err := exchange(ctx, cfg, code, oauth2.VerifierOption(v)); err != nil {
					return errors.New("first exchange failed: " + err.Error())
				}
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "code burnt by a failed attempt",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				if exchange(ctx, cfg, code, oauth2.VerifierOption("wrong-"+v)) == nil {
					return errors.New("wrong verifier accepted")
				}
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "redirect_uri mismatch",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				c := *cfg
				c.RedirectURL = "http://127.0.0.1:8080/other"
				return exchange(ctx, &c, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "code of another client",
			run: func(ctx context.Context, srv *Server, _ *fakeClock, _ *oauth2.Config, code, v string) error {
				return exchange(ctx, srv.PublicConfig(), code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "unknown code",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, _, v string) error {
				return exchange(ctx, cfg, "tkcode_unknown", oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "expired code",
			run: func(ctx context.Context, _ *Server, clock *fakeClock, cfg *oauth2.Config, code, v string) error {
				clock.Advance(time.Minute)
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_grant", wantStatus: 400,
		},
		{
			name: "code still good just before expiry",
			run: func(ctx context.Context, _ *Server, clock *fakeClock, cfg *oauth2.Config, code, v string) error {
				clock.Advance(time.Minute - time.Second)
				return exchange(ctx, cfg, code, oauth2.VerifierOption(v))
			},
		},
		{
			name: "wrong client secret",
			run: func(ctx context.Context, _ *Server, _ *fakeClock, cfg *oauth2.Config, code, v string) error {
				c := *cfg
				c.ClientSecret = "not-the-secret"
				return exchange(ctx, &c, code, oauth2.VerifierOption(v))
			},
			wantCode: "invalid_client", wantStatus: 401,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			srv := newServer(t, Config{Now: clock.Now})
			cfg := srv.OAuth2Config("read")
			if tc.public {
				cfg = srv.PublicConfig("read")
			}
			verifier := oauth2.GenerateVerifier()
			var opts []oauth2.AuthCodeOption
			if !tc.noPKCE {
				opts = append(opts, oauth2.S256ChallengeOption(verifier))
			}
			code := authorizeCode(t, srv, cfg, opts...)
			err := tc.run(clientCtx(t, srv), srv, clock, cfg, code, verifier)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("exchange: %v", err)
				}
				return
			}
			wantRetrieveErr(t, err, tc.wantCode, tc.wantStatus)
		})
	}
}

func TestCodeGrantErrorBody(t *testing.T) {
	srv := newServer(t, Config{})
	cfg := srv.OAuth2Config()
	verifier := oauth2.GenerateVerifier()
	code := authorizeCode(t, srv, cfg, oauth2.S256ChallengeOption(verifier))
	r := post(t, srv, EndpointToken, url.Values{
		"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {cfg.RedirectURL}, "code_verifier": {"wrong"},
	}, confidential)
	if r.status != http.StatusBadRequest || r.errorCode() != "invalid_grant" {
		t.Fatalf("got %d %s, want 400 invalid_grant", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if r.json(t)["error_description"] == "" {
		t.Errorf("no error_description in %s", r.body)
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name      string
		query     url.Values
		status    int    // of the authorize answer
		redirErr  string // error carried by the redirect, if status is 302
		wantState bool
	}{
		{
			name:   "ok with state",
			query:  url.Values{"client_id": {ClientID}, "redirect_uri": {"http://127.0.0.1:1234/cb"}, "response_type": {"code"}, "state": {"xyz"}},
			status: http.StatusFound, wantState: true,
		},
		{
			name:   "public client without code_challenge",
			query:  url.Values{"client_id": {PublicClientID}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"code"}, "state": {"xyz"}},
			status: http.StatusFound, redirErr: "invalid_request", wantState: true,
		},
		{
			name: "plain challenge method",
			query: url.Values{"client_id": {PublicClientID}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"code"},
				"code_challenge": {"abc"}, "code_challenge_method": {"plain"}},
			status: http.StatusFound, redirErr: "invalid_request",
		},
		{
			name: "challenge without method",
			query: url.Values{"client_id": {ClientID}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"code"},
				"code_challenge": {"abc"}},
			status: http.StatusFound, redirErr: "invalid_request",
		},
		{
			name:   "implicit grant",
			query:  url.Values{"client_id": {ClientID}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"token"}},
			status: http.StatusFound, redirErr: "unsupported_response_type",
		},
		{
			name:   "non-loopback redirect",
			query:  url.Values{"client_id": {ClientID}, "redirect_uri": {"https://evil.example/cb"}, "response_type": {"code"}},
			status: http.StatusBadRequest,
		},
		{
			name:   "loopback-looking host name",
			query:  url.Values{"client_id": {ClientID}, "redirect_uri": {"http://127.0.0.1.evil.example/cb"}, "response_type": {"code"}},
			status: http.StatusBadRequest,
		},
		{
			name:   "missing redirect",
			query:  url.Values{"client_id": {ClientID}, "response_type": {"code"}},
			status: http.StatusBadRequest,
		},
		{
			name:   "unknown client",
			query:  url.Values{"client_id": {"intruder"}, "redirect_uri": {"http://127.0.0.1/cb"}, "response_type": {"code"}},
			status: http.StatusBadRequest,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, Config{})
			c := srv.Client()
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			r := get(t, c, srv.URL()+EndpointAuthorize+"?"+tc.query.Encode(), "")
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tc.status {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tc.status)
			}
			if r.status != http.StatusFound {
				if loc := r.header.Get("Location"); loc != "" {
					t.Errorf("refusal redirected to %q", loc)
				}
				return
			}
			loc, err := url.Parse(r.header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.query.Get("redirect_uri"); !strings.HasPrefix(loc.String(), want+"?") {
				t.Errorf("redirected to %q, want %q", loc, want)
			}
			q := loc.Query()
			if got := q.Get("error"); got != tc.redirErr {
				t.Errorf("redirect error %q, want %q", got, tc.redirErr)
			}
			if tc.redirErr != "" && q.Get("code") != "" {
				t.Errorf("refusal carries a code: %q", loc)
			}
			if tc.redirErr == "" && !strings.HasPrefix(q.Get("code"), "tkcode_") {
				t.Errorf("no code in %q", loc)
			}
			if got := q.Get("state"); tc.wantState && got != tc.query.Get("state") {
				t.Errorf("state %q, want %q", got, tc.query.Get("state"))
			}
		})
	}
}

func TestLoginRefusals(t *testing.T) {
	srv := newServer(t, Config{})
	for _, tc := range []struct {
		name   string
		mutate func(*oauth2.Config)
	}{
		{"non-loopback redirect", func(c *oauth2.Config) { c.RedirectURL = "https://app.example/callback" }},
		{"custom scheme redirect", func(c *oauth2.Config) { c.RedirectURL = "com.example.app:/callback" }},
		{"unknown client", func(c *oauth2.Config) { c.ClientID = "nobody" }},
		{"wrong secret", func(c *oauth2.Config) { c.ClientSecret = "guess" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.OAuth2Config()
			tc.mutate(cfg)
			tok, err := srv.Login(t.Context(), cfg, nil)
			if err == nil {
				t.Fatalf("Login succeeded with %+v: %v", cfg, tok)
			}
		})
	}
	// Only the wrong secret reaches the token endpoint, where client
	// authentication fails before any grant is processed.
	if st := srv.Stats(); st.CodeGrants != 0 || st.TokenRequests != 1 {
		t.Errorf("stats %+v, want 1 token request and no code grant", st)
	}
}

func TestFollowAuthorizeStateMismatch(t *testing.T) {
	srv := newServer(t, Config{})
	cfg := srv.OAuth2Config()
	_, err := FollowAuthorize(t.Context(), srv.Client(), cfg.AuthCodeURL("one"), "two")
	if err == nil || !strings.Contains(err.Error(), "state") {
		t.Fatalf("got %v, want a state mismatch", err)
	}
	// An error redirect is reported as such.
	pub := srv.PublicConfig()
	_, err = FollowAuthorize(t.Context(), srv.Client(), pub.AuthCodeURL("s"), "s")
	if err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Fatalf("got %v, want invalid_request", err)
	}
}

// A redirect_uri may carry a query (RFC 6749 section 3.1.2), which the
// authorization server must keep when it adds code and state.
func TestAuthorizeRedirectWithQuery(t *testing.T) {
	srv := newServer(t, Config{})
	cfg := srv.OAuth2Config()
	cfg.RedirectURL = "http://localhost:5555/cb?session=42"
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r := get(t, c, cfg.AuthCodeURL("st"), "")
	if r.status != http.StatusFound {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("session") != "42" || q.Get("state") != "st" || !strings.HasPrefix(q.Get("code"), "tkcode_") {
		t.Fatalf("redirect %q lost a parameter", loc)
	}
	if loc.Host != "localhost:5555" || loc.Path != "/cb" {
		t.Fatalf("redirect %q goes elsewhere", loc)
	}
	if _, err := cfg.Exchange(clientCtx(t, srv), q.Get("code")); err != nil {
		t.Fatalf("exchange with the same redirect_uri: %v", err)
	}
}

func TestLoopbackRedirect(t *testing.T) {
	for raw, want := range map[string]bool{
		"http://127.0.0.1/cb":             true,
		"http://127.0.0.1:49152/cb":       true,
		"https://127.0.0.1/cb":            true,
		"http://127.1.2.3:80/":            true,
		"http://[::1]:8080/cb":            true,
		"http://localhost/cb":             true,
		"http://localhost:1/":             true,
		"":                                false,
		"127.0.0.1/cb":                    false,
		"ftp://127.0.0.1/cb":              false,
		"https://example.com/cb":          false,
		"http://10.0.0.1/cb":              false,
		"http://[::2]/cb":                 false,
		"http://localhost.evil.example/":  false,
		"http://127.0.0.1.evil.example/":  false,
		"http://evil.example/127.0.0.1":   false,
		"http://127.0.0.1@evil.example/":  false,
		"com.example.app:/oauth-callback": false,
		"http://%zz/":                     false,
	} {
		if got := loopbackRedirect(raw); got != want {
			t.Errorf("loopbackRedirect(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestClientAuthentication(t *testing.T) {
	srv := newServer(t, Config{})
	// An unsupported grant type tells authentication apart: an
	// authenticated client gets 400 unsupported_grant_type, any other 401.
	bogus := url.Values{"grant_type": {"bogus"}}
	for _, tc := range []struct {
		name string
		auth clientAuth
		ok   bool
	}{
		{"basic", basicAuth(ClientID, ClientSecret), true},
		{"body", bodyAuth(ClientID, ClientSecret), true},
		{"basic public without secret", basicAuth(PublicClientID, ""), true},
		{"body public without secret", bodyAuth(PublicClientID, ""), true},
		{"basic wrong secret", basicAuth(ClientID, ClientSecret+"x"), false},
		{"body wrong secret", bodyAuth(ClientID, "x"), false},
		{"basic secret prefix", basicAuth(ClientID, ClientSecret[:5]), false},
		{"confidential without secret", bodyAuth(ClientID, ""), false},
		{"public with a secret", bodyAuth(PublicClientID, "anything"), false},
		{"unknown client", basicAuth("someone", ClientSecret), false},
		{"no authentication", nil, false},
		{"basic not form-encoded", func(r *http.Request, _ url.Values) { r.SetBasicAuth(ClientID, ClientSecret) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv, EndpointToken, bogus, tc.auth)
			if tc.ok {
				if r.status != http.StatusBadRequest || r.errorCode() != "unsupported_grant_type" {
					t.Fatalf("got %d %s, want 400 unsupported_grant_type", r.status, r.body)
				}
				return
			}
			if r.status != http.StatusUnauthorized || r.errorCode() != "invalid_client" {
				t.Fatalf("got %d %s, want 401 invalid_client", r.status, r.body)
			}
			if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Basic") {
				t.Errorf("WWW-Authenticate %q, want a Basic challenge", wa)
			}
		})
	}

	t.Run("x/oauth2 auth styles", func(t *testing.T) {
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams, oauth2.AuthStyleAutoDetect} {
			cfg := srv.OAuth2Config()
			cfg.Endpoint.AuthStyle = style
			if _, err := srv.Login(t.Context(), cfg, nil); err != nil {
				t.Errorf("style %v: %v", style, err)
			}
			cfg.ClientSecret = "wrong"
			tok := srv.Mint()
			_, err := refresh(clientCtx(t, srv), cfg, tok.RefreshToken)
			if style == oauth2.AuthStyleAutoDetect {
				// x/oauth2 retries in the other style; both fail.
				if c, _ := retrieveErr(err); c != "invalid_client" {
					t.Errorf("style %v wrong secret: %v", style, err)
				}
				continue
			}
			wantRetrieveErr(t, err, "invalid_client", http.StatusUnauthorized)
		}
	})

	t.Run("other endpoints", func(t *testing.T) {
		for _, ep := range []string{EndpointDevice, EndpointRevoke} {
			r := post(t, srv, ep, url.Values{"token": {"x"}}, basicAuth(ClientID, "wrong"))
			if r.status != http.StatusUnauthorized || r.errorCode() != "invalid_client" {
				t.Errorf("%s: got %d %s, want 401 invalid_client", ep, r.status, r.body)
			}
		}
	})
}

func TestTokenEndpointRequests(t *testing.T) {
	srv := newServer(t, Config{})
	for _, tc := range []struct {
		name   string
		method string
		form   url.Values
		status int
		code   string
	}{
		{"GET", http.MethodGet, nil, http.StatusMethodNotAllowed, ""},
		{"no grant_type", http.MethodPost, url.Values{}, http.StatusBadRequest, "invalid_request"},
		{"password grant", http.MethodPost, url.Values{"grant_type": {"password"}}, http.StatusBadRequest, "unsupported_grant_type"},
		{"refresh without token", http.MethodPost, url.Values{"grant_type": {"refresh_token"}}, http.StatusBadRequest, "invalid_request"},
		{"unknown refresh token", http.MethodPost, refreshForm("tkrt_nope"), http.StatusBadRequest, "invalid_grant"},
		{"unknown device code", http.MethodPost, url.Values{"grant_type": {deviceGrantType}, "device_code": {"x"}}, http.StatusBadRequest, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r reply
			if tc.method == http.MethodPost {
				r = post(t, srv, EndpointToken, tc.form, confidential)
			} else {
				r = get(t, srv.Client(), srv.URL()+EndpointToken, "")
			}
			if r.status != tc.status || (tc.code != "" && r.errorCode() != tc.code) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	t.Run("rotation with reuse detection revokes the family", func(t *testing.T) {
		srv := newServer(t, Config{Rotate: true, ReuseDetection: true})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config("read")
		tok, err := srv.Login(t.Context(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		rt0 := tok.RefreshToken
		tok1, err := refresh(ctx, cfg, rt0)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		checkTokenShape(t, tok1, true)
		rt1 := tok1.RefreshToken
		if rt1 == rt0 || tok1.AccessToken == tok.AccessToken {
			t.Fatalf("rotation returned the old token")
		}
		if srv.RefreshTokenActive(rt0) || !srv.RefreshTokenActive(rt1) {
			t.Fatalf("after rotation: old active %v, new active %v", srv.RefreshTokenActive(rt0), srv.RefreshTokenActive(rt1))
		}
		// A second generation, so that reuse of the first revokes two.
		tok2, err := refresh(ctx, cfg, rt1)
		if err != nil {
			t.Fatal(err)
		}
		if !srv.AccessTokenActive(tok.AccessToken) || !srv.AccessTokenActive(tok2.AccessToken) {
			t.Fatalf("rotation alone must not revoke access tokens")
		}
		// Reuse of a retired token: invalid_grant, and the family dies.
		r := post(t, srv, EndpointToken, refreshForm(rt0), confidential)
		if r.status != http.StatusBadRequest || r.errorCode() != "invalid_grant" {
			t.Fatalf("reuse: got %d %s, want 400 invalid_grant", r.status, r.body)
		}
		for name, v := range map[string]string{"rt1": rt1, "rt2": tok2.RefreshToken} {
			if srv.RefreshTokenActive(v) {
				t.Errorf("%s still active after reuse", name)
			}
		}
		for name, v := range map[string]string{"at0": tok.AccessToken, "at1": tok1.AccessToken, "at2": tok2.AccessToken} {
			if srv.AccessTokenActive(v) {
				t.Errorf("%s still active after reuse", name)
			}
		}
		_, err = refresh(ctx, cfg, tok2.RefreshToken)
		wantRetrieveErr(t, err, "invalid_grant", http.StatusBadRequest)
		if st := srv.Stats(); st.ReuseDetections != 1 || st.RefreshGrants != 4 {
			t.Errorf("stats %+v, want 1 reuse detection and 4 refresh grants", st)
		}
		// Another login is a separate family and is untouched.
		other := srv.Mint()
		if _, err := refresh(ctx, cfg, other.RefreshToken); err != nil {
			t.Errorf("unrelated family: %v", err)
		}
	})

	t.Run("rotation without reuse detection", func(t *testing.T) {
		srv := newServer(t, Config{Rotate: true})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		tok := srv.Mint()
		tok1, err := refresh(ctx, cfg, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		_, err = refresh(ctx, cfg, tok.RefreshToken)
		wantRetrieveErr(t, err, "invalid_grant", http.StatusBadRequest)
		if !srv.RefreshTokenActive(tok1.RefreshToken) {
			t.Fatalf("without reuse detection the new token must survive")
		}
		if _, err := refresh(ctx, cfg, tok1.RefreshToken); err != nil {
			t.Fatal(err)
		}
		if st := srv.Stats(); st.ReuseDetections != 0 {
			t.Errorf("ReuseDetections %d, want 0", st.ReuseDetections)
		}
	})

	t.Run("no rotation keeps the refresh token", func(t *testing.T) {
		srv := newServer(t, Config{})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		tok := srv.Mint()
		r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if got := r.json(t)["refresh_token"]; got != tok.RefreshToken {
			t.Fatalf("refresh_token %v, want the same %q", got, tok.RefreshToken)
		}
		for range 3 {
			tok2, err := refresh(ctx, cfg, tok.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if tok2.RefreshToken != tok.RefreshToken || tok2.AccessToken == tok.AccessToken {
				t.Fatalf("got %q/%q", tok2.AccessToken, tok2.RefreshToken)
			}
		}
		if !srv.RefreshTokenActive(tok.RefreshToken) {
			t.Fatal("refresh token retired without rotation")
		}
	})

	t.Run("omit refresh token on refresh", func(t *testing.T) {
		srv := newServer(t, Config{OmitRefreshTokenOnRefresh: true})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		tok := srv.Mint()
		r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		m := r.json(t)
		if _, ok := m["refresh_token"]; ok {
			t.Fatalf("answer %s carries refresh_token", r.body)
		}
		if at, _ := m["access_token"].(string); !strings.HasPrefix(at, "tkat_") {
			t.Fatalf("answer %s lacks an access token", r.body)
		}
		// x/oauth2 keeps the old refresh token, which still works.
		tok2, err := refresh(ctx, cfg, tok.RefreshToken)
		if err != nil || tok2.RefreshToken != tok.RefreshToken {
			t.Fatalf("got %v, %v", tok2, err)
		}
	})

	t.Run("omit does not apply to rotation", func(t *testing.T) {
		srv := newServer(t, Config{OmitRefreshTokenOnRefresh: true, Rotate: true})
		tok := srv.Mint()
		r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
		rt, _ := r.json(t)["refresh_token"].(string)
		if !strings.HasPrefix(rt, "tkrt_") || rt == tok.RefreshToken {
			t.Fatalf("rotation answer %s lacks a new refresh token", r.body)
		}
	})

	t.Run("refresh token expiry", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, RefreshTTL: time.Hour})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		tok := srv.Mint()
		clock.Advance(time.Hour - time.Second)
		if _, err := refresh(ctx, cfg, tok.RefreshToken); err != nil {
			t.Fatalf("just before expiry: %v", err)
		}
		clock.Advance(time.Second)
		if srv.RefreshTokenActive(tok.RefreshToken) {
			t.Fatal("expired refresh token reported active")
		}
		_, err := refresh(ctx, cfg, tok.RefreshToken)
		wantRetrieveErr(t, err, "invalid_grant", http.StatusBadRequest)
	})

	t.Run("rotated refresh tokens get a fresh lifetime", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now, RefreshTTL: time.Hour, Rotate: true})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		rt := srv.Mint().RefreshToken
		for range 3 {
			clock.Advance(50 * time.Minute)
			tok, err := refresh(ctx, cfg, rt)
			if err != nil {
				t.Fatal(err)
			}
			rt = tok.RefreshToken
		}
	})

	t.Run("no expiry by default", func(t *testing.T) {
		clock := newFakeClock()
		srv := newServer(t, Config{Now: clock.Now})
		tok := srv.Mint()
		clock.Advance(10 * 365 * 24 * time.Hour)
		if !srv.RefreshTokenActive(tok.RefreshToken) {
			t.Fatal("refresh token expired without RefreshTTL")
		}
		if _, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("scopes", func(t *testing.T) {
		srv := newServer(t, Config{})
		tok := srv.Mint("read", "write")
		f := refreshForm(tok.RefreshToken)
		f.Set("scope", "read")
		r := post(t, srv, EndpointToken, f, confidential)
		if r.status != http.StatusOK || r.json(t)["scope"] != "read" {
			t.Fatalf("narrowing: got %d %s", r.status, r.body)
		}
		f.Set("scope", "read admin")
		r = post(t, srv, EndpointToken, f, confidential)
		if r.status != http.StatusBadRequest || r.errorCode() != "invalid_scope" {
			t.Fatalf("widening: got %d %s, want 400 invalid_scope", r.status, r.body)
		}
		r = post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
		if r.json(t)["scope"] != "read write" {
			t.Fatalf("default scope: %s", r.body)
		}
	})

	t.Run("refresh token of another client", func(t *testing.T) {
		srv := newServer(t, Config{})
		tok := srv.Mint()
		r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), public)
		if r.status != http.StatusBadRequest || r.errorCode() != "invalid_grant" {
			t.Fatalf("got %d %s, want 400 invalid_grant", r.status, r.body)
		}
	})

	t.Run("RevokeFamilyOf", func(t *testing.T) {
		srv := newServer(t, Config{})
		tok := srv.Mint()
		srv.RevokeFamilyOf(tok.RefreshToken)
		srv.RevokeFamilyOf("tkrt_unknown") // no effect, no panic
		if srv.RefreshTokenActive(tok.RefreshToken) || srv.AccessTokenActive(tok.AccessToken) {
			t.Fatal("family still active")
		}
		_, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), tok.RefreshToken)
		wantRetrieveErr(t, err, "invalid_grant", http.StatusBadRequest)
	})
}

// Concurrent redemptions of one rotating refresh token: exactly one wins.
func TestRefreshRotationRace(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
	rt := srv.Mint().RefreshToken
	const n = 16
	var ok, failed atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := refresh(ctx, cfg, rt)
			switch c, _ := retrieveErr(err); {
			case err == nil:
				ok.Add(1)
			case c == "invalid_grant":
				failed.Add(1)
			default:
				t.Errorf("unexpected error %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || failed.Load() != n-1 {
		t.Fatalf("%d succeeded and %d failed, want 1 and %d", ok.Load(), failed.Load(), n-1)
	}
	if st := srv.Stats(); st.RefreshGrants != n || st.TokenRequests != n {
		t.Errorf("stats %+v, want %d refresh grants", st, n)
	}
}

func TestClientCredentials(t *testing.T) {
	srv := newServer(t, Config{AccessTTL: 10 * time.Minute})
	cc := &clientcredentials.Config{
		ClientID: ClientID, ClientSecret: ClientSecret,
		TokenURL: srv.Endpoint().TokenURL, Scopes: []string{"read", "admin"},
		AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := cc.Token(clientCtx(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	checkTokenShape(t, tok, false)
	if got := tok.Extra("scope"); got != "read admin" {
		t.Errorf("scope %v", got)
	}
	if ttl := time.Until(tok.Expiry); ttl < 9*time.Minute || ttl > 11*time.Minute {
		t.Errorf("expires in %v, want 10m", ttl)
	}

	r := post(t, srv, EndpointToken, url.Values{"grant_type": {"client_credentials"}}, confidential)
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if _, ok := r.json(t)["refresh_token"]; ok {
		t.Errorf("client_credentials answer %s has a refresh token", r.body)
	}

	// The token's subject is the client itself; the admin scope opens /admin.
	ar := get(t, srv.Client(), srv.ResourceURL()+"/admin", tok.AccessToken)
	if ar.status != http.StatusOK || ar.json(t)["sub"] != ClientID {
		t.Errorf("resource: %d %s", ar.status, ar.body)
	}

	r = post(t, srv, EndpointToken, url.Values{"grant_type": {"client_credentials"}}, public)
	if r.status != http.StatusBadRequest || r.errorCode() != "unauthorized_client" {
		t.Errorf("public client: got %d %s, want 400 unauthorized_client", r.status, r.body)
	}
	if st := srv.Stats(); st.ClientCredentialsGrants != 3 {
		t.Errorf("ClientCredentialsGrants %d, want 3", st.ClientCredentialsGrants)
	}
}

// TestExpiresInWholeSeconds checks that expires_in never announces 0 (no
// stated lifetime) for a lifetime under a second, and rounds up otherwise.
func TestExpiresInWholeSeconds(t *testing.T) {
	for _, tc := range []struct {
		ttl  time.Duration
		want float64
	}{
		{time.Millisecond, 1},
		{800 * time.Millisecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{time.Hour, 3600},
	} {
		srv := newServer(t, Config{AccessTTL: tc.ttl})
		r := post(t, srv, EndpointToken, url.Values{"grant_type": {"client_credentials"}}, confidential)
		if r.status != http.StatusOK {
			t.Fatalf("%v: got %d %s", tc.ttl, r.status, r.body)
		}
		if got := r.json(t)["expires_in"]; got != tc.want {
			t.Errorf("AccessTTL %v: expires_in %v, want %v", tc.ttl, got, tc.want)
		}
		if got := srv.Mint("read").ExpiresIn; got != int64(tc.want) {
			t.Errorf("AccessTTL %v: Mint ExpiresIn %d, want %v", tc.ttl, got, tc.want)
		}
	}
}

func TestMint(t *testing.T) {
	srv := newServer(t, Config{Subject: "bob"})
	tok := srv.Mint("openid", "read")
	checkTokenShape(t, tok, true)
	if _, ok := tok.Extra("id_token").(string); !ok {
		t.Error("no id_token with openid")
	}
	if tok.Extra("scope") != "openid read" {
		t.Errorf("scope %v", tok.Extra("scope"))
	}
	if _, ok := srv.Mint("read").Extra("id_token").(string); ok {
		t.Error("id_token without openid")
	}
	r := get(t, srv.Client(), srv.UserinfoURL(), tok.AccessToken)
	if r.status != http.StatusOK || r.json(t)["sub"] != "bob" {
		t.Errorf("userinfo: %d %s", r.status, r.body)
	}
	if st := srv.Stats(); st.TokenRequests != 0 {
		t.Errorf("Mint made %d token requests", st.TokenRequests)
	}
}

// Every value a client sees carries its prefix, so that leaks can be found
// by searching for it, and every value is distinct.
func TestTokenPrefixes(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	ctx := clientCtx(t, srv)
	seen := map[string]bool{}
	add := func(how string, tok *oauth2.Token, wantRefresh bool) {
		t.Helper()
		checkTokenShape(t, tok, wantRefresh)
		for _, v := range []string{tok.AccessToken, tok.RefreshToken} {
			if v == "" {
				continue
			}
			if seen[v] {
				t.Errorf("%s: value %q issued twice", how, v)
			}
			seen[v] = true
			if len(v) < 40 {
				t.Errorf("%s: value %q is short", how, v)
			}
		}
	}
	login, err := srv.Login(t.Context(), srv.OAuth2Config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	add("login", login, true)
	add("mint", srv.Mint(), true)
	rt, err := refresh(ctx, srv.OAuth2Config(), login.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	add("refresh", rt, true)
	cc := &clientcredentials.Config{ClientID: ClientID, ClientSecret: ClientSecret, TokenURL: srv.Endpoint().TokenURL}
	ct, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	add("client credentials", ct, false)
}

// An in-memory server is reached by its Client only: a request sent with
// another client fails instead of reaching some other server.
func TestInMemoryOnlyByItsClient(t *testing.T) {
	srv := newServer(t, Config{InMemory: true})
	at := srv.Mint().AccessToken
	if r := get(t, srv.Client(), srv.ResourceURL(), at); r.err != nil || r.status != 200 {
		t.Fatalf("through Client: %d %v", r.status, r.err)
	}
	if r := get(t, &http.Client{Transport: &http.Transport{}}, srv.ResourceURL(), at); r.err == nil {
		t.Fatalf("another client reached something: %d %s", r.status, r.body)
	}
}
