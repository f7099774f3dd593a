package oauthwire

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// TestProviderResponsesSurviveStorage parses real response shapes from
// Google, Okta, Auth0 and Azure AD (string expires_in), stores them through
// the codec, and checks that every field the provider sent comes back.
func TestProviderResponsesSurviveStorage(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "providers", "*.json"))
	if len(files) < 4 {
		t.Fatalf("found %d provider fixtures, want at least 4", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var sent map[string]any
			if err := json.Unmarshal(body, &sent); err != nil {
				t.Fatal(err)
			}
			c := &Client{Now: func() time.Time { return now }}
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}}
			tok, err := c.parse(resp, body)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := tokencodec.Encode(tok)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tokencodec.Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken != sent["access_token"] || got.RefreshToken != sent["refresh_token"] || got.TokenType != sent["token_type"] {
				t.Error("a standard field was lost")
			}
			if got.ExpiresIn < 3599 || !got.Expiry.Equal(now.Add(time.Duration(got.ExpiresIn)*time.Second)) {
				t.Errorf("expiry: got expires_in %d, expiry %v", got.ExpiresIn, got.Expiry)
			}
			for k, v := range sent {
				switch k {
				case "access_token", "refresh_token", "token_type", "expires_in":
					continue
				}
				if g := got.Extra(k); !reflect.DeepEqual(g, v) {
					t.Errorf("extra %q: got %v, want %v", k, g, v)
				}
			}
		})
	}
}
