package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestFileRoundTrip(t *testing.T) {
	pass, err := PassphraseWithParams(testPassphrase, fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := KeyringKey("tokenkeep-test", "file-key", &KeyringOptions{Backend: &fakeKeyring{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  Key
	}{
		{"raw", mustRaw(t, testKey())},
		{"passphrase", pass},
		{"keyring", kr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFileStore(t, tc.key)
			if _, err := f.Load(bg, "alice"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load of nothing: got %v, want ErrNotFound", err)
			}
			for _, name := range []string{"alice", "user@example.com/prod", ""} {
				if err := SaveToken(bg, f, name, sampleToken()); err != nil {
					t.Fatal(err)
				}
				got, err := LoadToken(bg, f, name)
				if err != nil {
					t.Fatal(err)
				}
				sameToken(t, got, sampleToken())
			}
			fi, err := os.Stat(f.Path("alice"))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("file mode: got %04o, want 0600", got)
			}
			di, err := os.Stat(f.Dir())
			if err != nil {
				t.Fatal(err)
			}
			if got := di.Mode().Perm(); got != 0o700 {
				t.Errorf("directory mode: got %04o, want 0700", got)
			}
			raw, _ := os.ReadFile(f.Path("alice"))
			if bytes.Contains(raw, []byte("tkrt_")) || bytes.Contains(raw, []byte("tkat_")) {
				t.Error("file holds a token in clear")
			}
			if err := f.Delete(bg, "alice"); err != nil {
				t.Fatal(err)
			}
			if err := f.Delete(bg, "alice"); err != nil {
				t.Fatalf("second Delete: %v", err)
			}
			if _, err := f.Load(bg, "alice"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
			}
			for _, p := range []string{f.Path("alice"), f.Path("alice") + ".lock"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("Delete left %s", filepath.Base(p))
				}
			}
			entries, _ := os.ReadDir(f.Dir())
			for _, e := range entries {
				switch filepath.Ext(e.Name()) {
				case ".tok", ".name", ".lock": // the two other entries, with hashed names
				case ".swept": // when NewFile last swept
				default:
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}

func TestFileNonceFreshOnEveryWrite(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	seen := map[string]bool{}
	for range 50 {
		if err := SaveToken(bg, f, "a", sampleToken()); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(f.Path("a"))
		h, _, err := parseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(h.nonce)] {
			t.Fatal("nonce reused")
		}
		seen[string(h.nonce)] = true
	}
}

func TestFileNames(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"alice", "alice.tok"},
		{"user@example.com", "user@example.com.tok"},
		{"a/b", "~"},
		{"..", "~"},
		{"", "~"},
		{"é", "~"},
	} {
		got := fileName(tc.key)
		if tc.want == "~" {
			if got[0] != '~' || filepath.Base(got) != got {
				t.Errorf("fileName(%q) = %q, want a hashed name", tc.key, got)
			}
		} else if got != tc.want {
			t.Errorf("fileName(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// TestFileBadInput feeds the decoder what a disk, a user or an attacker can
// put in an entry's file: each must be a clear error matching its sentinel,
// never a panic and never a token.
func TestFileBadInput(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := SaveToken(bg, f, "good", sampleToken()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(f.Path("good"))

	future := bytes.Clone(good)
	future[4] = formatVersion + 1
	magic := bytes.Clone(good)
	copy(magic, "XXXX")
	kind := bytes.Clone(good)
	kind[5] = byte(kindPassphrase)
	paramsLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(paramsLen[14:16], 0xffff)

	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"wrong magic", magic},
		{"future version", future},
		{"other key kind", kind},
		{"params longer than file", paramsLen},
		{"only a header", good[:fixedHeader+nonceSize]},
		{"garbage", bytes.Repeat([]byte{0xA5}, 200)},
		{"too large", make([]byte, maxEntrySize+10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, f.Path("bad"), tc.data)
			tok, err := f.Load(bg, "bad")
			if !errors.Is(err, ErrCorrupt) || tok != nil {
				t.Fatalf("got (%v, %v), want ErrCorrupt", tok != nil, err)
			}
			noSecrets(t, err)
		})
	}
}

func TestFileTruncatedAtEveryLength(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(f.Path("e"))
	for n := range len(good) {
		writeFile(t, f.Path("e"), good[:n])
		if _, err := f.Load(bg, "e"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: got %v, want ErrCorrupt", n, len(good), err)
		}
	}
}

func TestFileEveryBitFlipRejected(t *testing.T) {
	for _, golden := range goldenFiles(t) {
		t.Run(golden.name, func(t *testing.T) {
			f := newFileStore(t, golden.key(t))
			orig, err := os.ReadFile(golden.path)
			if err != nil {
				t.Fatal(err)
			}
			buf := bytes.Clone(orig)
			for i := range len(buf) * 8 {
				buf[i/8] ^= 1 << (i % 8)
				writeFile(t, f.Path(goldenEntry), buf)
				tok, err := f.Load(bg, goldenEntry)
				if err == nil || tok != nil {
					t.Fatalf("bit %d flipped: accepted", i)
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("bit %d flipped: got %v, want ErrCorrupt", i, err)
				}
				buf[i/8] ^= 1 << (i % 8)
			}
		})
	}
}

func TestFileWrongKey(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewFile(dir, mustRaw(t, testKey()))
	if err := SaveToken(bg, a, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	other := testKey()
	other[0] ^= 1
	b, _ := NewFile(dir, mustRaw(t, other))
	_, err := b.Load(bg, "e")
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong key: got %v, want ErrCorrupt", err)
	}
	noSecrets(t, err)

	p, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	c, _ := NewFile(dir, p)
	if err := SaveToken(bg, c, "p", sampleToken()); err != nil {
		t.Fatal(err)
	}
	wrong, _ := PassphraseWithParams([]byte("incorrect horse"), fastArgon2)
	d, _ := NewFile(dir, wrong)
	_, err = d.Load(bg, "p")
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong passphrase: got %v, want ErrCorrupt", err)
	}
	noSecrets(t, err, "incorrect horse")

	if _, err := b.Load(bg, "p"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("passphrase file read with a raw key: got %v, want ErrCorrupt", err)
	}
}

func TestFileRenamedToAnotherEntry(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := SaveToken(bg, f, "alice", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Path("alice"), f.Path("bob")); err != nil {
		t.Fatal(err)
	}
	_, err := f.Load(bg, "bob")
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("alice's file as bob's: got %v, want ErrCorrupt", err)
	}
}

// TestFileAbsurdKDFParamsRejectedBeforeDeriving tampers with the argon2id
// parameters in an entry's header: the read must fail with ErrCorrupt
// without deriving a key, since a derivation with such parameters would
// take hours or terabytes before the tag check could reject it. The reading
// Key's derivations are counted, and stubbed so that a regression fails
// here rather than trying to allocate 4 TiB.
func TestFileAbsurdKDFParamsRejectedBeforeDeriving(t *testing.T) {
	p, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	f := newFileStore(t, p)
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(f.Path("e"))
	for _, tc := range []struct {
		name string
		set  func(params []byte)
	}{
		{"time 2^32-1", func(b []byte) { binary.BigEndian.PutUint32(b[0:4], 0xffffffff) }},
		{"memory 4 TiB", func(b []byte) { binary.BigEndian.PutUint32(b[4:8], 0xffffffff) }},
		{"time 0", func(b []byte) { binary.BigEndian.PutUint32(b[0:4], 0) }},
		{"memory 0", func(b []byte) { binary.BigEndian.PutUint32(b[4:8], 0) }},
		{"threads 0", func(b []byte) { b[8] = 0 }},
		{"threads 200", func(b []byte) { b[8] = 200 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(good)
			tc.set(b[fixedHeader:])
			if bytes.Equal(b, good) {
				t.Fatal("the parameters were not changed")
			}
			writeFile(t, f.Path("e"), b)
			fresh, _ := PassphraseWithParams(testPassphrase, fastArgon2)
			derivations := 0
			fresh.(*passphraseKey).idKey = func(_, _ []byte, _, _ uint32, _ uint8, n uint32) []byte {
				derivations++
				return make([]byte, n)
			}
			g, _ := NewFile(f.Dir(), fresh)
			_, err := g.Load(bg, "e")
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			if derivations != 0 {
				t.Fatalf("%d key derivations for the tampered header, want 0: parameters must be checked before deriving", derivations)
			}
		})
	}
}

func TestFilePassphraseDerivedOncePerStore(t *testing.T) {
	p, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	f := newFileStore(t, p)
	for i := range 20 {
		if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Load(bg, "e"); err != nil {
			t.Fatal(i, err)
		}
	}
	pk := p.(*passphraseKey)
	if got := len(pk.derived); got != 1 {
		t.Fatalf("derivations: got %d, want 1", got)
	}
	// A second process's store adopts the salt it finds.
	q, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	g, _ := NewFile(f.Dir(), q)
	if _, err := g.Load(bg, "e"); err != nil {
		t.Fatal(err)
	}
	if err := SaveToken(bg, g, "e2", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if got := len(pk.derived); got != 1 {
		t.Fatalf("after another store wrote: got %d derivations, want 1", got)
	}
	if _, err := f.Load(bg, "e2"); err != nil {
		t.Fatal(err)
	}
	if got := len(pk.derived); got != 1 {
		t.Fatalf("reading the other store's entry: got %d derivations, want 1 (same salt)", got)
	}
}

func TestFileTargetIsADirectory(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := os.Mkdir(f.Path("d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(bg, "d"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of a directory: got %v, want an error", err)
	}
	if err := SaveToken(bg, f, "d", sampleToken()); err == nil {
		t.Fatal("Save over a directory succeeded")
	}
	if _, err := NewFile(f.Path("x"), mustRaw(t, testKey())); err != nil {
		t.Fatal(err) // a fresh subdirectory is fine
	}
	writeFile(t, filepath.Join(f.Dir(), "plain"), []byte("x"))
	if _, err := NewFile(filepath.Join(f.Dir(), "plain"), mustRaw(t, testKey())); err == nil {
		t.Fatal("NewFile on a regular file succeeded")
	}
}

// TestNewFileSweepsStaleTemps checks that opening a store sweeps up the
// temporary files crashed writers left (this version's and version 1's),
// leaves alone one that may belong to a write in progress, and reads the
// directory at most once per staleTemp for all the stores sharing it.
func TestNewFileSweepsStaleTemps(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	dir := f.Dir()
	if err := os.Remove(filepath.Join(dir, sweepStamp)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-staleTemp - time.Minute)
	stale := filepath.Join(dir, tempName(fileName("e")))
	staleV1 := filepath.Join(dir, "."+fileName("e")+".tmp-111")
	recentV1 := filepath.Join(dir, "."+fileName("e")+".tmp-222")
	entry := filepath.Join(dir, fileName("other"))
	for _, p := range []string{stale, staleV1, recentV1, entry} {
		writeFile(t, p, []byte("half a token"))
	}
	for _, p := range []string{stale, staleV1, entry} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewFile(dir, mustRaw(t, testKey())); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{stale: false, staleV1: false, recentV1: true, entry: true} {
		_, err := os.Lstat(p)
		if got := err == nil; got != want {
			t.Errorf("%s: exists = %v, want %v", filepath.Base(p), got, want)
		}
	}
	// Swept a moment ago: the next store does not read the directory.
	writeFile(t, stale, []byte("half a token"))
	os.Chtimes(stale, old, old)
	if _, err := NewFile(dir, mustRaw(t, testKey())); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); err != nil {
		t.Error("a second store swept the directory again at once")
	}
	// A save replaces the entry's own leftover.
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Error("a save left its entry's temporary file")
	}
	if _, err := f.Load(bg, "e"); err != nil {
		t.Fatal(err)
	}
}

func TestFilePermissionsChecked(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	os.Chmod(f.Path("e"), 0o644)
	_, err := f.Load(bg, "e")
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("0644 file: got %v, want a permission error", err)
	}
	os.Chmod(f.Path("e"), 0o600)

	dir := filepath.Join(t.TempDir(), "open")
	os.Mkdir(dir, 0o777)
	os.Chmod(dir, 0o777)
	if _, err := NewFile(dir, mustRaw(t, testKey())); err == nil {
		t.Fatal("NewFile accepted a world-writable directory")
	}
}

func TestFileOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	f := newFileStore(t, mustRaw(t, testKey()))
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f.Path("e"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(bg, "e"); err == nil {
		t.Fatal("a file owned by another user was accepted")
	}
}

func TestKeyConstructors(t *testing.T) {
	if _, err := RawKey(make([]byte, 31)); err == nil {
		t.Error("RawKey accepted 31 bytes")
	}
	if _, err := Passphrase(nil); err == nil {
		t.Error("Passphrase accepted an empty passphrase")
	}
	if _, err := PassphraseWithParams([]byte("x"), Argon2Params{Time: 1, MemoryKiB: 1 << 30, Threads: 1}); err == nil {
		t.Error("PassphraseWithParams accepted 1 TiB")
	}
	const v = "TOKENKEEP_TEST_KEY"
	secret := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{secret, true},
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", true},
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", true},
		{"c2hvcnQ=", false},
		{"not a key at all!", false},
		{"", false},
	} {
		t.Setenv(v, tc.value)
		k, err := KeyFromEnv(v)
		if (err == nil) != tc.ok {
			t.Errorf("KeyFromEnv with %d chars: got %v, want ok=%v", len(tc.value), err, tc.ok)
		}
		if err != nil {
			noSecrets(t, err, tc.value)
			continue
		}
		if !bytes.Equal(k.(*rawKey).key, testKey()) {
			t.Errorf("KeyFromEnv decoded the wrong bytes")
		}
	}
}

