package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
)

// newKeyHex returns a random 32-byte key in hex, as KeyFromEnv reads it,
// and the same key as a storage.Key.
func newKeyHex(t testing.TB) (string, storage.Key) {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k, err := storage.RawKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b), k
}

// testPrefix is a key prefix of t's own, so that tests do not see each
// other's entries.
func testPrefix(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "test:" + t.Name() + ":" + hex.EncodeToString(b) + ":"
}

// newStore returns a Store over c with a fresh key and prefix.
func newStore(t testing.TB, c redis.UniversalClient, opts *Options) *Store {
	t.Helper()
	_, key := newKeyHex(t)
	o := Options{Prefix: testPrefix(t)}
	if opts != nil {
		o = *opts
		if o.Prefix == "" {
			o.Prefix = testPrefix(t)
		}
	}
	s, err := New(c, key, &o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// procServer behaves like Okta or Auth0 with rotation on.
func procServer(t testing.TB) *authserver.Server {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	t.Cleanup(srv.Close)
	return srv
}

// newSession primes a session from srv in the shared redis-server and
// returns what children need to share it, and a Store of the parent's on it.
func newSession(t testing.TB, srv *authserver.Server, leaseTTL time.Duration) (session, *Store) {
	t.Helper()
	c := needRedis(t)
	keyHex, key := newKeyHex(t)
	s := session{addr: shared.addr, keyHex: keyHex, prefix: testPrefix(t), tokenURL: srv.Endpoint().TokenURL, leaseTTL: leaseTTL}
	st, err := New(c, key, &Options{Prefix: s.prefix, LeaseTTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(context.Background(), entry, srv.Mint("openid", "offline_access")); err != nil {
		t.Fatal(err)
	}
	return s, st
}

// expire makes the stored session's access token look expired, keeping its
// refresh token, as if its lifetime had passed.
func expire(t testing.TB, st *Store) {
	t.Helper()
	ctx := context.Background()
	tok, err := st.Load(ctx, entry)
	if err != nil {
		t.Fatal(err)
	}
	tok.Expiry = time.Now().Add(-time.Minute)
	if err := st.Save(ctx, entry, tok); err != nil {
		t.Fatal(err)
	}
}

// shareOneRefresh runs expiries rounds of procs children with goroutines
// Sources each on an expired session, checks that each round made exactly
// one refresh, no reuse detection and no failed call, and returns the
// refresh grants per expiry.
func shareOneRefresh(t testing.TB, procs, goroutines, expiries int, leaseTTL time.Duration) []int64 {
	srv := procServer(t)
	sess, st := newSession(t, srv, leaseTTL)
	f := startFleet(t, sess, procs, goroutines)
	var grants []int64
	for round := range expiries {
		expire(t, st)
		before := srv.Stats()
		lines := f.round()
		after := srv.Stats()
		got := after.RefreshGrants - before.RefreshGrants
		grants = append(grants, got)
		if got != 1 {
			t.Fatalf("expiry %d: %d processes × %d goroutines made %d refreshes, want 1", round, procs, goroutines, got)
		}
		if after.ReuseDetections != 0 {
			t.Fatalf("expiry %d: %d reuse detections", round, after.ReuseDetections)
		}
		if err := proctest.SameValidToken(srv, lines); err != nil {
			t.Fatalf("expiry %d: %v", round, err)
		}
	}
	return grants
}

func itoa(i int) string { return strconv.Itoa(i) }
