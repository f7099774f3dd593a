package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// testKey is the raw key of the golden files: bytes 0, 1, ..., 31.
func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// testPassphrase and fastArgon2 are the golden passphrase files' secret and
// parameters: cheap, so that tests stay quick.
var (
	testPassphrase = []byte("correct horse battery staple")
	fastArgon2     = Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}
)

// sampleToken is a token as a provider returns it, extras included.
func sampleToken() *oauth2.Token {
	return (&oauth2.Token{
		AccessToken:  "tkat_sample-access",
		TokenType:    "Bearer",
		RefreshToken: "tkrt_sample-refresh",
		Expiry:       time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC),
		ExpiresIn:    3600,
	}).WithExtra(map[string]any{"id_token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.", "scope": "openid offline_access"})
}

func mustRaw(t testing.TB, k []byte) Key {
	t.Helper()
	key, err := RawKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newFileStore(t testing.TB, key Key) *File {
	t.Helper()
	f, err := NewFile(filepath.Join(t.TempDir(), "tokens"), key)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sameToken compares what a store must keep.
func sameToken(t testing.TB, got, want *oauth2.Token) {
	t.Helper()
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken ||
		got.TokenType != want.TokenType || !got.Expiry.Equal(want.Expiry) {
		t.Fatalf("token differs: got type %q expiry %v, want type %q expiry %v (values compared, not printed)",
			got.TokenType, got.Expiry, want.TokenType, want.Expiry)
	}
	for _, k := range []string{"id_token", "scope"} {
		if got.Extra(k) != want.Extra(k) {
			t.Fatalf("extra %q lost", k)
		}
	}
}

// noSecrets fails if err's message holds a token or key value.
func noSecrets(t testing.TB, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range append(secrets, "tkat_", "tkrt_", string(testPassphrase)) {
		if s != "" && strings.Contains(msg, s) {
			t.Fatalf("error message leaks a secret: %q", msg)
		}
	}
}

// fakeKeyring is an in-memory KeyringBackend that can refuse large values,
// fail, or hang.
type fakeKeyring struct {
	mu    sync.Mutex
	items map[string]string
	limit int           // Set of a longer value fails, when > 0
	fail  error         // every call fails with it, when set
	hang  chan struct{} // every call waits on it, when set
	calls int
}

func (f *fakeKeyring) enter() error {
	f.mu.Lock()
	f.calls++
	hang, fail := f.hang, f.fail
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	return fail
}

func (f *fakeKeyring) Get(service, user string) (string, error) {
	if err := f.enter(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.items[service+"\x00"+user]
	if !ok {
		return "", ErrNotFound
	}
	return v, nil
}

func (f *fakeKeyring) Set(service, user, secret string) error {
	if err := f.enter(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limit > 0 && len(secret) > f.limit {
		return errors.New("fake keyring: value too long")
	}
	if f.items == nil {
		f.items = make(map[string]string)
	}
	f.items[service+"\x00"+user] = secret
	return nil
}

func (f *fakeKeyring) Delete(service, user string) error {
	if err := f.enter(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := service + "\x00" + user
	if _, ok := f.items[k]; !ok {
		return ErrNotFound
	}
	delete(f.items, k)
	return nil
}

func (f *fakeKeyring) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.items)
}

var bg = context.Background()

// writeFile is os.WriteFile with the store's mode.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