func TestKeyringKey(t *testing.T) {
	kr := &fakeKeyring{}
	opts := &KeyringOptions{Backend: kr, Timeout: time.Second}
	dir := filepath.Join(t.TempDir(), "s")

	// Eight stores writing their first entry at once create one key.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _ := KeyringKey("svc", "key", opts)
			f, err := NewFile(dir, k)
			if err != nil {
				t.Error(err)
				return
			}
			if err := SaveToken(bg, f, string(rune('a'+i)), sampleToken()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	k, _ := KeyringKey("svc", "key", opts)
	f, _ := NewFile(dir, k)
	for i := range 8 {
		if _, err := f.Load(bg, string(rune('a'+i))); err != nil {
			t.Fatalf("entry %d unreadable: %v (two keys were created)", i, err)
		}
	}

	// The key replaced: every entry is lost, and says so.
	kr.Set("svc", "key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	k2, _ := KeyringKey("svc", "key", opts)
	g, _ := NewFile(dir, k2)
	if _, err := g.Load(bg, "a"); !errors.Is(err, ErrKeyLost) {
		t.Fatalf("key replaced: got %v, want ErrKeyLost", err)
	}
	// The key deleted.
	kr.Delete("svc", "key")
	k3, _ := KeyringKey("svc", "key", opts)
	h, _ := NewFile(dir, k3)
	if _, err := h.Load(bg, "a"); !errors.Is(err, ErrKeyLost) {
		t.Fatalf("key deleted: got %v, want ErrKeyLost", err)
	}
	// The keyring unreachable.
	kr.fail = ErrUnavailable
	k4, _ := KeyringKey("svc", "key", opts)
	u, _ := NewFile(dir, k4)
	if _, err := u.Load(bg, "a"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("keyring down: got %v, want ErrUnavailable", err)
	}
}

func TestSealOpen(t *testing.T) {
	key := mustRaw(t, testKey())
	b, err := Seal(bg, key, "fleet/alice", NewRecord(0, sampleToken()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(bg, key, "fleet/alice", b)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, got.Token, sampleToken())
	if _, err := Open(bg, key, "fleet/bob", b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("opened under another name: got %v, want ErrCorrupt", err)
	}
	other := testKey()
	other[31] ^= 0x80
	if _, err := Open(bg, mustRaw(t, other), "fleet/alice", b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("opened with another key: got %v, want ErrCorrupt", err)
	}
	if _, err := Seal(bg, key, "x", nil); err == nil {
		t.Fatal("sealed a nil token")
	}
	kr, _ := KeyringKey("svc", "fleet", &KeyringOptions{Backend: &fakeKeyring{}})
	b, err = Seal(bg, kr, "a", NewRecord(0, sampleToken()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bg, kr, "a", b); err != nil {
		t.Fatal(err)
	}
}
