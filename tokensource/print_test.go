package tokensource_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/secrettest"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// echoingProvider refuses every refresh and revocation with an answer that
// quotes the token it was given, as careless providers do.
type echoingProvider struct{}

func (echoingProvider) Refresh(_ context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	body := `{"error":"invalid_grant","error_description":"refresh token ` + t.RefreshToken + ` (access ` + t.AccessToken + `) is revoked"}`
	return nil, &oauth2.RetrieveError{Body: []byte(body), ErrorCode: "invalid_grant",
		ErrorDescription: "refresh token " + t.RefreshToken + " is revoked"}
}

func (echoingProvider) Revoke(_ context.Context, t *oauth2.Token) error {
	return errors.New("revocation refused for " + t.RefreshToken + " and " + t.AccessToken)
}

// TestNoSecretPrints renders every value of the package that holds or can
// reach a token or a client secret through fmt and slog: the error of a
// refresh whose provider quoted the token, the event reporting it, the
// Source, and a ConfigRefresher.
func TestNoSecretPrints(t *testing.T) {
	tok := &oauth2.Token{AccessToken: "tkat_printing-test-access", RefreshToken: "tkrt_printing-test-refresh",
		TokenType: "Bearer", Expiry: time.Now().Add(-time.Minute)}
	clientSecret := "client-secret-printing-test"
	secrets := [][]byte{[]byte(tok.AccessToken), []byte(tok.RefreshToken), []byte(clientSecret)}

	events := make(chan tokensource.Event, 1)
	src, err := tokensource.New(echoingProvider{}, storage.NewMemory(), "alice",
		tokensource.WithHook(func(e tokensource.Event) { events <- e }))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Put(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	_, refreshErr := src.Token()
	var re *tokensource.RefreshError
	if !errors.As(refreshErr, &re) {
		t.Fatalf("got %v, want a *RefreshError", refreshErr)
	}
	event := <-events
	cr, err := tokensource.NewConfigRefresher(&oauth2.Config{ClientID: "app", ClientSecret: clientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: "https://provider.example/token"}}, "https://provider.example/revoke", nil)
	if err != nil {
		t.Fatal(err)
	}

	for name, v := range map[string]any{
		"RefreshError":          refreshErr,
		"RefreshError (value)":  *re,
		"Event":                 event,
		"Source":                src,
		"ConfigRefresher":       cr,
		"ConfigRefresher value": struct{ R tokensource.Refresher }{cr},
	} {
		secrettest.NoSecret(t, name, v, secrets...)
	}
}

// TestRevokeErrorPrints is TestNoSecretPrints for the error Revoke returns
// when the provider refuses.
func TestRevokeErrorPrints(t *testing.T) {
	tok := &oauth2.Token{AccessToken: "tkat_printing-test-access", RefreshToken: "tkrt_printing-test-refresh", TokenType: "Bearer"}
	src, err := tokensource.New(echoingProvider{}, storage.NewMemory(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Put(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	err = src.Revoke(context.Background())
	if err == nil {
		t.Fatal("Revoke succeeded; want the provider's refusal")
	}
	secrettest.NoSecret(t, "revoke error", err, []byte(tok.AccessToken), []byte(tok.RefreshToken))
}
