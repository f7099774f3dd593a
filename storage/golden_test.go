package storage

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// goldenEntry is the entry name the golden files were written under.
const goldenEntry = "golden"

type golden struct {
	name    string
	path    string
	version byte
	key     func(testing.TB) Key
	want    func() *Record // what the file holds
}

func goldenDir() string { return filepath.Join("..", "testdata", "golden") }

func rawGoldenKey(t testing.TB) Key { return mustRaw(t, testKey()) }

func passGoldenKey(t testing.TB) Key {
	k, err := PassphraseWithParams(testPassphrase, fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// goldenLive is the live record of the version 2 golden files: a later
// generation, with every piece of session metadata set.
func goldenLive() *Record {
	r := NewRecord(6, sampleToken())
	r.Lifetime = time.Hour
	r.RetryAfter = time.Date(2026, 11, 22, 11, 0, 30, 0, time.UTC)
	r.RefreshExpiry = time.Date(2027, 5, 22, 12, 0, 0, 0, time.UTC)
	return r
}

// goldenEnded is the tombstone of the version 2 golden files.
func goldenEnded() *Record {
	return &Record{Generation: 9, State: Ended, Reason: "revoked"}
}

// goldenFiles are entries written by each format version. Version 1 files
// are frozen; they are never regenerated, and every later version must
// read them. -update rewrites only the current version's files.
func goldenFiles(t testing.TB) []golden {
	dir := goldenDir()
	v1 := func() *Record { return legacyRecord(sampleToken()) }
	return []golden{
		{"v1-raw", filepath.Join(dir, "v1-raw.tok"), 1, rawGoldenKey, v1},
		{"v1-passphrase", filepath.Join(dir, "v1-passphrase.tok"), 1, passGoldenKey, v1},
		{"v2-raw", filepath.Join(dir, "v2-raw.tok"), 2, rawGoldenKey, goldenLive},
		{"v2-passphrase", filepath.Join(dir, "v2-passphrase.tok"), 2, passGoldenKey, goldenLive},
		{"v2-ended", filepath.Join(dir, "v2-ended.tok"), 2, rawGoldenKey, goldenEnded},
	}
}

// sameRecord compares what a store must keep of a record.
func sameRecord(t testing.TB, got, want *Record) {
	t.Helper()
	if got.Generation != want.Generation || got.State != want.State || got.Reason != want.Reason ||
		got.Lifetime != want.Lifetime || !got.RetryAfter.Equal(want.RetryAfter) || !got.RefreshExpiry.Equal(want.RefreshExpiry) {
		t.Fatalf("record: got %v (lifetime %v, retry after %v, refresh expiry %v), want %v (lifetime %v, retry after %v, refresh expiry %v)",
			got, got.Lifetime, got.RetryAfter, got.RefreshExpiry, want, want.Lifetime, want.RetryAfter, want.RefreshExpiry)
	}
	if (got.Token == nil) != (want.Token == nil) {
		t.Fatalf("token: got %v, want %v", got.Token != nil, want.Token != nil)
	}
	if want.Token != nil {
		sameToken(t, got.Token, want.Token)
	}
}

func TestGoldenFilesReadable(t *testing.T) {
	for _, g := range goldenFiles(t) {
		t.Run(g.name, func(t *testing.T) {
			if *update && g.version == formatVersion {
				b, err := Seal(bg, g.key(t), goldenEntry, g.want())
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(g.path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			if b[4] != g.version {
				t.Fatalf("%s holds format version %d, want %d", g.path, b[4], g.version)
			}
			f := newFileStore(t, g.key(t))
			writeFile(t, f.Path(goldenEntry), b)
			got, err := f.Load(bg, goldenEntry)
			if err != nil {
				t.Fatalf("a version %d file no longer reads: %v", g.version, err)
			}
			sameRecord(t, got, g.want())
		})
	}
}

// TestFileUpgradesV1OnWrite: a version 1 file reads as generation 1; the
// next write must follow generation 1 and writes format version 2.
func TestFileUpgradesV1OnWrite(t *testing.T) {
	for _, g := range goldenFiles(t) {
		if g.version != 1 {
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			b, err := os.ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			f := newFileStore(t, g.key(t))
			writeFile(t, f.Path(goldenEntry), b)
			mustLoad(t, f, goldenEntry, 1)
			if err := f.Save(bg, goldenEntry, NewRecord(0, sessionToken(1))); err == nil {
				t.Fatal("a first generation replaced a version 1 entry")
			}
			if err := f.Save(bg, goldenEntry, NewRecord(1, sessionToken(2))); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(f.Path(goldenEntry))
			if after[4] != 2 {
				t.Fatalf("format version after the write: got %d, want 2", after[4])
			}
			if got := mustLoad(t, f, goldenEntry, 2); got.Token.AccessToken != sessionToken(2).AccessToken {
				t.Fatal("the upgraded entry holds another token")
			}
		})
	}
}

// goldenKeyringValues are keyring values as each version wrote them, for
// the entry goldenEntry.
func goldenKeyringValues(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"keyring-v1.txt", "keyring-v2.txt"} {
		path := filepath.Join(goldenDir(), name)
		if *update && name == "keyring-v2.txt" {
			b, err := encodeRecord(goldenLive())
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(path, []byte(singlePrefix+base64.StdEncoding.EncodeToString(b)+"\n"), 0o644)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = strings.TrimSpace(string(b))
	}
	return out
}

// TestKeyringGoldenAndUpgrade: keyring values written by version 1 (a bare
// token) read as generation 1, chunked or not, and the next write stores a
// record; a version 2 value reads as its record.
func TestKeyringGoldenAndUpgrade(t *testing.T) {
	values := goldenKeyringValues(t)
	v1 := values["keyring-v1.txt"]
	if !strings.HasPrefix(v1, singlePrefixV1) {
		t.Fatalf("keyring-v1.txt does not start with %q", singlePrefixV1)
	}
	enc := v1[len(singlePrefixV1):]
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := tokencodec.Decode(b); err != nil {
		t.Fatalf("keyring-v1.txt is not a version 1 value: %v", err)
	} else {
		sameToken(t, tok, sampleToken())
	}
	// The chunked form of the same value, as version 1 wrote it.
	const gen = "0a0b0c0d0e0f"
	chunked := map[string]string{goldenEntry: manifestPrefixV1 + gen + ":2:" + valueHash(enc)}
	chunked[chunkUser(goldenEntry, gen, 0)] = enc[:len(enc)/2]
	chunked[chunkUser(goldenEntry, gen, 1)] = enc[len(enc)/2:]

	for _, tc := range []struct {
		name  string
		items map[string]string
	}{
		{"v1", map[string]string{goldenEntry: v1}},
		{"v1-chunked", chunked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr := &fakeKeyring{}
			for user, v := range tc.items {
				kr.Set("tokenkeep-test", user, v)
			}
			k := newFakeKeyring(t, kr, -1)
			got := mustLoad(t, k, goldenEntry, 1)
			sameToken(t, got.Token, sampleToken())
			if err := k.Save(bg, goldenEntry, NewRecord(1, sessionToken(2))); err != nil {
				t.Fatal(err)
			}
			v, _ := kr.Get("tokenkeep-test", goldenEntry)
			if !strings.HasPrefix(v, singlePrefix) {
				t.Fatalf("after the write the value starts with %q, want %q", v[:4], singlePrefix)
			}
			if n := kr.len(); n != 1 {
				t.Fatalf("%d keyring items after the write, want 1 (old chunks removed)", n)
			}
			mustLoad(t, k, goldenEntry, 2)
		})
	}
	t.Run("v2", func(t *testing.T) {
		kr := &fakeKeyring{}
		kr.Set("tokenkeep-test", goldenEntry, values["keyring-v2.txt"])
		k := newFakeKeyring(t, kr, -1)
		got, err := k.Load(bg, goldenEntry)
		if err != nil {
			t.Fatal(err)
		}
		sameRecord(t, got, goldenLive())
	})
}
