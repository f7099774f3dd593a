package transport_test

import (
	"net/http"
	"testing"

	"github.com/tokenkeep/tokenkeep/internal/secrettest"
	"github.com/tokenkeep/tokenkeep/transport"
)

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestNoSecretPrints renders a Transport that has sent a token, and the
// client around it, through fmt and slog: the token must not show. (Base is
// the caller's, and one that kept the headers it saw would show them: this
// one keeps none.)
func TestNoSecretPrints(t *testing.T) {
	var sent int
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("Authorization") != "" {
			sent++
		}
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	})
	tr := &transport.Transport{Source: &fakeSource{}, Base: base}
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sent != 1 {
		t.Fatalf("sent %d requests with a token, want 1", sent)
	}
	tok := []byte("tkat_fake_1")
	secrettest.NoSecret(t, "Transport", tr, tok)
	secrettest.NoSecret(t, "client", &http.Client{Transport: tr}, tok)
}
