package oauthwire

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// FuzzParse feeds arbitrary token endpoint answers to the parser: it must
// never panic, and every failure must be a RetrieveError or ErrMalformed.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","token_type":"Bearer","expires_in":3600,"refresh_token":"r","scope":"s","id_token":"x.y.z"}`,
		`{"access_token":"a","expires_in":"3600"}`,
		`{"error":"invalid_grant","error_description":"d"}`,
		`access_token=a&expires_in=10`,
		`<html></html>`,
		`{"access_token":"a","expires_in":-1e400}`,
		`{"refresh_token":"r","expires_in":"1h","token_type":7}`,
		`{"access_token":"a","refresh_token":"r","expires_in":-60}`,
		`refresh_token=r&expires_in=3600s`,
	} {
		f.Add(200, "application/json", []byte(s))
		f.Add(400, "application/x-www-form-urlencoded", []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		c := &Client{Now: func() time.Time { return now }}
		resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {contentType}}}
		tok, err := c.parse(resp, body)
		var re *oauth2.RetrieveError
		switch {
		case err == nil:
			if tok == nil || tok.AccessToken == "" {
				t.Fatal("success without an access token")
			}
			if tok.ExpiresIn < 0 || (tok.ExpiresIn == 0) != tok.Expiry.IsZero() {
				t.Fatalf("success with expires_in %d, expiry %v", tok.ExpiresIn, tok.Expiry)
			}
		case errors.As(err, &re):
			if tok != nil {
				t.Fatal("a token with a refusal")
			}
		case errors.Is(err, ErrMalformed):
			// Salvage: a token only for its refresh token, never to serve.
			if tok != nil && (tok.RefreshToken == "" || !tok.Expiry.IsZero() || tok.ExpiresIn != 0 || status < 200 || status > 299) {
				t.Fatalf("salvaged %+v from a %d answer", tok, status)
			}
		default:
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

// FuzzRetryAfter: any header value gives a non-negative wait or none.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "-5", "Sun, 22 Nov 2026 09:01:00 GMT", "Sunday, 22-Nov-26 09:01:00 GMT", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := RetryAfter(v, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("RetryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}
