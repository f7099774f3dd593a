package authserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

type authCode struct {
	client      string
	redirectURI string
	challenge   string // S256 challenge; empty when the client sent none
	scopes      []string
	expiry      time.Time
}

// authorize approves every valid request as the configured subject and
// redirects back with a code, as a browser session would.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	client, redirect := q.Get("client_id"), q.Get("redirect_uri")
	if client != ClientID && client != PublicClientID {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	if !loopbackRedirect(redirect) {
		http.Error(w, "redirect_uri must be a loopback URL", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		if st := q.Get("state"); st != "" {
			params.Set("state", st)
		}
		// Keep any query the redirect URI has (RFC 6749 section 3.1.2).
		u, _ := url.Parse(redirect) // parsed by loopbackRedirect
		merged := u.Query()
		for k, v := range params {
			merged[k] = v
		}
		u.RawQuery = merged.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case q.Get("response_type") != "code":
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	case challenge == "" && client == PublicClientID:
		back(url.Values{"error": {"invalid_request"}, "error_description": {"PKCE required"}})
		return
	case challenge != "" && method != "S256":
		back(url.Values{"error": {"invalid_request"}, "error_description": {"only S256 is supported"}})
		return
	}
	code := randomValue("tkcode_")
	s.mu.Lock()
	s.codes[code] = &authCode{
		client: client, redirectURI: redirect, challenge: challenge,
		scopes: strings.Fields(q.Get("scope")), expiry: s.now().Add(time.Minute),
	}
	s.mu.Unlock()
	back(url.Values{"code": {code}})
}

// loopbackRedirect accepts http(s) URLs on loopback hosts, any port
// (RFC 8252 section 7.3).
func loopbackRedirect(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) codeGrant(client string, form url.Values) (map[string]any, *tokenError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code, ok := s.codes[form.Get("code")]
	delete(s.codes, form.Get("code")) // single use, whatever happens
	switch {
	case !ok || !s.now().Before(code.expiry):
		return nil, invalidGrant("unknown, used or expired code")
	case code.client != client:
		return nil, invalidGrant("code issued to another client")
	case code.redirectURI != form.Get("redirect_uri"):
		return nil, invalidGrant("redirect_uri does not match")
	case code.challenge != "" && s256(form.Get("code_verifier")) != code.challenge:
		return nil, invalidGrant("PKCE verification failed")
	case code.challenge == "" && form.Has("code_verifier"):
		return nil, invalidGrant("code_verifier without code_challenge") // PKCE downgrade (RFC 9700 section 2.1.1)
	}
	fam := s.newFamilyLocked(client, s.cfg.Subject, code.scopes)
	return s.issueLocked(fam, code.scopes, true), nil
}

// Login plays a user's browser through the authorization code flow with
// PKCE: it opens the authorization URL, takes the code from the redirect
// (checking state), and exchanges it. client must trust the server; nil
// means Client().
func (s *Server) Login(ctx context.Context, cfg *oauth2.Config, client *http.Client) (*oauth2.Token, error) {
	if client == nil {
		client = s.Client()
	}
	verifier := oauth2.GenerateVerifier()
	state := randomValue("state_")
	authURL := cfg.AuthCodeURL(state, oauth2.AccessTypeOffline, oauth2.S256ChallengeOption(verifier))
	code, err := FollowAuthorize(ctx, client, authURL, state)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	return cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
}

// FollowAuthorize opens authURL as a browser would, without following the
// redirect back, and returns the code it carries after checking state.
func FollowAuthorize(ctx context.Context, client *http.Client, authURL, state string) (string, error) {
	nc := *client
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := nc.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("authserver: authorize answered %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		return "", fmt.Errorf("authserver: authorize refused: %s", e)
	}
	if q.Get("state") != state {
		return "", errors.New("authserver: state mismatch")
	}
	return q.Get("code"), nil
}
