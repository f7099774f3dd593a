package authserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// family is every token descended from one login.
type family struct {
	id       int
	subject  string
	clientID string
	scopes   []string
	revoked  bool
}

type refreshToken struct {
	fam     *family
	retired bool // rotated away; presenting it again is reuse
	expiry  time.Time
	spent   *spending // with retired: the request that rotated it away
}

// spending is a request to the token endpoint, as far as a refresh it
// processed may concern a test: who sent it and what became of its answer.
// Guarded by the server's mu once the request is processed.
type spending struct {
	at      time.Time // when it was processed
	by      string    // its User-Agent
	done    time.Time // when its answer was over (sent, cut or abandoned); zero until then
	spoiled bool      // its answer was delayed or cut by an injected fault, or the client was gone by its end
}

// spendingKey is the context key of a request's *spending.
type spendingKey struct{}

// Spend describes the processed request that retired a refresh token, so
// that a test can tell why its answer never reached whoever holds the
// token.
type Spend struct {
	At   time.Time // when the request was processed
	By   string    // its User-Agent
	Done time.Time // when its answer was over; zero if it is not yet
	Lost bool      // its answer was delayed or cut by an injected fault, or its client was gone by the end
}

// Reuse is one reuse detection: a retired refresh token presented again.
type Reuse struct {
	At    time.Time // when the retired token was presented again
	Spent Spend     // the request that retired it
}

// Retirement returns the request that retired refresh token rt; ok is
// false when rt is not a retired refresh token of this server.
func (s *Server) Retirement(rt string) (spent Spend, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, found := s.refresh[rt]
	if !found || !t.retired || t.spent == nil {
		return Spend{}, false
	}
	return t.spent.public(), true
}

// public returns what a test may know of sp. The server's mu is held.
func (sp *spending) public() Spend {
	return Spend{At: sp.at, By: sp.by, Done: sp.done, Lost: sp.spoiled}
}

// Reuses returns every reuse detection so far, oldest first.
func (s *Server) Reuses() []Reuse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reuses)
}

type accessToken struct {
	fam     *family
	scopes  []string
	expiry  time.Time
	revoked bool
}

// tokenError is an RFC 6749 section 5.2 error answer.
type tokenError struct {
	status int
	code   string
	desc   string
}

