package authserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
)

const realm = `Bearer realm="tokenkeep-test"`

// bearer authenticates a resource request. It writes the RFC 6750 answer
// and returns false when the request may not proceed.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request, scope string) (*accessToken, bool) {
	// The scheme is case-insensitive (RFC 7235 section 2.1).
	scheme, value, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	value = strings.TrimLeft(value, " ")
	if !strings.EqualFold(scheme, "Bearer") || value == "" {
		s.stats.resourceUnauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", realm)
		http.Error(w, "no bearer token", http.StatusUnauthorized)
		return nil, false
	}
	s.mu.Lock()
	at, valid := s.validAccessLocked(value)
	s.mu.Unlock()
	if !valid {
		s.stats.resourceUnauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", realm+`, error="invalid_token", error_description="the access token is expired, revoked or unknown"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return nil, false
	}
	if scope != "" && !slices.Contains(at.scopes, scope) {
		w.Header().Set("WWW-Authenticate", realm+`, error="insufficient_scope", scope="`+scope+`"`)
		http.Error(w, "insufficient scope", http.StatusForbidden)
		return nil, false
	}
	return at, true
}

// resource answers who called, with what, and a digest of the body, so that
// tests can check replays.
func (s *Server) resource(w http.ResponseWriter, r *http.Request) {
	scope := ""
	if strings.HasSuffix(r.URL.Path, "/admin") {
		scope = "admin"
	}
	at, ok := s.bearer(w, r, scope)
	if !ok {
		return
	}
	sum := sha256.New()
	io.Copy(sum, r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"sub":         at.fam.subject,
		"scope":       strings.Join(at.scopes, " "),
		"method":      r.Method,
		"body_sha256": hex.EncodeToString(sum.Sum(nil)),
	})
}

// userinfo answers like an OpenID Connect userinfo endpoint.
func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	at, ok := s.bearer(w, r, "")
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"sub":   at.fam.subject,
		"email": at.fam.subject + "@example.com",
	})
}
