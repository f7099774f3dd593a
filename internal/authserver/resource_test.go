package authserver

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestRevocation(t *testing.T) {
	t.Run("refresh token revokes its family", func(t *testing.T) {
		srv := newServer(t, Config{})
		ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
		tok := srv.Mint()
		other := srv.Mint()
		r := post(t, srv, EndpointRevoke, url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}}, confidential)
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if srv.RefreshTokenActive(tok.RefreshToken) || srv.AccessTokenActive(tok.AccessToken) {
			t.Fatal("revoked session still active")
		}
		_, err := refresh(ctx, cfg, tok.RefreshToken)
		wantRetrieveErr(t, err, "invalid_grant", http.StatusBadRequest)
		if !srv.RefreshTokenActive(other.RefreshToken) || !srv.AccessTokenActive(other.AccessToken) {
			t.Fatal("revocation spilled into another session")
		}
	})

	t.Run("access token only", func(t *testing.T) {
		srv := newServer(t, Config{})
		tok := srv.Mint()
		r := post(t, srv, EndpointRevoke, url.Values{"token": {tok.AccessToken}}, bodyAuth(ClientID, ClientSecret))
		if r.status != http.StatusOK {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		if srv.AccessTokenActive(tok.AccessToken) {
			t.Fatal("revoked access token still active")
		}
		if rr := get(t, srv.Client(), srv.ResourceURL(), tok.AccessToken); rr.status != http.StatusUnauthorized {
			t.Fatalf("resource accepted a revoked token: %d", rr.status)
		}
		if !srv.RefreshTokenActive(tok.RefreshToken) {
			t.Fatal("revoking an access token ended the session")
		}
		if _, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("public client", func(t *testing.T) {
		srv := newServer(t, Config{})
		da := startDeviceApproved(t, srv)
		r := post(t, srv, EndpointRevoke, url.Values{"token": {da.RefreshToken}}, public)
		if r.status != http.StatusOK || srv.RefreshTokenActive(da.RefreshToken) {
			t.Fatalf("got %d %s, active %v", r.status, r.body, srv.RefreshTokenActive(da.RefreshToken))
		}
	})

	for _, tc := range []struct {
		name   string
		form   url.Values
		auth   clientAuth
		status int
		code   string
	}{
		{"unknown token", url.Values{"token": {"tkrt_never-issued"}}, confidential, http.StatusOK, ""},
		{"unknown token, hint", url.Values{"token": {"garbage"}, "token_type_hint": {"access_token"}}, confidential, http.StatusOK, ""},
		{"missing token", url.Values{}, confidential, http.StatusBadRequest, "invalid_request"},
		{"wrong secret", url.Values{"token": {"x"}}, basicAuth(ClientID, "nope"), http.StatusUnauthorized, "invalid_client"},
		{"no client", url.Values{"token": {"x"}}, nil, http.StatusUnauthorized, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, Config{})
			r := post(t, srv, EndpointRevoke, tc.form, tc.auth)
			if r.status != tc.status || (tc.code != "" && r.errorCode() != tc.code) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			want := int64(0)
			if tc.status == http.StatusOK {
				want = 1
			}
			if st := srv.Stats(); st.Revocations != want {
				t.Errorf("Revocations %d, want %d", st.Revocations, want)
			}
		})
	}

	t.Run("another client's token is left alone", func(t *testing.T) {
		srv := newServer(t, Config{})
		tok := srv.Mint() // the confidential client's
		for _, v := range []string{tok.RefreshToken, tok.AccessToken} {
			r := post(t, srv, EndpointRevoke, url.Values{"token": {v}}, public)
			if r.status != http.StatusOK {
				t.Fatalf("got %d %s, want 200 (RFC 7009 hides ownership)", r.status, r.body)
			}
		}
		if !srv.RefreshTokenActive(tok.RefreshToken) || !srv.AccessTokenActive(tok.AccessToken) {
			t.Fatal("a client revoked another client's tokens")
		}
	})

	t.Run("GET", func(t *testing.T) {
		srv := newServer(t, Config{})
		if r := get(t, srv.Client(), srv.RevocationURL(), ""); r.status != http.StatusMethodNotAllowed {
			t.Fatalf("got %d", r.status)
		}
	})
}

