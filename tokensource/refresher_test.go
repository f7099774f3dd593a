package tokensource_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// A public client configured as the CLI quick start does — no secret, the
// auth style left unset — refreshes and revokes at a provider that refuses
// HTTP Basic for it.
func TestConfigRefresherPublicClient(t *testing.T) {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true, RefuseBasicForPublic: true})
	defer srv.Close()
	cfg := &oauth2.Config{ClientID: authserver.PublicClientID, Endpoint: oauth2.Endpoint{TokenURL: srv.Endpoint().TokenURL}}
	r, err := tokensource.NewConfigRefresher(cfg, srv.RevocationURL(), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.MintFor(authserver.PublicClientID)
	for i := range 3 {
		if tok, err = r.Refresh(t.Context(), tok); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if err := r.Revoke(t.Context(), tok); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if srv.RefreshTokenActive(tok.RefreshToken) {
		t.Error("the session is alive at the provider after Revoke")
	}
	st := srv.Stats()
	if st.TokenRequests != 3 || st.RefreshesGranted != 3 || st.RevokeRequests != 1 || st.Revocations != 1 {
		t.Errorf("stats %+v, want 3 refreshes and 1 revocation, each at the first request", st)
	}
}

// A 2xx answer with a new refresh token and an unusable rest gives the
// refresh token back with the error.
func TestConfigRefresherSalvage(t *testing.T) {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	defer srv.Close()
	r, err := tokensource.NewConfigRefresher(srv.OAuth2Config(), "", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.Mint()
	srv.Inject(authserver.EndpointToken, authserver.Fault{Mutate: func(m map[string]any) {
		delete(m, "access_token")
		m["expires_in"] = "1h"
	}})
	got, err := r.Refresh(t.Context(), tok)
	if err == nil || got == nil {
		t.Fatalf("got %v, %v; want a token and an error", got, err)
	}
	if !strings.HasPrefix(got.RefreshToken, "tkrt_") || !srv.RefreshTokenActive(got.RefreshToken) {
		t.Fatal("the rotated refresh token was not handed back")
	}
	if got.AccessToken != "" || !got.Expiry.IsZero() {
		t.Errorf("salvaged token: access token %q, expiry %v; want neither", got.AccessToken, got.Expiry)
	}
	if msg := err.Error(); strings.Contains(msg, "tkrt_") || !strings.Contains(msg, "access_token") {
		t.Errorf("error %q", msg)
	}
	// The salvaged refresh token works.
	if _, err := r.Refresh(t.Context(), got); err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.ReuseDetections != 0 || st.RefreshesGranted != 2 {
		t.Errorf("stats %+v", st)
	}
}

// AuthMethods from discovery picks the style before the first request.
func TestConfigRefresherAuthMethods(t *testing.T) {
	var mu sync.Mutex
	var basic []bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, ok := r.BasicAuth()
		mu.Lock()
		basic = append(basic, ok)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if ok {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request"}`))
			return
		}
		w.Write([]byte(`{"access_token":"tkat_1","expires_in":3600,"refresh_token":"tkrt_2"}`))
	}))
	defer srv.Close()
	cfg := &oauth2.Config{ClientID: "c", ClientSecret: "s", Endpoint: oauth2.Endpoint{TokenURL: srv.URL}}
	r := &tokensource.ConfigRefresher{Config: cfg, RevocationURL: srv.URL, HTTPClient: srv.Client(), AuthMethods: []string{"private_key_jwt", "client_secret_post"}}
	if _, err := r.Refresh(t.Context(), &oauth2.Token{RefreshToken: "tkrt_1"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Revoke(t.Context(), &oauth2.Token{RefreshToken: "tkrt_2"}); err != nil {
		t.Fatal(err)
	}
	if len(basic) != 2 || basic[0] || basic[1] {
		t.Errorf("Basic per request: %v, want two requests without", basic)
	}
}

// Revoke refuses nothing to revoke instead of panicking.
func TestConfigRefresherRevokeNothing(t *testing.T) {
	r, err := tokensource.NewConfigRefresher(&oauth2.Config{Endpoint: oauth2.Endpoint{TokenURL: "https://idp.example/token"}}, "https://idp.example/revoke", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []*oauth2.Token{nil, {}} {
		if err := r.Revoke(context.Background(), tok); err == nil || !strings.HasPrefix(err.Error(), "tokensource: ") {
			t.Errorf("Revoke(%v): got %v, want an error", tok, err)
		}
	}
}
