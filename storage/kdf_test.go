package storage

import (
	"crypto/rand"
	"errors"
	"os"
	"testing"

	"golang.org/x/crypto/argon2"
)

// weakestArgon2 are the cheapest parameters a header may carry.
var weakestArgon2 = Argon2Params{Time: 1, MemoryKiB: 8, Threads: 1}

// plantHeader writes, at f's entry name, what an attacker without the
// passphrase can write: a passphrase header with params and a random salt,
// followed by random bytes.
func plantHeader(t *testing.T, f *File, name string, p Argon2Params) {
	t.Helper()
	salt := make([]byte, saltSize)
	key := make([]byte, 32)
	rand.Read(salt)
	rand.Read(key)
	b, err := sealBytes(kindPassphrase, p.encode(salt), key, name, []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.Path(name), b)
}

// writtenParams returns the argon2id parameters in the header of f's entry.
func writtenParams(t *testing.T, f *File, name string) Argon2Params {
	t.Helper()
	b, err := os.ReadFile(f.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := decodeArgon2(h.params)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWritesUseOwnArgon2Params reads an entry whose header carries the
// weakest parameters, then writes: the write must use the key's own
// parameters, whether the entry was forged (and fails to load) or written by
// another store with the same passphrase and weaker parameters (and loads).
func TestWritesUseOwnArgon2Params(t *testing.T) {
	tests := []struct {
		name    string
		plant   func(t *testing.T, f *File)
		wantErr error
	}{
		{"forged header", func(t *testing.T, f *File) {
			plantHeader(t, f, "other", weakestArgon2)
		}, ErrCorrupt},
		{"authentic entry with weaker parameters", func(t *testing.T, f *File) {
			weak, err := PassphraseWithParams(testPassphrase, weakestArgon2)
			if err != nil {
				t.Fatal(err)
			}
			g, err := NewFile(f.Dir(), weak)
			if err != nil {
				t.Fatal(err)
			}
			if err := SaveToken(bg, g, "other", sampleToken()); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := PassphraseWithParams(testPassphrase, fastArgon2)
			if err != nil {
				t.Fatal(err)
			}
			f := newFileStore(t, k)
			tc.plant(t, f)
			if got := writtenParams(t, f, "other"); got != weakestArgon2 {
				t.Fatalf("planted parameters: got %+v, want %+v", got, weakestArgon2)
			}
			_, err = f.Load(bg, "other")
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("load: got %v, want %v", err, tc.wantErr)
			}
			if err := SaveToken(bg, f, "mine", sampleToken()); err != nil {
				t.Fatal(err)
			}
			if got := writtenParams(t, f, "mine"); got != fastArgon2 {
				t.Errorf("a write after reading the entry used %+v, want the key's own %+v", got, fastArgon2)
			}
			if _, err := f.Load(bg, "mine"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestForeignHeaderDerivationBlocksNoOtherEntry holds the derivation of a
// key for a header the store has not seen and, meanwhile, loads and saves
// entries whose key is already derived: they must not wait for it.
func TestForeignHeaderDerivationBlocksNoOtherEntry(t *testing.T) {
	k, err := PassphraseWithParams(testPassphrase, fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	pk := k.(*passphraseKey)
	f := newFileStore(t, k)
	if err := SaveToken(bg, f, "mine", sampleToken()); err != nil {
		t.Fatal(err)
	}
	foreign := Argon2Params{Time: 2, MemoryKiB: 16, Threads: 1}
	plantHeader(t, f, "planted", foreign)

	var ran int
	pk.idKey = func(pass, salt []byte, time, memory uint32, threads uint8, n uint32) []byte {
		if time == foreign.Time && memory == foreign.MemoryKiB {
			ran++
			// A goroutine that wanted the key's lock now would wait for
			// the whole derivation.
			if !pk.mu.TryLock() {
				t.Error("the key's lock is held while a foreign header's key is derived")
			} else {
				pk.mu.Unlock()
				if _, err := f.Load(bg, "mine"); err != nil {
					t.Errorf("load of another entry during the derivation: %v", err)
				}
				if err := SaveToken(bg, f, "mine", sampleToken()); err != nil {
					t.Errorf("save of another entry during the derivation: %v", err)
				}
			}
		}
		return argon2.IDKey(pass, salt, time, memory, threads, n)
	}

	if _, err := f.Load(bg, "planted"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("planted entry: got %v, want ErrCorrupt", err)
	}
	if ran != 1 {
		t.Fatalf("the planted header's key was derived %d times, want 1", ran)
	}
}
