package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFileAtScale measures a durable save (encode, encrypt, read and
// check the stored generation, write a temporary file, fsync it, rename
// it, fsync the directory) and a load (check the directory, read, check
// owner and mode, decrypt, decode) in directories holding 0, 10,000 and
// 100,000 other entries. Both should cost the same at every size.
//
// The other entries are written once per run, with plain writes (no
// fsync): their content does not matter, only their number.
func BenchmarkFileAtScale(b *testing.B) {
	filler, err := Seal(bg, mustRaw(b, testKey()), "filler", NewRecord(0, sampleToken()))
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{0, 10_000, 100_000} {
		dir := filepath.Join(b.TempDir(), "s")
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := range n {
			p := filepath.Join(dir, fmt.Sprintf("user%06d@example.com.tok", i))
			if err := os.WriteFile(p, filler, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		f, err := NewFile(dir, mustRaw(b, testKey()))
		if err != nil {
			b.Fatal(err)
		}
		tok := sampleToken()
		var gen uint64
		b.Run(fmt.Sprintf("entries=%d/Save", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := f.Save(bg, "e", NewRecord(gen, tok)); err != nil {
					b.Fatal(err)
				}
				gen++
			}
		})
		b.Run(fmt.Sprintf("entries=%d/Load", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Load(bg, "e"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPassphraseKDF is the one-time cost of a passphrase store: one
// argon2id derivation with DefaultArgon2Params.
func BenchmarkPassphraseKDF(b *testing.B) {
	for b.Loop() {
		k, err := Passphrase(testPassphrase)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.sealing(bg, keyEnv{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyring measures the real Secret Service, when one runs.
func BenchmarkKeyring(b *testing.B) {
	needSecretService(b)
	k, err := NewKeyring("tokenkeep-bench", &KeyringOptions{LockDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	tok := sampleToken()
	b.Run("Save", func(b *testing.B) {
		for b.Loop() {
			if err := SaveToken(bg, k, "e", tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Load(bg, "e"); err != nil {
				b.Fatal(err)
			}
		}
	})
	k.Delete(bg, "e")
}
