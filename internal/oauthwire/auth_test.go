package oauthwire

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
)

// recorder is a RoundTripper that notes how each request authenticated
// the client.
type recorder struct {
	base http.RoundTripper

	mu    sync.Mutex // guards sent
	sent  []string   // "basic" or "body", per request
	empty int        // Basic headers with an empty secret
}

func (rc *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	style := "body"
	if _, secret, ok := r.BasicAuth(); ok {
		style = "basic"
		if secret == "" {
			rc.mu.Lock()
			rc.empty++
			rc.mu.Unlock()
		}
	}
	rc.mu.Lock()
	rc.sent = append(rc.sent, style)
	rc.mu.Unlock()
	return rc.base.RoundTrip(r)
}

func (rc *recorder) take() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := rc.sent
	rc.sent = nil
	return s
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A public client with the style unset sends its id in the body, never a
// Basic header with an empty secret, for refresh and revocation alike: a
// provider that refuses Basic for it serves it at the first request.
func TestPublicClientAutoDetect(t *testing.T) {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true, RefuseBasicForPublic: true})
	defer srv.Close()
	rec := &recorder{base: srv.Client().Transport}
	c := &Client{ClientID: authserver.PublicClientID, HTTP: &http.Client{Transport: rec}}
	tokenURL := srv.Endpoint().TokenURL
	tok := srv.MintFor(authserver.PublicClientID)
	for i := range 3 {
		next, err := c.Token(t.Context(), tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}})
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		tok = next
	}
	if err := c.Revoke(t.Context(), srv.RevocationURL(), tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if got, want := rec.take(), []string{"body", "body", "body", "body"}; !equal(got, want) {
		t.Errorf("requests authenticated by %v, want %v", got, want)
	}
	if rec.empty != 0 {
		t.Errorf("%d Basic headers with an empty secret", rec.empty)
	}
	if srv.RefreshTokenActive(tok.RefreshToken) {
		t.Error("the session is alive at the provider after Revoke")
	}
	st := srv.Stats()
	if st.TokenRequests != 3 || st.RefreshesGranted != 3 || st.Revocations != 1 || st.RevokeRequests != 1 {
		t.Errorf("stats %+v", st)
	}
}

// strictProvider serves an endpoint that accepts the client in one style
// only, refusing the other as the named kind of provider does.
type strictProvider struct {
	wantBody atomic.Bool // credentials in the body; else HTTP Basic
	refusal  int         // status of a refusal: 400 (invalid_request) or 401 (invalid_client)
}

func (p *strictProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	_, secret, basic := r.BasicAuth()
	inBody := r.PostForm.Get("client_secret")
	w.Header().Set("Content-Type", "application/json")
	ok := secret == "s" && basic && inBody == ""
	if p.wantBody.Load() {
		ok = !basic && inBody == "s" && r.PostForm.Get("client_id") == "c"
	}
	switch {
	case ok:
		io.WriteString(w, okBody)
	case p.refusal == http.StatusUnauthorized:
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
	default:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_request","error_description":"client authentication method not allowed"}`)
	}
}

