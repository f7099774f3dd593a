package oauthwire

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestSalvage: a 2xx answer that carries a refresh token keeps it however
// unusable the rest is, and says what was wrong.
func TestSalvage(t *testing.T) {
	const js = "application/json"
	tests := []struct {
		name, ct, body string
		wantToken      bool   // a token comes back, with the refresh token tkrt_new
		wantErr        bool   // an error matching ErrMalformed comes back
		wantAccess     string // the access token kept
		wantType       string
		wantLife       time.Duration
		wantProblem    string // in the error message
	}{
		{name: "usable", ct: js, body: `{"access_token":"tkat_a","token_type":"Bearer","expires_in":3600,"refresh_token":"tkrt_new"}`,
			wantToken: true, wantAccess: "tkat_a", wantType: "Bearer", wantLife: time.Hour},
		{name: "expires_in -60", ct: js, body: `{"access_token":"tkat_a","token_type":"Bearer","expires_in":-60,"refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantType: "Bearer", wantProblem: "expires_in is negative"},
		{name: "expires_in 3600s", ct: js, body: `{"access_token":"tkat_a","expires_in":"3600s","refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "expires_in is not a number"},
		{name: "expires_in 1h", ct: js, body: `{"access_token":"tkat_a","expires_in":"1h","refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "expires_in is not a number"},
		{name: "expires_in object", ct: js, body: `{"access_token":"tkat_a","expires_in":{"s":1},"refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "expires_in is not a number"},
		{name: "expires_in infinite", ct: js, body: `{"access_token":"tkat_a","expires_in":"-Inf","refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "expires_in is not a number"},
		{name: "numeric token_type", ct: js, body: `{"access_token":"tkat_a","token_type":1,"expires_in":3600,"refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "token_type is not a string"},
		{name: "no access_token", ct: js, body: `{"token_type":"Bearer","expires_in":3600,"refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantType: "Bearer", wantProblem: "no access_token"},
		{name: "empty access_token", ct: js, body: `{"access_token":"","refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantProblem: "no access_token"},
		{name: "access_token not a string", ct: js, body: `{"access_token":["tkat_a"],"refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantProblem: "access_token is not a string"},
		{name: "everything wrong", ct: js, body: `{"token_type":false,"expires_in":"1h","refresh_token":"tkrt_new"}`,
			wantToken: true, wantErr: true, wantProblem: "no access_token; token_type is not a string; expires_in is not a number"},
		{name: "form body", ct: "application/x-www-form-urlencoded", body: `refresh_token=tkrt_new&expires_in=1h&access_token=tkat_a`,
			wantToken: true, wantErr: true, wantAccess: "tkat_a", wantProblem: "expires_in is not a number"},
		{name: "no refresh_token", ct: js, body: `{"access_token":"tkat_a","expires_in":-60}`,
			wantErr: true, wantProblem: "expires_in is negative"},
		{name: "refresh_token null", ct: js, body: `{"expires_in":3600,"refresh_token":null}`,
			wantErr: true, wantProblem: "no access_token"},
		{name: "refresh_token empty", ct: js, body: `{"expires_in":3600,"refresh_token":""}`,
			wantErr: true, wantProblem: "no access_token"},
		{name: "refresh_token not a string", ct: js, body: `{"access_token":"tkat_a","refresh_token":5}`,
			wantErr: true, wantProblem: "refresh_token is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := answer(200, tt.ct, tt.body, nil)
			defer srv.Close()
			// Auto-detection too must hand the salvaged token on.
			c := &Client{ClientID: "c", ClientSecret: "s", Now: func() time.Time { return now }}
			tok, err := c.Token(context.Background(), srv.URL, url.Values{"grant_type": {"refresh_token"}})
			if tt.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("got error %v, want ErrMalformed: %v", err, tt.wantErr)
			}
			if err != nil {
				if msg := err.Error(); !strings.Contains(msg, tt.wantProblem) {
					t.Errorf("error %q does not say %q", msg, tt.wantProblem)
				}
				if msg := err.Error(); strings.Contains(msg, "tkrt_") || strings.Contains(msg, "tkat_") {
					t.Errorf("error quotes a token: %q", msg)
				}
			}
			if !tt.wantToken {
				if tok != nil {
					t.Fatalf("got a token, want none")
				}
				return
			}
			if tok == nil {
				t.Fatal("got no token, want the refresh token kept")
			}
			if tok.RefreshToken != "tkrt_new" || tok.AccessToken != tt.wantAccess || tok.TokenType != tt.wantType {
				t.Errorf("got refresh %q access %q type %q, want tkrt_new %q %q", tok.RefreshToken, tok.AccessToken, tok.TokenType, tt.wantAccess, tt.wantType)
			}
			var life time.Duration
			if !tok.Expiry.IsZero() {
				life = tok.Expiry.Sub(now)
			}
			if life != tt.wantLife || (tt.wantErr && tok.ExpiresIn != 0) {
				t.Errorf("lifetime %v (expires_in %d), want %v", life, tok.ExpiresIn, tt.wantLife)
			}
		})
	}
}

// A 200 carrying an OAuth error is a refusal, whatever else it holds.
func TestSalvageNotFromErrors(t *testing.T) {
	srv := answer(200, "application/json", `{"error":"invalid_grant","refresh_token":"tkrt_new"}`, nil)
	defer srv.Close()
	c := &Client{ClientID: "c", ClientSecret: "s", AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := c.Token(context.Background(), srv.URL, nil)
	var re *oauth2.RetrieveError
	if tok != nil || !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("got %v, %v; want invalid_grant and no token", tok, err)
	}
}
