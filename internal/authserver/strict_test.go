package authserver

import (
	"net/url"
	"testing"

	"golang.org/x/oauth2"
)

// RefuseBasicForPublic answers the public client's HTTP Basic with 400
// invalid_request at every endpoint, and accepts it in the body.
func TestRefuseBasicForPublic(t *testing.T) {
	srv := newServer(t, Config{RefuseBasicForPublic: true, Rotate: true})
	pub := srv.MintFor(PublicClientID)
	for _, tc := range []struct {
		name     string
		endpoint string
		form     url.Values
		auth     clientAuth
		status   int
		code     string
	}{
		{"token basic", EndpointToken, refreshForm(pub.RefreshToken), basicAuth(PublicClientID, ""), 400, "invalid_request"},
		{"revoke basic", EndpointRevoke, url.Values{"token": {pub.RefreshToken}}, basicAuth(PublicClientID, ""), 400, "invalid_request"},
		{"device basic", EndpointDevice, url.Values{}, basicAuth(PublicClientID, ""), 400, "invalid_request"},
		{"confidential basic", EndpointToken, url.Values{"grant_type": {"bogus"}}, confidential, 400, "unsupported_grant_type"},
		{"device body", EndpointDevice, url.Values{}, public, 200, ""},
		{"token body", EndpointToken, refreshForm(pub.RefreshToken), public, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv, tc.endpoint, tc.form, tc.auth)
			if r.status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("got %d %s, want %d %q", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	// Only the last refresh was processed; the refused revocation was
	// counted but not processed.
	st := srv.Stats()
	if st.RefreshGrants != 1 || st.RefreshesGranted != 1 || st.RevokeRequests != 1 || st.Revocations != 0 {
		t.Errorf("stats %+v", st)
	}

	// x/oauth2's auto-detection gets there on its second try.
	tok := srv.MintFor(PublicClientID)
	cfg := srv.PublicConfig()
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleAutoDetect
	before := srv.Stats().TokenRequests
	if _, err := refresh(clientCtx(t, srv), cfg, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if n := srv.Stats().TokenRequests - before; n != 2 {
		t.Errorf("x/oauth2 made %d requests, want 2 (Basic refused, then the body)", n)
	}
}