// A confidential client tries Basic, falls back to the body when the
// provider refuses Basic, and remembers what worked: at the token endpoint
// and, as a first guess, at the revocation endpoint.
func TestConfidentialFallback(t *testing.T) {
	for _, refusal := range []int{http.StatusBadRequest, http.StatusUnauthorized} {
		t.Run(http.StatusText(refusal), func(t *testing.T) {
			p := &strictProvider{refusal: refusal}
			p.wantBody.Store(true)
			srv := httptest.NewServer(p)
			defer srv.Close()
			rec := &recorder{base: srv.Client().Transport}
			c := &Client{ClientID: "c", ClientSecret: "s", HTTP: &http.Client{Transport: rec}}
			for i := range 3 {
				if _, err := c.Token(t.Context(), srv.URL, refreshGrant); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			if got, want := rec.take(), []string{"basic", "body", "body", "body"}; !equal(got, want) {
				t.Errorf("token requests authenticated by %v, want %v", got, want)
			}
			if err := c.Revoke(t.Context(), srv.URL, "tkrt_2", ""); err != nil {
				t.Fatal(err)
			}
			if got, want := rec.take(), []string{"body"}; !equal(got, want) {
				t.Errorf("revocation authenticated by %v, want %v", got, want)
			}

			// The provider changes its mind: the remembered style is
			// refused, the other is tried, and remembered.
			p.wantBody.Store(false)
			for i := range 2 {
				if _, err := c.Token(t.Context(), srv.URL, refreshGrant); err != nil {
					t.Fatalf("after the change, call %d: %v", i, err)
				}
			}
			if got, want := rec.take(), []string{"body", "basic", "basic"}; !equal(got, want) {
				t.Errorf("after the change: %v, want %v", got, want)
			}
		})
	}
}

// Revocation detects the style on its own when the token endpoint has not
// been used.
func TestRevokeFallback(t *testing.T) {
	p := &strictProvider{refusal: http.StatusBadRequest}
	p.wantBody.Store(true)
	srv := httptest.NewServer(p)
	defer srv.Close()
	rec := &recorder{base: srv.Client().Transport}
	c := &Client{ClientID: "c", ClientSecret: "s", HTTP: &http.Client{Transport: rec}}
	for range 2 {
		if err := c.Revoke(t.Context(), srv.URL, "tkrt_1", "refresh_token"); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := rec.take(), []string{"basic", "body", "body"}; !equal(got, want) {
		t.Errorf("revocations authenticated by %v, want %v", got, want)
	}
}

// Answers that say nothing about client authentication are final: no
// second request, and the style is remembered only when the provider
// showed that it accepted the client.
func TestNoFallback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   func(w http.ResponseWriter, r *http.Request)
		remember bool // Basic is remembered: a later call sends Basic once
	}{
		{"invalid_grant", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant"}`)
		}, true},
		{"503", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, false},
		{"429", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "600")
			w.WriteHeader(http.StatusTooManyRequests)
		}, false},
		{"dropped after the request", func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, false},
		{"salvaged", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"refresh_token":"tkrt_2","expires_in":"1h"}`)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(tc.answer))
			defer srv.Close()
			rec := &recorder{base: srv.Client().Transport}
			c := &Client{ClientID: "c", ClientSecret: "s", HTTP: &http.Client{Transport: rec}}
			if _, err := c.Token(t.Context(), srv.URL, refreshGrant); err == nil {
				t.Fatal("got success")
			}
			if got := rec.take(); !equal(got, []string{"basic"}) {
				t.Errorf("requests %v, want one with Basic", got)
			}
			if got := oauth2.AuthStyle(c.tokenStyle.Load()); (got == oauth2.AuthStyleInHeader) != tc.remember {
				t.Errorf("remembered %v, want Basic remembered: %v", got, tc.remember)
			}
		})
	}
}

// A style set explicitly is used as it is, without fallback.
func TestExplicitStyle(t *testing.T) {
	p := &strictProvider{refusal: http.StatusBadRequest}
	p.wantBody.Store(true)
	srv := httptest.NewServer(p)
	defer srv.Close()
	rec := &recorder{base: srv.Client().Transport}
	c := &Client{ClientID: "c", ClientSecret: "s", AuthStyle: oauth2.AuthStyleInHeader, HTTP: &http.Client{Transport: rec}}
	_, err := c.Token(t.Context(), srv.URL, refreshGrant)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_request" {
		t.Fatalf("got %v, want invalid_request", err)
	}
	if err := c.Revoke(t.Context(), srv.URL, "tkrt_1", ""); !errors.As(err, &re) {
		t.Fatalf("revoke: got %v, want invalid_request", err)
	}
	if got := rec.take(); !equal(got, []string{"basic", "basic"}) {
		t.Errorf("requests %v, want Basic twice", got)
	}
}

// When both styles are refused, the last refusal is returned.
func TestBothStylesRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
	}))
	defer srv.Close()
	rec := &recorder{base: srv.Client().Transport}
	c := &Client{ClientID: "c", ClientSecret: "wrong", HTTP: &http.Client{Transport: rec}}
	for range 2 {
		_, err := c.Token(t.Context(), srv.URL, refreshGrant)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
			t.Fatalf("got %v, want invalid_client", err)
		}
	}
	if got, want := rec.take(), []string{"basic", "body", "basic", "body"}; !equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
}

// Detection is safe for concurrent use, and every caller gets through.
func TestAutoDetectConcurrent(t *testing.T) {
	p := &strictProvider{refusal: http.StatusBadRequest}
	p.wantBody.Store(true)
	srv := httptest.NewServer(p)
	defer srv.Close()
	c := &Client{ClientID: "c", ClientSecret: "s", HTTP: srv.Client()}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := c.Token(context.Background(), srv.URL, refreshGrant); err != nil {
				t.Error(err)
			}
			if err := c.Revoke(context.Background(), srv.URL, "tkrt_1", ""); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := oauth2.AuthStyle(c.tokenStyle.Load()); got != oauth2.AuthStyleInParams {
		t.Errorf("remembered %v, want AuthStyleInParams", got)
	}
}

func TestAuthStyleFromMethods(t *testing.T) {
	for _, tc := range []struct {
		methods []string
		secret  bool
		want    oauth2.AuthStyle
	}{
		{nil, true, oauth2.AuthStyleAutoDetect},
		{nil, false, oauth2.AuthStyleAutoDetect},
		{[]string{"client_secret_basic"}, true, oauth2.AuthStyleInHeader},
		{[]string{"client_secret_post"}, true, oauth2.AuthStyleInParams},
		{[]string{"client_secret_post", "client_secret_basic"}, true, oauth2.AuthStyleInHeader},
		{[]string{"private_key_jwt", "client_secret_post"}, true, oauth2.AuthStyleInParams},
		{[]string{"private_key_jwt", "tls_client_auth"}, true, oauth2.AuthStyleAutoDetect},
		{[]string{"none"}, true, oauth2.AuthStyleAutoDetect},
		{[]string{"none", "client_secret_basic"}, false, oauth2.AuthStyleInParams},
		{[]string{"client_secret_basic"}, false, oauth2.AuthStyleAutoDetect},
	} {
		if got := AuthStyleFromMethods(tc.methods, tc.secret); got != tc.want {
			t.Errorf("AuthStyleFromMethods(%q, %v) = %v, want %v", tc.methods, tc.secret, got, tc.want)
		}
	}
}
