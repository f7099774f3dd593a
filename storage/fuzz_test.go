package storage

import (
	"errors"
	"os"
	"testing"
)

// FuzzFileDecode feeds arbitrary bytes to the file store's reader as an
// entry's file: it must never panic, must reject everything it cannot
// authenticate with ErrCorrupt, and, when it accepts, return a token.
func FuzzFileDecode(f *testing.F) {
	for _, g := range goldenFiles(f) {
		b, err := os.ReadFile(g.path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("TKKF\x01\x01"))
	f.Add([]byte{})
	key := mustRaw(f, testKey())
	pass, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	cheap := func(h *header) bool { // argon2id within the caps can still take seconds
		p, _, err := decodeArgon2(h.params)
		return err != nil || p.Time*p.MemoryKiB <= 8<<10
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ct, err := parseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parseHeader: %v does not match ErrCorrupt", err)
			}
			return
		}
		for _, k := range []Key{key, pass} {
			if k == pass && !cheap(h) {
				continue
			}
			kb, err := k.opening(bg, keyEnv{}, h)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("opening: %v does not match ErrCorrupt", err)
				}
				continue
			}
			if _, err := openBytes(h, ct, kb, goldenEntry); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v does not match ErrCorrupt", err)
			}
		}
	})
}
