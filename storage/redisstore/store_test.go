package redisstore

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// testToken is a token with every kind of field, its secrets marked so that
// tests can look for them in errors and in Redis.
func testToken(at string) *oauth2.Token {
	t := &oauth2.Token{
		AccessToken:  "tkat_" + at,
		TokenType:    "Bearer",
		RefreshToken: "tkrt_" + at,
		Expiry:       time.Now().Add(time.Hour).Round(0).Truncate(time.Second),
		ExpiresIn:    3600,
	}
	return t.WithExtra(map[string]any{"id_token": "tkid_" + at, "scope": "openid offline_access"})
}

// record returns the live record of testToken(at) at generation gen.
func record(gen uint64, at string) *storage.Record {
	return storage.NewRecord(gen-1, testToken(at))
}

func sameToken(t testing.TB, got, want *oauth2.Token) {
	t.Helper()
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken ||
		got.TokenType != want.TokenType || !got.Expiry.Equal(want.Expiry) ||
		!reflect.DeepEqual(got.Extra("id_token"), want.Extra("id_token")) ||
		!reflect.DeepEqual(got.Extra("scope"), want.Extra("scope")) {
		t.Fatal("the loaded token differs from the saved one")
	}
}

// storedIs checks that name holds generation gen, live with testToken(at).
func storedIs(t testing.TB, s *Store, name string, gen uint64, at string) {
	t.Helper()
	r, err := s.Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != gen || r.State != storage.Live || r.Token.AccessToken != testToken(at).AccessToken {
		t.Fatalf("stored: %v; want generation %d, live, %s's token", r, gen, at)
	}
}

func TestNew(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	_, key := newKeyHex(t)
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		key    storage.Key
		opts   *Options
		ok     bool
	}{
		{name: "nil options", client: c, key: key, ok: true},
		{name: "all set", client: c, key: key, opts: &Options{Prefix: "p:", LeaseTTL: time.Second, RenewEvery: 100 * time.Millisecond,
			LockPoll: time.Millisecond, OpTimeout: time.Second, Logger: slog.Default()}, ok: true},
		{name: "nil client", key: key},
		{name: "nil key", client: c},
		{name: "lease under a millisecond", client: c, key: key, opts: &Options{LeaseTTL: time.Microsecond}},
		{name: "renewal as long as the lease", client: c, key: key, opts: &Options{LeaseTTL: time.Second, RenewEvery: time.Second}},
		{name: "negative renewal", client: c, key: key, opts: &Options{RenewEvery: -time.Second}},
		{name: "negative poll", client: c, key: key, opts: &Options{LockPoll: -time.Second}},
		{name: "negative timeout", client: c, key: key, opts: &Options{OpTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.client, tc.key, tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("New: got error %v, want ok %v", err, tc.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "redisstore: ") {
				t.Fatalf("error %q does not start with the package name", err)
			}
			if err == nil && tc.opts == nil {
				want := Options{Prefix: DefaultPrefix, LeaseTTL: DefaultLeaseTTL, RenewEvery: DefaultLeaseTTL / 3, LockPoll: DefaultLockPoll, OpTimeout: DefaultOpTimeout}
				if s.opt != want {
					t.Fatalf("defaults: got %+v, want %+v", s.opt, want)
				}
			}
			if err == nil && s.log == nil {
				t.Fatal("no logger")
			}
		})
	}
}

