package storage

import (
	"os"
	"path/filepath"
	"testing"
)

// goldenEntry is the entry name the golden files were written under.
const goldenEntry = "golden"

type golden struct {
	name string
	path string
	key  func(testing.TB) Key
}

// goldenFiles are entries written by format version 1. They are never
// regenerated once released: every later version must read them.
func goldenFiles(t testing.TB) []golden {
	dir := filepath.Join("..", "testdata", "golden")
	return []golden{
		{"v1-raw", filepath.Join(dir, "v1-raw.tok"), func(t testing.TB) Key { return mustRaw(t, testKey()) }},
		{"v1-passphrase", filepath.Join(dir, "v1-passphrase.tok"), func(t testing.TB) Key {
			k, err := PassphraseWithParams(testPassphrase, fastArgon2)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}},
	}
}

func TestGoldenFilesReadable(t *testing.T) {
	for _, g := range goldenFiles(t) {
		t.Run(g.name, func(t *testing.T) {
			if *update {
				f := newFileStore(t, g.key(t))
				if err := SaveToken(bg, f, goldenEntry, sampleToken()); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(f.Path(goldenEntry))
				os.MkdirAll(filepath.Dir(g.path), 0o755)
				if err := os.WriteFile(g.path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			f := newFileStore(t, g.key(t))
			writeFile(t, f.Path(goldenEntry), b)
			got, err := LoadToken(bg, f, goldenEntry)
			if err != nil {
				t.Fatalf("a version 1 file no longer reads: %v", err)
			}
			sameToken(t, got, sampleToken())
		})
	}
}
