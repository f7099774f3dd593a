package tokencodec

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, every
// failure must match ErrFormat, and whatever it accepts must encode and
// decode again to the same token.
func FuzzDecode(f *testing.F) {
	tok := (&oauth2.Token{AccessToken: "a", TokenType: "Bearer", RefreshToken: "r", Expiry: time.Unix(1e9, 5), ExpiresIn: 60}).
		WithExtra(map[string]any{"id_token": "x.y.z", "scope": "s", "n": 1.5})
	b, err := Encode(tok)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(`{"v":1,"access_token":"a","expiry":"not a time"}`))
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "providers", "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("%v does not match ErrFormat", err)
			}
			return
		}
		again, err := Encode(tok)
		if err != nil {
			t.Fatalf("decoded token does not encode: %v", err)
		}
		tok2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded token does not decode: %v", err)
		}
		if tok2.AccessToken != tok.AccessToken || tok2.RefreshToken != tok.RefreshToken || !tok2.Expiry.Equal(tok.Expiry) {
			t.Fatal("round trip changed the token")
		}
	})
}