func TestKeyLayout(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	_, key := newKeyHex(t)
	s, err := New(c, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := s.keys("alice@example.com")
	// The first 16 bytes of SHA-256("alice@example.com").
	const base = "tokenkeep:{ff8d9819fc0e12bf0d24892e45987e24}:"
	want := entryKeys{
		hash:  "ff8d9819fc0e12bf0d24892e45987e24",
		token: base + "token", gen: base + "gen", name: base + "name", lease: base + "lease", channel: base + "gen",
	}
	if k != want {
		t.Fatalf("keys: got %+v, want %+v", k, want)
	}
	if s.keys("bob@example.com").token == k.token {
		t.Fatal("two names share a key")
	}
}

func TestRoundTrip(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	if _, err := s.Load(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Load of nothing: got %v, want ErrNotFound", err)
	}
	want := record(1, "roundtrip")
	want.Lifetime = time.Hour
	want.RetryAfter = time.Now().Add(time.Minute).Round(0).Truncate(time.Millisecond)
	if err := s.Save(ctx, "alice", want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, got.Token, want.Token)
	if got.Generation != 1 || got.State != storage.Live || got.Lifetime != time.Hour || !got.RetryAfter.Equal(want.RetryAfter) {
		t.Fatalf("loaded %v, want generation 1, live, the lifetime and the retry deadline saved", got)
	}

	k := s.keys("alice")
	for _, key := range []string{k.token, k.name} {
		raw, err := c.Get(ctx, key).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"tkat_roundtrip", "tkrt_roundtrip", "tkid_roundtrip", "alice", "YWxpY2U"} {
			if strings.Contains(string(raw), secret) {
				t.Fatalf("Redis holds %q in clear", secret)
			}
		}
	}
	if g, _ := c.Get(ctx, k.gen).Result(); g != "1" {
		t.Fatalf("generation key holds %q, want 1", g)
	}
	keys, err := c.Keys(ctx, s.opt.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if strings.Contains(key, "alice") || (key != k.token && key != k.gen && key != k.name) {
			t.Fatalf("keys after one save: %q, want the token, generation and name keys", keys)
		}
	}
	if len(keys) != 3 {
		t.Fatalf("keys after one save: %q, want 3", keys)
	}

	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
	}
	if n, _ := c.Exists(ctx, k.token, k.gen, k.name).Result(); n != 0 {
		t.Fatalf("%d keys left after Delete", n)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	if err := s.Save(ctx, "alice", record(1, "again")); err != nil {
		t.Fatalf("after a purge, generation 1 again: %v", err)
	}
	for _, r := range []*storage.Record{nil, {Generation: 2, State: storage.Live}, {State: storage.Live, Token: testToken("x")}} {
		if err := s.Save(ctx, "alice", r); err == nil || !strings.HasPrefix(err.Error(), "redisstore: ") {
			t.Fatalf("Save of an invalid record %v: got %v, want a redisstore error", r, err)
		}
	}
}

// TestConditionalSave: a write must name the stored generation; anything
// else is refused with ErrConflict and leaves the entry as it was.
func TestConditionalSave(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	for _, step := range []struct {
		name     string
		gen      uint64
		conflict bool
		stored   uint64 // the generation stored afterwards
	}{
		{"first write", 1, false, 1},
		{"first write again", 1, true, 1},
		{"a generation skipped", 3, true, 1},
		{"next", 2, false, 2},
		{"late retry of the previous", 2, true, 2},
		{"rollback to the first", 1, true, 2},
		{"next again", 3, false, 3},
	} {
		err := s.Save(ctx, "alice", record(step.gen, step.name))
		if got := errors.Is(err, storage.ErrConflict); got != step.conflict || (err != nil && !step.conflict) {
			t.Fatalf("%s: Save of generation %d: got %v, want conflict %v", step.name, step.gen, err, step.conflict)
		}
		if err != nil {
			noSecret(t, err)
			if errors.Is(err, ErrLeaseLost) {
				t.Fatalf("%s: %v matches ErrLeaseLost without a lock", step.name, err)
			}
		}
		got, err := s.generation(ctx, "alice")
		if err != nil || got != step.stored {
			t.Fatalf("%s: stored generation %d, %v; want %d", step.name, got, err, step.stored)
		}
	}
	storedIs(t, s, "alice", 3, "next again")
}

