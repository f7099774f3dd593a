package storage

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/secrettest"
)

// TestNoSecretPrints renders every key kind, once it has been used, and
// every store holding a token, through fmt and slog: no key, passphrase,
// derived key or token may show.
func TestNoSecretPrints(t *testing.T) {
	raw := []byte("raw-key-0123456789abcdef-ABCDEF!")
	fromEnv := []byte("env-key-0123456789abcdef-ABCDEF!")
	pass := []byte("printing-test passphrase")
	tok := &oauth2.Token{AccessToken: "tkat_printing-test-access", RefreshToken: "tkrt_printing-test-refresh", TokenType: "Bearer"}
	t.Setenv("TOKENKEEP_PRINT_TEST_KEY", base64.StdEncoding.EncodeToString(fromEnv))

	rawKey := mustRaw(t, raw)
	envKey, err := KeyFromEnv("TOKENKEEP_PRINT_TEST_KEY")
	if err != nil {
		t.Fatal(err)
	}
	passKey, err := PassphraseWithParams(pass, fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	kr := &fakeKeyring{}
	ringKey, err := KeyringKey("svc", "user", &KeyringOptions{Backend: kr})
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]any{}
	secrets := [][]byte{raw, fromEnv, pass, []byte(tok.AccessToken), []byte(tok.RefreshToken)}
	for name, k := range map[string]Key{"RawKey": rawKey, "KeyFromEnv": envKey, "Passphrase": passKey, "KeyringKey": ringKey} {
		f := newFileStore(t, k)
		if err := SaveToken(bg, f, "e", tok); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Load(bg, "e"); err != nil {
			t.Fatal(err)
		}
		values[name] = k
		values[name+" File"] = f
		if name == "Passphrase" {
			secrets = append(secrets, derivedKey(t, f.Path("e"), pass))
		}
	}
	for _, v := range kr.items {
		k, err := decodeKeyText(v)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, k)
	}
	if len(secrets) != 7 {
		t.Fatalf("collected %d secrets, want 7", len(secrets))
	}

	mem := NewMemory()
	if err := SaveToken(bg, mem, "e", tok); err != nil {
		t.Fatal(err)
	}
	values["Memory"] = mem
	ring, err := NewKeyring("svc", &KeyringOptions{Backend: kr, LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveToken(bg, ring, "e", tok); err != nil {
		t.Fatal(err)
	}
	values["Keyring"] = ring

	for name, v := range values {
		secrettest.NoSecret(t, name, v, secrets...)
	}
}

// derivedKey derives the key of the passphrase entry at path.
func derivedKey(t *testing.T, path string, pass []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	p, salt, err := decodeArgon2(h.params)
	if err != nil {
		t.Fatal(err)
	}
	return argon2.IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, 32)
}
