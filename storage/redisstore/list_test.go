package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tokenkeep/tokenkeep/storage"
)

// list returns every name s.List yields, and its error.
func list(t testing.TB, s *Store) ([]string, error) {
	t.Helper()
	var names []string
	err := s.List(context.Background(), func(name string) bool {
		names = append(names, name)
		return true
	})
	slices.Sort(names)
	return names, err
}

// TestList: List yields every entry's name once, whatever bytes it holds,
// in batches larger than one SCAN call returns; not entries deleted, nor
// another prefix's — even one that SCAN's MATCH would take for a pattern —,
// nor keys of another shape. Tombstones are entries.
func TestList(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	s := newStore(t, c, &Options{Prefix: testPrefix(t) + "a*[b]?:"})
	other := newStore(t, c, &Options{Prefix: strings.Replace(s.opt.Prefix, "a*[b]?:", "aX[b]Y:", 1)})
	other.key = s.key
	var want []string
	for i := range 3 * listBatch / 2 {
		want = append(want, fmt.Sprintf("user-%04d@example.com", i))
	}
	want = append(want, "", "ünïcödé", "a*b?[c]\\", "bad utf-8 \xff\xfe", strings.Repeat("l", MaxNameLen), "{braces}:name")
	for _, name := range want {
		if err := s.Save(ctx, name, record(1, "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(ctx, "ended", &storage.Record{Generation: 1, State: storage.Ended, Reason: "revoked"}); err != nil {
		t.Fatal(err)
	}
	want = append(want, "ended")
	for _, name := range []string{"deleted-1", "deleted-2"} {
		if err := s.Save(ctx, name, record(1, "x")); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Save(ctx, "elsewhere", record(1, "x")); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, s.opt.Prefix+"{not-a-hash}:name", "x", 0)
	c.Set(ctx, s.opt.Prefix+"stray", "x", 0)
	slices.Sort(want)

	got, err := list(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List: %d names, want %d; first difference at %d", len(got), len(want), diffAt(got, want))
	}
	if got, err := list(t, other); err != nil || !slices.Equal(got, []string{"elsewhere"}) {
		t.Fatalf("List of the other prefix: %q, %v", got, err)
	}

	var n int
	if err := s.List(ctx, func(string) bool { n++; return n < 10 }); err != nil || n != 10 {
		t.Fatalf("List stopped by yield: %d names, %v; want 10", n, err)
	}
}

func diffAt(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestListUnreadableNames: entries whose name cannot be read — altered,
// sealed with another key, moved from another entry, planted huge, of the
// wrong type — are skipped and counted in an error matching
// storage.ErrCorrupt, after every other entry was listed; the planted huge
// name costs no large allocation.
func TestListUnreadableNames(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	s := newStore(t, c, nil)
	for _, name := range []string{"good", "altered", "moved", "huge", "list", "foreign"} {
		if err := s.Save(ctx, name, record(1, "x")); err != nil {
			t.Fatal(err)
		}
	}
	k := func(name string) string { return s.keys(name).name }
	b, _ := c.Get(ctx, k("altered")).Bytes()
	b[len(b)-1] ^= 1
	c.Set(ctx, k("altered"), b, 0)
	good, _ := c.Get(ctx, k("good")).Bytes()
	c.Set(ctx, k("moved"), good, 0)
	c.Set(ctx, k("huge"), strings.Repeat("h", 64<<20), 0)
	defer c.Del(ctx, k("huge"))
	c.Del(ctx, k("list"))
	c.RPush(ctx, k("list"), "x")
	foreign := newStore(t, c, &Options{Prefix: s.opt.Prefix})
	fb, err := foreign.sealName(ctx, s.keys("foreign"), "foreign")
	if err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, k("foreign"), fb, 0)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := list(t, s)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "5 entries") {
		t.Fatalf("List: got %v, want ErrCorrupt counting 5 entries", err)
	}
	noSecret(t, err)
	if !slices.Equal(got, []string{"good"}) {
		t.Fatalf("List yielded %q, want only good", got)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
		t.Fatalf("List allocated %d bytes with a 64 MiB name planted", n)
	}
}