// TestConcurrentSaves: 8 stores race to write each next generation; every
// generation is written exactly once.
func TestConcurrentSaves(t *testing.T) {
	c := needRedis(t)
	base := newStore(t, c, nil)
	ctx := context.Background()
	const writers, gens = 8, 20
	wins := make([]int, gens+1)
	errs := make(chan error, writers)
	won := make(chan uint64, writers*gens)
	for range writers {
		s := twin(t, base)
		go func() {
			for g := uint64(1); g <= gens; g++ {
				err := s.Save(ctx, "alice", record(g, "w"))
				switch {
				case err == nil:
					won <- g
				case !errors.Is(err, storage.ErrConflict):
					errs <- err
					return
				}
				// Wait until someone wrote g before trying g+1.
				for {
					cur, err := s.generation(ctx, "alice")
					if err != nil {
						errs <- err
						return
					}
					if cur >= g {
						break
					}
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := within(t, errs, "a writer finishing"); err != nil {
			t.Fatal(err)
		}
	}
	close(won)
	for g := range won {
		wins[g]++
	}
	for g := 1; g <= gens; g++ {
		if wins[g] != 1 {
			t.Fatalf("generation %d written %d times, want once", g, wins[g])
		}
	}
}

// TestTombstone: an ended record is an ordinary record: it loads as ended,
// a write derived from before it is refused, and a new login replaces it.
func TestTombstone(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	if err := storage.SaveToken(ctx, s, "alice", testToken("v1")); err != nil {
		t.Fatal(err)
	}
	ended := &storage.Record{Generation: 2, State: storage.Ended, Reason: "revoked"}
	if err := s.Save(ctx, "alice", ended); err != nil {
		t.Fatal(err)
	}
	r, err := s.Load(ctx, "alice")
	if err != nil || r.State != storage.Ended || r.Token != nil || r.Reason != "revoked" || r.Generation != 2 {
		t.Fatalf("Load of a tombstone: %v, %v", r, err)
	}
	if _, err := storage.LoadToken(ctx, s, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LoadToken of a tombstone: got %v, want ErrNotFound", err)
	}
	if err := s.Save(ctx, "alice", record(2, "late refresh")); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a refresh derived from before the tombstone: got %v, want ErrConflict", err)
	}
	if err := storage.SaveToken(ctx, s, "alice", testToken("login")); err != nil {
		t.Fatal(err)
	}
	storedIs(t, s, "alice", 3, "login")
}

// v1Value returns the storage package's golden version 1 entry, sealed
// with the raw key 0, 1, …, 31 for the entry "golden": byte for byte what
// the previous release of this package kept under an entry's token key.
func v1Value(t testing.TB) (storage.Key, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "golden", "v1-raw.tok"))
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i)
	}
	k, err := storage.RawKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k, b
}

// TestPreviousRelease: a value written by the previous release (a sealed
// version 1 token, no generation key) loads as generation 1, conflicts
// with a first write, and is upgraded by the next write.
func TestPreviousRelease(t *testing.T) {
	c := needRedis(t)
	key, v1 := v1Value(t)
	s, err := New(c, key, &Options{Prefix: testPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := s.keys("golden")
	if err := c.Set(ctx, k.token, v1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Load(ctx, "golden")
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != 1 || r.State != storage.Live || r.Token.AccessToken != "tkat_sample-access" {
		t.Fatalf("previous release's value: %v, want generation 1, live, the sample token", r)
	}
	if g, err := s.generation(ctx, "golden"); g != 1 || err != nil {
		t.Fatalf("generation: %d, %v; want 1", g, err)
	}
	if err := s.Save(ctx, "golden", record(1, "rival first write")); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a first write over the previous release's value: got %v, want ErrConflict", err)
	}
	r.Token.AccessToken = "tkat_upgraded"
	r.Generation++
	if err := s.Save(ctx, "golden", r); err != nil {
		t.Fatal(err)
	}
	if g, _ := c.Get(ctx, k.gen).Result(); g != "2" {
		t.Fatalf("generation key after the upgrade: %q, want 2", g)
	}
	b, _ := c.Get(ctx, k.token).Bytes()
	if len(b) < 5 || b[4] != 2 {
		t.Fatal("the upgraded value is not format version 2")
	}
	got, err := s.Load(ctx, "golden")
	if err != nil || got.Generation != 2 || got.Token.AccessToken != "tkat_upgraded" {
		t.Fatalf("after the upgrade: %v, %v", got, err)
	}
}

// TestGenerationKeyAgrees: the generation key the scripts compare must
// agree with the generation sealed in the record; any disagreement, and a
// generation key in another form, is ErrCorrupt.
func TestGenerationKeyAgrees(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, s *Store, k entryKeys)
	}{
		{"raised", func(t *testing.T, s *Store, k entryKeys) { c.Set(ctx, k.gen, "5", 0) }},
		{"lowered", func(t *testing.T, s *Store, k entryKeys) { c.Set(ctx, k.gen, "1", 0) }},
		{"leading zero", func(t *testing.T, s *Store, k entryKeys) { c.Set(ctx, k.gen, "02", 0) }},
		{"zero", func(t *testing.T, s *Store, k entryKeys) { c.Set(ctx, k.gen, "0", 0) }},
		{"not a number", func(t *testing.T, s *Store, k entryKeys) { c.Set(ctx, k.gen, "two", 0) }},
		{"deleted", func(t *testing.T, s *Store, k entryKeys) { c.Del(ctx, k.gen) }},
		{"record deleted", func(t *testing.T, s *Store, k entryKeys) { c.Del(ctx, k.token) }},
		{"previous release's value put back", func(t *testing.T, s *Store, k entryKeys) {
			_, v1 := v1Value(t)
			c.Set(ctx, k.token, v1, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, c, nil)
			for g := uint64(1); g <= 2; g++ {
				if err := s.Save(ctx, "alice", record(g, "alice")); err != nil {
					t.Fatal(err)
				}
			}
			tc.tamper(t, s, s.keys("alice"))
			_, err := s.Load(ctx, "alice")
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Load: got %v, want ErrCorrupt", err)
			}
			noSecret(t, err)
		})
	}
}