// postFromClient checks what every endpoint of a client needs: a POST, a
// form body and client authentication. It answers the error itself.
func (s *Server) postFromClient(w http.ResponseWriter, r *http.Request) (client string, ok bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return "", false
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, &tokenError{http.StatusBadRequest, "invalid_request", "bad form body"})
		return "", false
	}
	client, terr := s.authenticate(r)
	if terr != nil {
		writeError(w, terr)
		return "", false
	}
	return client, true
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	client, ok := s.postFromClient(w, r)
	if !ok {
		return
	}
	var body map[string]any
	var terr *tokenError
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "refresh_token":
		s.stats.refreshGrants.Add(1)
		body, terr = s.refreshGrant(client, r)
	case "authorization_code":
		s.stats.codeGrants.Add(1)
		body, terr = s.codeGrant(client, r.PostForm)
	case "client_credentials":
		s.stats.clientCredentialsGrants.Add(1)
		body, terr = s.clientCredentialsGrant(client, r.PostForm)
	case deviceGrantType:
		s.stats.deviceGrants.Add(1)
		body, terr = s.deviceGrant(client, r.PostForm)
	case "":
		terr = &tokenError{http.StatusBadRequest, "invalid_request", "grant_type missing"}
	default:
		terr = &tokenError{http.StatusBadRequest, "unsupported_grant_type", gt}
	}
	if terr != nil {
		writeError(w, terr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}

// authenticate identifies the client by HTTP Basic (RFC 6749 section 2.3.1,
// form-encoded parts) or by client_id and client_secret in the body.
func (s *Server) authenticate(r *http.Request) (string, *tokenError) {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if id == PublicClientID && s.cfg.RefuseBasicForPublic {
			return "", &tokenError{http.StatusBadRequest, "invalid_request", "this client has no secret: send client_id in the body"}
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	switch {
	case id == PublicClientID && secret == "":
		return id, nil
	case id == ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(ClientSecret)) == 1:
		return id, nil
	}
	return "", &tokenError{http.StatusUnauthorized, "invalid_client", "client authentication failed"}
}

func writeError(w http.ResponseWriter, e *tokenError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if e.code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="tokenkeep-test"`)
	}
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]string{"error": e.code, "error_description": e.desc})
}

func invalidGrant(desc string) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_grant", desc}
}

func (s *Server) refreshGrant(client string, r *http.Request) (map[string]any, *tokenError) {
	form := r.PostForm
	value := form.Get("refresh_token")
	if value == "" {
		return nil, &tokenError{http.StatusBadRequest, "invalid_request", "refresh_token missing"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[value]
	switch {
	case !ok:
		return nil, invalidGrant("unknown refresh token")
	case rt.fam.clientID != client:
		return nil, invalidGrant("refresh token issued to another client")
	case rt.fam.revoked:
		return nil, invalidGrant("session revoked")
	case rt.retired:
		if s.cfg.ReuseDetection {
			rt.fam.revoked = true
			s.stats.reuseDetections.Add(1)
			reuse := Reuse{At: s.now()}
			if rt.spent != nil {
				reuse.Spent = rt.spent.public()
			}
			s.reuses = append(s.reuses, reuse)
			return nil, invalidGrant("refresh token reused; session revoked")
		}
		return nil, invalidGrant("refresh token already rotated")
	case !rt.expiry.IsZero() && !s.now().Before(rt.expiry):
		return nil, invalidGrant("refresh token expired")
	}
	scopes := rt.fam.scopes
	if req := form.Get("scope"); req != "" {
		scopes = strings.Fields(req)
		for _, sc := range scopes {
			if !slices.Contains(rt.fam.scopes, sc) {
				return nil, &tokenError{http.StatusBadRequest, "invalid_scope", "scope not granted: " + sc}
			}
		}
	}
	body := s.issueLocked(rt.fam, scopes, s.cfg.Rotate)
	s.stats.refreshesGranted.Add(1)
	if s.cfg.Rotate {
		rt.retired = true
		sp, _ := r.Context().Value(spendingKey{}).(*spending)
		if sp == nil {
			sp = &spending{by: r.UserAgent()}
		}
		sp.at = s.now()
		rt.spent = sp
	} else if !s.cfg.OmitRefreshTokenOnRefresh {
		body["refresh_token"] = value
	}
	return body, nil
}

// issueLocked creates an access token (and a refresh token if withRefresh)
// for fam and returns the answer body. s.mu must be held.
func (s *Server) issueLocked(fam *family, scopes []string, withRefresh bool) map[string]any {
	now := s.now()
	at := randomValue("tkat_")
	s.access[at] = &accessToken{fam: fam, scopes: scopes, expiry: now.Add(s.cfg.AccessTTL)}
	body := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   wholeSeconds(s.cfg.AccessTTL),
		"scope":        strings.Join(scopes, " "),
	}
	if withRefresh {
		rt := randomValue("tkrt_")
		var exp time.Time
		if s.cfg.RefreshTTL > 0 {
			exp = now.Add(s.cfg.RefreshTTL)
		}
		s.refresh[rt] = &refreshToken{fam: fam, expiry: exp}
		body["refresh_token"] = rt
	}
	if slices.Contains(scopes, "openid") {
		body["id_token"] = s.idToken(fam, now)
	}
	return body
}

// newFamilyLocked starts a login. s.mu must be held.
func (s *Server) newFamilyLocked(client, subject string, scopes []string) *family {
	s.families++
	return &family{id: s.families, subject: subject, clientID: client, scopes: scopes}
}

// idToken returns an unsigned JWT-shaped OpenID Connect ID token.
func (s *Server) idToken(fam *family, now time.Time) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	header := enc(map[string]string{"alg": "none", "typ": "JWT"})
	claims := enc(map[string]any{
		"iss": s.URL(), "sub": fam.subject, "aud": fam.clientID,
		"email": fam.subject + "@example.com",
		"iat":   now.Unix(), "exp": now.Add(s.cfg.AccessTTL).Unix(),
	})
	return header + "." + claims + "."
}

func (s *Server) clientCredentialsGrant(client string, form url.Values) (map[string]any, *tokenError) {
	if client == PublicClientID {
		return nil, &tokenError{http.StatusBadRequest, "unauthorized_client", "public clients cannot use client_credentials"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fam := s.newFamilyLocked(client, client, strings.Fields(form.Get("scope")))
	return s.issueLocked(fam, fam.scopes, false), nil
}

// Mint issues a new login for the configured subject and the confidential
// client without the browser: an access token, a refresh token, and an ID
// token when scopes include "openid".
func (s *Server) Mint(scopes ...string) *oauth2.Token {
	return s.MintFor(ClientID, scopes...)
}

// MintFor is Mint for client, ClientID or PublicClientID.
func (s *Server) MintFor(client string, scopes ...string) *oauth2.Token {
	s.mu.Lock()
	fam := s.newFamilyLocked(client, s.cfg.Subject, scopes)
	body := s.issueLocked(fam, scopes, true)
	s.mu.Unlock()
	return tokenFromBody(body, s.now())
}

// tokenFromBody turns an answer body into the token a client would parse.
func tokenFromBody(body map[string]any, now time.Time) *oauth2.Token {
	t := &oauth2.Token{
		AccessToken:  body["access_token"].(string),
		TokenType:    "Bearer",
		RefreshToken: body["refresh_token"].(string),
		ExpiresIn:    body["expires_in"].(int64),
	}
	t.Expiry = now.Add(time.Duration(t.ExpiresIn) * time.Second)
	extra := map[string]any{"scope": body["scope"]}
	if id, ok := body["id_token"]; ok {
		extra["id_token"] = id
	}
	return t.WithExtra(extra)
}

// RefreshTokenActive reports whether rt can be redeemed now.
func (s *Server) RefreshTokenActive(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.refresh[rt]
	return ok && !t.retired && !t.fam.revoked && (t.expiry.IsZero() || s.now().Before(t.expiry))
}

// AccessTokenActive reports whether the resource accepts at now.
func (s *Server) AccessTokenActive(at string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.validAccessLocked(at)
	return ok
}

func (s *Server) validAccessLocked(at string) (*accessToken, bool) {
	t, ok := s.access[at]
	if !ok || t.revoked || t.fam.revoked || !s.now().Before(t.expiry) {
		return nil, false
	}
	return t, true
}

// RevokeFamilyOf ends the session rt belongs to, as an administrator would.
func (s *Server) RevokeFamilyOf(rt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.refresh[rt]; ok {
		t.fam.revoked = true
	}
}

// ExpireAccessTokens makes every access token issued so far expired.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, t := range s.access {
		t.expiry = past
	}
}

// revoke implements RFC 7009. Unknown tokens are not an error.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	client, ok := s.postFromClient(w, r)
	if !ok {
		return
	}
	value := r.PostForm.Get("token")
	if value == "" {
		writeError(w, &tokenError{http.StatusBadRequest, "invalid_request", "token missing"})
		return
	}
	s.stats.revocations.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt, ok := s.refresh[value]; ok && rt.fam.clientID == client {
		rt.fam.revoked = true
	}
	if at, ok := s.access[value]; ok && at.fam.clientID == client {
		at.revoked = true
	}
	w.WriteHeader(http.StatusOK)
}

// s256 is the PKCE S256 transform (RFC 7636 section 4.2).
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// wholeSeconds is d as expires_in states it: in whole seconds, rounded up,
// so that a lifetime under a second is announced as 1 and not as 0, which
// clients read as "no stated lifetime".
func wholeSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