// startDeviceApproved runs a device flow for the public client to its token.
func startDeviceApproved(t *testing.T, srv *Server) *oauth2.Token {
	t.Helper()
	dc, uc := startDevice(t, srv, public)
	if err := srv.ApproveDevice(uc); err != nil {
		t.Fatal(err)
	}
	r := pollDevice(t, srv, dc, public)
	wantPoll(t, r, "")
	m := r.json(t)
	return &oauth2.Token{AccessToken: m["access_token"].(string), RefreshToken: m["refresh_token"].(string)}
}

func TestResource(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, Config{Now: clock.Now, AccessTTL: 10 * time.Minute, Subject: "carol", TLS: true})
	tok := srv.Mint("read")
	admin := srv.Mint("read", "admin")
	revoked := srv.Mint("read")
	srv.RevokeFamilyOf(revoked.RefreshToken)
	c := srv.Client()

	const realm = `Bearer realm="tokenkeep-test"`
	invalid := `error="invalid_token"`
	for _, tc := range []struct {
		name       string
		url        string
		header     string // Authorization
		status     int
		challenge  []string // parts of WWW-Authenticate
		noError    bool     // WWW-Authenticate must carry no error
		sub, scope string
	}{
		{name: "valid", url: srv.ResourceURL(), header: "Bearer " + tok.AccessToken, status: 200, sub: "carol", scope: "read"},
		{name: "userinfo", url: srv.UserinfoURL(), header: "Bearer " + tok.AccessToken, status: 200, sub: "carol"},
		// RFC 7235 section 2.1: the scheme is case-insensitive.
		{name: "lower-case scheme", url: srv.ResourceURL(), header: "bearer " + tok.AccessToken, status: 200, sub: "carol", scope: "read"},
		{name: "upper-case scheme, two spaces", url: srv.ResourceURL(), header: "BEARER  " + tok.AccessToken, status: 200, sub: "carol", scope: "read"},
		{name: "scheme as a prefix", url: srv.ResourceURL(), header: "Bearerx " + tok.AccessToken, status: 401, challenge: []string{realm}, noError: true},
		{name: "admin with scope", url: srv.ResourceURL() + "/admin", header: "Bearer " + admin.AccessToken, status: 200, sub: "carol", scope: "read admin"},
		// RFC 6750 section 3.1: no credentials, no error code.
		{name: "no token", url: srv.ResourceURL(), status: 401, challenge: []string{realm}, noError: true},
		{name: "no token userinfo", url: srv.UserinfoURL(), status: 401, challenge: []string{realm}, noError: true},
		{name: "empty bearer", url: srv.ResourceURL(), header: "Bearer ", status: 401, challenge: []string{realm}, noError: true},
		{name: "basic instead of bearer", url: srv.ResourceURL(), header: "Basic dXNlcjpwYXNz", status: 401, challenge: []string{realm}, noError: true},
		{name: "unknown token", url: srv.ResourceURL(), header: "Bearer tkat_forged", status: 401, challenge: []string{realm, invalid}},
		{name: "refresh token as bearer", url: srv.ResourceURL(), header: "Bearer " + tok.RefreshToken, status: 401, challenge: []string{realm, invalid}},
		{name: "revoked session", url: srv.ResourceURL(), header: "Bearer " + revoked.AccessToken, status: 401, challenge: []string{realm, invalid}},
		{name: "revoked session userinfo", url: srv.UserinfoURL(), header: "Bearer " + revoked.AccessToken, status: 401, challenge: []string{realm, invalid}},
		{name: "admin without scope", url: srv.ResourceURL() + "/admin", header: "Bearer " + tok.AccessToken, status: 403,
			challenge: []string{realm, `error="insufficient_scope"`, `scope="admin"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tc.url, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			r := reply{status: resp.StatusCode, header: resp.Header}
			r.body = readAll(t, resp)
			if r.status != tc.status {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tc.status)
			}
			wa := r.header.Get("WWW-Authenticate")
			for _, part := range tc.challenge {
				if !strings.Contains(wa, part) {
					t.Errorf("WWW-Authenticate %q lacks %q", wa, part)
				}
			}
			if tc.noError && strings.Contains(wa, "error=") {
				t.Errorf("WWW-Authenticate %q has an error code", wa)
			}
			if tc.status != 200 {
				return
			}
			if wa != "" {
				t.Errorf("success with WWW-Authenticate %q", wa)
			}
			m := r.json(t)
			if m["sub"] != tc.sub {
				t.Errorf("sub %v, want %q", m["sub"], tc.sub)
			}
			if strings.HasSuffix(tc.url, EndpointUserinfo) {
				if m["email"] != tc.sub+"@example.com" {
					t.Errorf("email %v", m["email"])
				}
			} else if m["scope"] != tc.scope {
				t.Errorf("scope %v, want %q", m["scope"], tc.scope)
			}
		})
	}

	t.Run("expiry on the server clock", func(t *testing.T) {
		fresh := srv.Mint("read")
		clock.Advance(10*time.Minute - time.Second)
		if r := get(t, c, srv.ResourceURL(), fresh.AccessToken); r.status != 200 {
			t.Fatalf("before expiry: %d", r.status)
		}
		clock.Advance(time.Second)
		if srv.AccessTokenActive(fresh.AccessToken) {
			t.Fatal("expired token reported active")
		}
		r := get(t, c, srv.ResourceURL(), fresh.AccessToken)
		if r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), invalid) {
			t.Fatalf("after expiry: %d %q", r.status, r.header.Get("WWW-Authenticate"))
		}
		// The refresh token outlives it.
		if _, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), fresh.RefreshToken); err != nil {
			t.Fatal(err)
		}
	})
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return b
}

func TestResourceEcho(t *testing.T) {
	srv := newServer(t, Config{})
	tok := srv.Mint("read")
	body := `{"hello":"world"}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.ResourceURL(), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, body: readAll(t, resp)}
	sum := sha256.Sum256([]byte(body))
	m := r.json(t)
	if r.status != 200 || m["method"] != http.MethodPut || m["body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("got %d %v", r.status, m)
	}
}

func TestExpireAccessTokens(t *testing.T) {
	srv := newServer(t, Config{})
	ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
	tok, err := srv.Login(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	minted := srv.Mint()
	c := cfg.Client(ctx, tok) // x/oauth2 still believes tok fresh
	for _, u := range []string{srv.ResourceURL(), srv.UserinfoURL()} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s before expiry: %s", u, resp.Status)
		}
	}
	srv.ExpireAccessTokens()
	for _, at := range []string{tok.AccessToken, minted.AccessToken} {
		if srv.AccessTokenActive(at) {
			t.Fatal("access token active after ExpireAccessTokens")
		}
	}
	for _, u := range []string{srv.ResourceURL(), srv.UserinfoURL()} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		wa := resp.Header.Get("WWW-Authenticate")
		if resp.StatusCode != 401 || !strings.HasPrefix(wa, "Bearer ") || !strings.Contains(wa, `error="invalid_token"`) {
			t.Fatalf("%s after expiry: %s, WWW-Authenticate %q", u, resp.Status, wa)
		}
	}
	// Refresh tokens are untouched, and tokens issued later are fresh.
	if !srv.RefreshTokenActive(tok.RefreshToken) {
		t.Fatal("ExpireAccessTokens ended the session")
	}
	tok2, err := refresh(ctx, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if r := get(t, srv.Client(), srv.ResourceURL(), tok2.AccessToken); r.status != 200 {
		t.Fatalf("new token: %d", r.status)
	}
	st := srv.Stats()
	if st.ResourceRequests != 5 || st.ResourceUnauthorized != 2 {
		t.Errorf("stats %+v, want 5 resource requests of which 2 unauthorized", st)
	}
}