// TestTampered: a value altered in Redis, or copied to another entry's key,
// fails to load with ErrCorrupt.
func TestTampered(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, s *Store, tk string)
	}{
		{"byte flipped", func(t *testing.T, s *Store, tk string) {
			b, err := c.GetRange(ctx, tk, 40, 40).Bytes()
			if err != nil || len(b) != 1 {
				t.Fatalf("GETRANGE: %q, %v", b, err)
			}
			if err := c.SetRange(ctx, tk, 40, string([]byte{b[0] ^ 1})).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"last byte flipped", func(t *testing.T, s *Store, tk string) {
			n, err := c.StrLen(ctx, tk).Result()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := c.GetRange(ctx, tk, n-1, n-1).Bytes()
			c.SetRange(ctx, tk, n-1, string([]byte{b[0] ^ 0x80}))
		}},
		{"truncated", func(t *testing.T, s *Store, tk string) {
			b, _ := c.Get(ctx, tk).Bytes()
			c.Set(ctx, tk, b[:len(b)-1], 0)
		}},
		{"replaced", func(t *testing.T, s *Store, tk string) {
			c.Set(ctx, tk, "not a token", 0)
		}},
		{"copied from another entry", func(t *testing.T, s *Store, tk string) {
			if err := s.Save(ctx, "mallory", record(1, "mallory")); err != nil {
				t.Fatal(err)
			}
			b, _ := c.Get(ctx, s.keys("mallory").token).Bytes()
			c.Set(ctx, tk, b, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, c, nil)
			if err := s.Save(ctx, "alice", record(1, "alice")); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, s, s.keys("alice").token)
			_, err := s.Load(ctx, "alice")
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Load: got %v, want ErrCorrupt", err)
			}
			noSecret(t, err)
		})
	}
}

