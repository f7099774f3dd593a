package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func listAll(t *testing.T, l Lister) []string {
	t.Helper()
	var keys []string
	if err := l.List(bg, func(k string) bool { keys = append(keys, k); return true }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// TestFileList: List names every entry, plain or hashed, and nothing else
// in the directory (lock, temporary and name files).
func TestFileList(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	var _ Lister = f
	keys := []string{"alice", "user@example.com/prod", "", "é", "a+b@example.com", strings.Repeat("k", 300), ".hidden"}
	for _, k := range keys {
		if err := SaveToken(bg, f, k, sampleToken()); err != nil {
			t.Fatal(err)
		}
		if err := SaveToken(bg, f, k, sampleToken()); err != nil { // a second generation
			t.Fatal(err)
		}
	}
	if err := SaveToken(bg, f, "gone/1", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(bg, "gone/1"); err != nil {
		t.Fatal(err)
	}
	unlock, _ := f.Lock(bg, "locked-only") // a lock file without an entry
	defer unlock()
	writeFile(t, filepath.Join(f.Dir(), tempName(fileName("alice"))), []byte("x"))
	writeFile(t, filepath.Join(f.Dir(), "README"), []byte("x"))

	want := slices.Clone(keys)
	slices.Sort(want)
	if got := listAll(t, f); !slices.Equal(got, want) {
		t.Fatalf("List: got %q, want %q", got, want)
	}
	for _, k := range listAll(t, f) {
		if _, err := f.Load(bg, k); err != nil {
			t.Fatalf("listed %q does not load: %v", k, err)
		}
	}

	// A name file that does not match its entry is not believed.
	writeFile(t, filepath.Join(f.Dir(), nameFile("é")), []byte("mallory"))
	if got := listAll(t, f); slices.Contains(got, "mallory") || slices.Contains(got, "é") {
		t.Fatalf("List believed a name file of another name: %q", got)
	}

	// yield returning false stops the listing; a done ctx ends it.
	n := 0
	f.List(bg, func(string) bool { n++; return false })
	if n != 1 {
		t.Fatalf("yield called %d times after returning false, want 1", n)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := f.List(ctx, func(string) bool { return true }); !errors.Is(err, context.Canceled) {
		t.Fatalf("List with a done ctx: got %v, want context.Canceled", err)
	}
}

// TestFileListVersion1HashedEntry: an entry with a hashed name written by
// version 1 has no name file; it is listed once saved again.
func TestFileListVersion1HashedEntry(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	b, err := os.ReadFile(goldenFiles(t)[0].path) // v1-raw, written for the entry "golden"
	if err != nil {
		t.Fatal(err)
	}
	// Re-seal the golden token for a hashed name, as version 1 would have.
	const key = "tenant/golden"
	r, err := Open(bg, mustRaw(t, testKey()), goldenEntry, b)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := Seal(bg, mustRaw(t, testKey()), key, r)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.Path(key), sealed)
	if got := listAll(t, f); len(got) != 0 {
		t.Fatalf("List: got %q, want nothing yet", got)
	}
	if err := SaveToken(bg, f, key, sampleToken()); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, f); !slices.Equal(got, []string{key}) {
		t.Fatalf("List after a save: got %q, want %q", got, key)
	}
}

// TestMemoryList: Memory lists what it holds.
func TestMemoryList(t *testing.T) {
	m := NewMemory()
	for _, k := range []string{"b", "a"} {
		SaveToken(bg, m, k, sampleToken())
	}
	if got := listAll(t, m); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("got %q", got)
	}
}
