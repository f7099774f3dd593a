package storage

import "testing"

// BenchmarkFileSave measures a durable save: encode, encrypt, write a
// temporary file, fsync it, rename it, fsync the directory.
func BenchmarkFileSave(b *testing.B) {
	f := newFileStore(b, mustRaw(b, testKey()))
	tok := sampleToken()
	var gen uint64
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Save(bg, "e", NewRecord(gen, tok)); err != nil {
			b.Fatal(err)
		}
		gen++
	}
}

// BenchmarkFileLoad measures a load: read, check owner and mode, decrypt,
// decode. No fsync is involved.
func BenchmarkFileLoad(b *testing.B) {
	f := newFileStore(b, mustRaw(b, testKey()))
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Load(bg, "e"); err != nil {
			b.Fatal(err)
		}
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
