package certprovider_test

import (
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/certprovider"
)

// TestProviderIsStrict checks the provider and the harness's counters
// without tokenkeep: a refresh rotates the refresh token, and the spent one
// presented again is refused, counted as a reuse detection, and ends the
// grant, the rotated refresh token included.
func TestProviderIsStrict(t *testing.T) {
	t.Parallel()
	p := certprovider.Start(t)
	ctx := testContext(t)
	cfg := p.Config(certprovider.BasicClientID)
	cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	login, err := p.Login(ctx, cfg)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, p.Output())
	}
	if want := int64(certprovider.AccessTTL / time.Second); login.ExpiresIn != want {
		t.Errorf("expires_in: %d, want %d", login.ExpiresIn, want)
	}
	grant, err := p.GrantOf(ctx, login.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(rt string) (*oauth2.Token, error) {
		return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	}
	next, err := refresh(login.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == "" || next.RefreshToken == login.RefreshToken {
		t.Fatal("the refresh did not rotate the refresh token")
	}
	if _, err := refresh(login.RefreshToken); !isInvalidGrant(err) {
		t.Fatalf("the spent refresh token again: %v, want invalid_grant", err)
	}
	if _, err := refresh(next.RefreshToken); !isInvalidGrant(err) {
		t.Fatalf("the rotated refresh token after reuse: %v, want invalid_grant", err)
	}
	st, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.GrantByID(ctx, grant.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.RefreshGrants != 1 || st.ReuseDetections != 1 || st.GrantsRevoked != 1 {
		t.Errorf("refresh grants %d, reuse detections %d, grants revoked %d; want 1, 1, 1", st.RefreshGrants, st.ReuseDetections, st.GrantsRevoked)
	}
	if g.Live || g.RevokedBy != "reuse" || g.Refreshes != 1 || g.ReuseDetections != 1 {
		t.Errorf("grant: %+v; want it revoked by reuse after 1 refresh", g)
	}
}
