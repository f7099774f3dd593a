package redisstore

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// Static checks: a Store is both a Store and a Locker.
var (
	_ storage.Store  = (*Store)(nil)
	_ storage.Locker = (*Store)(nil)
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

func sameToken(t testing.TB, got, want *oauth2.Token) {
	t.Helper()
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken ||
		got.TokenType != want.TokenType || !got.Expiry.Equal(want.Expiry) ||
		!reflect.DeepEqual(got.Extra("id_token"), want.Extra("id_token")) ||
		!reflect.DeepEqual(got.Extra("scope"), want.Extra("scope")) {
		t.Fatal("the loaded token differs from the saved one")
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
		{name: "all set", client: c, key: key, opts: &Options{Prefix: "p:", LeaseTTL: time.Second, RenewEvery: 100 * time.Millisecond, LockPoll: time.Millisecond, OpTimeout: time.Second}, ok: true},
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
	tk, lk := s.keys("alice@example.com")
	// The first 16 bytes of SHA-256("alice@example.com").
	const hash = "ff8d9819fc0e12bf0d24892e45987e24"
	if want := "tokenkeep:{" + hash + "}:token"; tk != want {
		t.Fatalf("token key: got %q, want %q", tk, want)
	}
	if want := "tokenkeep:{" + hash + "}:lease"; lk != want {
		t.Fatalf("lease key: got %q, want %q", lk, want)
	}
	if other, _ := s.keys("bob@example.com"); other == tk {
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
	want := testToken("roundtrip")
	if err := s.Save(ctx, "alice", want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, got, want)

	tk, _ := s.keys("alice")
	raw, err := c.Get(ctx, tk).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{want.AccessToken, want.RefreshToken, "tkid_roundtrip", "alice"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("Redis holds %q in clear", secret)
		}
	}
	keys, err := c.Keys(ctx, s.opt.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != tk || strings.Contains(keys[0], "alice") {
		t.Fatalf("keys after one save: %q, want only %q", keys, tk)
	}

	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	if err := s.Save(ctx, "alice", nil); err == nil {
		t.Fatal("Save of a nil token succeeded")
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
			if err := s.Save(ctx, "mallory", testToken("mallory")); err != nil {
				t.Fatal(err)
			}
			mk, _ := s.keys("mallory")
			b, _ := c.Get(ctx, mk).Bytes()
			c.Set(ctx, tk, b, 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, c, nil)
			if err := s.Save(ctx, "alice", testToken("alice")); err != nil {
				t.Fatal(err)
			}
			tk, _ := s.keys("alice")
			tc.tamper(t, s, tk)
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
	if err := a.Save(ctx, "alice", testToken("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(ctx, "alice"); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Load with another key: got %v, want ErrCorrupt", err)
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
// that never answers, fails within OpTimeout with ErrUnavailable, and says
// nothing secret.
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
				{"save", func() error { return s.Save(ctx, "alice", testToken("alice")) }},
				{"delete", func() error { return s.Delete(ctx, "alice") }},
				{"lock", func() error { _, err := s.Lock(ctx, "alice"); return err }},
			} {
				start := time.Now()
				err := op.f()
				took := time.Since(start)
				if !errors.Is(err, storage.ErrUnavailable) {
					t.Fatalf("%s: got %v, want ErrUnavailable", op.name, err)
				}
				if took > opTimeout+200*time.Millisecond {
					t.Fatalf("%s took %v with OpTimeout %v", op.name, took, opTimeout)
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
	if err := s.Save(ctx, "alice", testToken("alice")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save with a cancelled context: got %v, want context.Canceled", err)
	}
}

// TestRefusedErrors: errors Redis answers that are not outages (here, the
// entry's key holding another type) are not reported as ErrUnavailable.
func TestRefusedErrors(t *testing.T) {
	c := needRedis(t)
	s := newStore(t, c, nil)
	ctx := context.Background()
	tk, _ := s.keys("alice")
	if err := c.LPush(ctx, tk, "x").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load(ctx, "alice")
	if err == nil || errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Load of a list: got %v, want a WRONGTYPE error", err)
	}
	noSecret(t, err)
}

// TestACLUser runs the store as a Redis user with only the permissions the
// package documentation lists.
func TestACLUser(t *testing.T) {
	admin := needRedis(t)
	ctx := context.Background()
	user := "tokens-" + strings.ReplaceAll(testPrefix(t), ":", "-")
	err := admin.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">pw-"+user,
		"~tokenkeep:*", "+get", "+set", "+del", "+pexpire", "+evalsha", "+eval", "+ping", "+@connection").Err()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Do(ctx, "ACL", "DELUSER", user)
	c := redis.NewClient(&redis.Options{Addr: shared.addr, Username: user, Password: "pw-" + user})
	defer c.Close()
	_, key := newKeyHex(t)
	s, err := New(c, key, &Options{Prefix: DefaultPrefix + strings.TrimPrefix(testPrefix(t), "test:")})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "alice", testToken("alice")); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	other, err := New(c, key, &Options{Prefix: "elsewhere:"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Save(ctx, "alice", testToken("alice")); err == nil {
		t.Fatal("the user wrote outside its prefix")
	}
}