// TestOtherKey: a value sealed with another key is ErrCorrupt too.
func TestOtherKey(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	a := newStore(t, c, nil)
	_, other := newKeyHex(t)
	b, err := New(c, other, &Options{Prefix: a.opt.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Save(ctx, "alice", record(1, "alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(ctx, "alice"); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Load with another key: got %v, want ErrCorrupt", err)
	}
}

// TestPlantedHugeValue (issue 16): a huge value planted under an entry's
// key is measured in Redis and refused without being sent, so loading it
// allocates next to nothing, whether or not a generation key sits beside
// it. Before, the whole value was read (64 MiB allocated) and only then
// found too large.
func TestPlantedHugeValue(t *testing.T) {
	c := needRedis(t)
	ctx := context.Background()
	const huge = 64 << 20
	planted := strings.Repeat("x", huge)
	for _, withGen := range []bool{false, true} {
		t.Run(map[bool]string{false: "previous release's layout", true: "with a generation key"}[withGen], func(t *testing.T) {
			s := newStore(t, c, nil)
			k := s.keys("alice")
			if err := c.Set(ctx, k.token, planted, 0).Err(); err != nil {
				t.Fatal(err)
			}
			defer c.Del(ctx, k.token, k.gen)
			if withGen {
				c.Set(ctx, k.gen, "7", 0)
			}
			s.Load(ctx, "alice") // warm up: script cache, connection
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := s.Load(ctx, "alice")
			runtime.ReadMemStats(&after)
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("Load of a planted %d-byte value: got %v, want ErrCorrupt", huge, err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
				t.Fatalf("Load of a planted %d-byte value allocated %d bytes, want under 1 MiB", huge, got)
			}
		})
	}
}

// TestSaveRefusesWhatNoLoadAccepts: a record whose sealed form would be
// larger than a load accepts is refused before anything is written, and so
// is a name longer than MaxNameLen.
func TestSaveRefusesWhatNoLoadAccepts(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	big := testToken("big").WithExtra(map[string]any{"id_token": strings.Repeat("y", maxValue)})
	err := s.Save(ctx, "alice", storage.NewRecord(0, big))
	if err == nil || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Save of a record over the limit: got %v, want a refusal", err)
	}
	noSecret(t, err)
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after the refused save: got %v, want ErrNotFound", err)
	}
	long := strings.Repeat("n", MaxNameLen+1)
	if err := s.Save(ctx, long, record(1, "long")); err == nil || len(err.Error()) > 200 {
		t.Fatalf("Save under a name over MaxNameLen: got %v, want a short refusal", err)
	}
	if err := s.Save(ctx, long[:MaxNameLen], record(1, "long")); err != nil {
		t.Fatalf("Save under a name of MaxNameLen bytes: %v", err)
	}
}

// noSecret fails t if err mentions a token value.
func noSecret(t *testing.T, err error) {
	t.Helper()
	for _, p := range []string{"tkat_", "tkrt_", "tkid_"} {
		if strings.Contains(err.Error(), p) {
			t.Fatalf("error %q holds a secret", err)
		}
	}
	if !strings.HasPrefix(err.Error(), "redisstore: ") {
		t.Fatalf("error %q does not start with the package name", err)
	}
}

// TestUnavailable: every operation against a Redis that is not there, or
// that never answers, fails with ErrUnavailable, and says nothing secret.
func TestUnavailable(t *testing.T) {
	const opTimeout = 300 * time.Millisecond
	closed, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// A server that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	for _, tc := range []struct{ name, addr string }{
		{"closed port", net.JoinHostPort("127.0.0.1", itoa(closed))},
		{"silent server", silent.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: tc.addr})
			defer c.Close()
			_, key := newKeyHex(t)
			s, err := New(c, key, &Options{OpTimeout: opTimeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for _, op := range []struct {
				name string
				f    func() error
			}{
				{"load", func() error { _, err := s.Load(ctx, "alice"); return err }},
				{"save", func() error { return s.Save(ctx, "alice", record(1, "alice")) }},
				{"delete", func() error { return s.Delete(ctx, "alice") }},
				{"lock", func() error { _, err := s.Lock(ctx, "alice"); return err }},
				{"list", func() error { return s.List(ctx, func(string) bool { return true }) }},
				{"wait", func() error { _, err := s.WaitGeneration(ctx, "alice", 0); return err }},
			} {
				done := make(chan error, 1)
				go func() { done <- op.f() }()
				err := within(t, done, op.name+" against "+tc.name)
				if !errors.Is(err, storage.ErrUnavailable) {
					t.Fatalf("%s: got %v, want ErrUnavailable", op.name, err)
				}
				noSecret(t, err)
			}
		})
	}
}

// TestCallerContext: when the caller's context ends first, the error says
// so rather than blaming Redis.
func TestCallerContext(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, context.Canceled) || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Load with a cancelled context: got %v, want context.Canceled alone", err)
	}
	if err := s.Save(ctx, "alice", record(1, "alice")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with a cancelled context: got %v, want context.Canceled", err)
	}
	if _, err := s.WaitGeneration(ctx, "alice", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitGeneration with a cancelled context: got %v, want context.Canceled", err)
	}
}

// TestRefusedErrors: errors Redis answers that are not outages (here, the
// entry's key holding another type) are not reported as ErrUnavailable.
func TestRefusedErrors(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	if err := c.LPush(ctx, s.keys("alice").token, "x").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctx, "alice")
	if err == nil || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Load of a list: got %v, want a WRONGTYPE error", err)
	}
	noSecret(t, err)
}
