package redisstore

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// TestRedisRestart kills Redis (SIGKILL, with every write synced to the
// append-only file) under running Sources and starts it again on the same
// port and directory:
//
//   - a Source holding a fresh token keeps serving it from memory;
//   - a Source whose token turns stale during the outage keeps serving it,
//     and its background refresh fails with an error matching
//     storage.ErrUnavailable without calling the provider (it could not take
//     the lock);
//   - a Source with nothing in memory, and the store's own calls, fail with
//     errors matching storage.ErrUnavailable within OpTimeout, and a Delete
//     deletes nothing;
//   - after the restart every stored token is there, and the stale Source
//     refreshes once.
func TestRedisRestart(t *testing.T) {
	if shared == nil {
		t.Skip(noRedis)
	}
	const opTimeout = 300 * time.Millisecond
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rs, err := startRedis(port, dir, "--appendfsync", "always")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { rs.stop() }()

	srv := procServer(t)
	_, key := newKeyHex(t)
	st, err := New(newClient(t, rs.addr), key, &Options{OpTimeout: opTimeout, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fresh := srv.Mint("openid", "offline_access")
	stale := srv.Mint("openid", "offline_access")
	// Six seconds left: stale after 3.5 to 3.9 s, no longer served after 5.4 s.
	stale.Expiry, stale.ExpiresIn = time.Now().Add(6*time.Second), 0
	if err := storage.SaveToken(ctx, st, "fresh", fresh); err != nil {
		t.Fatal(err)
	}
	if err := storage.SaveToken(ctx, st, "stale", stale); err != nil {
		t.Fatal(err)
	}
	r, err := tokensource.NewConfigRefresher(proctest.Config(srv.Endpoint().TokenURL), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan tokensource.Event, 16)
	hook := tokensource.WithHook(func(e tokensource.Event) {
		select {
		case events <- e:
		default:
		}
	})
	newSource := func(name string) *tokensource.Source {
		src, err := tokensource.New(r, st, name, hook, tokensource.WithRefreshTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	a, b := newSource("fresh"), newSource("stale")
	mustToken(t, a, fresh.AccessToken)
	mustToken(t, b, stale.AccessToken)

	rs.kill()
	outage := time.Now()
	for range 100 {
		mustToken(t, a, fresh.AccessToken)
	}
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"load", func() error { _, err := st.Load(ctx, "fresh"); return err }},
		{"save", func() error { return storage.SaveToken(ctx, st, "other", fresh) }},
		{"delete", func() error { return st.Delete(ctx, "fresh") }},
		{"lock", func() error { _, err := st.Lock(ctx, "fresh"); return err }},
		{"new source", func() error { _, err := newSource("fresh").TokenContext(ctx); return err }},
	} {
		start := time.Now()
		err := op.f()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("%s during the outage: got %v, want ErrUnavailable", op.name, err)
		}
		if errors.Is(err, tokensource.ErrReauthRequired) {
			t.Fatalf("%s during the outage: %v asks for a new login", op.name, err)
		}
		if took := time.Since(start); took > 3*opTimeout {
			t.Fatalf("%s during the outage took %v", op.name, took)
		}
	}

	time.Sleep(time.Until(stale.Expiry.Add(-1800 * time.Millisecond)))
	if time.Until(stale.Expiry) < 900*time.Millisecond {
		t.Fatal("the outage checks took so long that the stale token expired")
	}
	mustToken(t, b, stale.AccessToken) // stale: served while it refreshes in the background
	if !waitEvent(events, 3*time.Second, func(e tokensource.Event) bool {
		return e.Key == "stale" && e.Kind == tokensource.Failed && errors.Is(e.Err, storage.ErrUnavailable)
	}) {
		t.Fatal("no failed background refresh matching ErrUnavailable")
	}
	if n := srv.Stats().RefreshGrants; n != 0 {
		t.Fatalf("%d refreshes during the outage, want 0: nobody could take the lock", n)
	}
	mustToken(t, a, fresh.AccessToken)

	if rs, err = startRedis(port, dir, "--appendfsync", "always"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Redis was down for %v", time.Since(outage).Round(time.Millisecond))
	for name, want := range map[string]*oauth2.Token{"fresh": fresh, "stale": stale} {
		got, err := storage.LoadToken(ctx, st, name)
		if err != nil {
			t.Fatalf("%s after the restart: %v", name, err)
		}
		if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken {
			t.Fatalf("%s after the restart is not the token saved before", name)
		}
	}
	if _, err := st.Load(ctx, "other"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the save that failed during the outage: got %v, want ErrNotFound", err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().RefreshGrants == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stale Source did not refresh after the restart")
		}
		b.TokenContext(ctx)
		time.Sleep(50 * time.Millisecond)
	}
	tok := mustToken(t, b, "")
	if tok.AccessToken == stale.AccessToken || !srv.AccessTokenActive(tok.AccessToken) {
		t.Fatal("the stale Source serves no new valid token after the restart")
	}
	saved, err := storage.LoadToken(ctx, st, "stale")
	if err != nil || saved.AccessToken != tok.AccessToken {
		t.Fatalf("the refreshed token was not saved (%v)", err)
	}
	if s := srv.Stats(); s.RefreshGrants != 1 || s.ReuseDetections != 0 {
		t.Fatalf("refresh grants %d, reuse detections %d; want 1 and 0", s.RefreshGrants, s.ReuseDetections)
	}
	if _, err := os.Stat(dir + "/appendonlydir"); err != nil {
		t.Fatalf("no append-only files: %v", err)
	}
}

// mustToken asks src for a token and checks it is want's, unless want is
// empty.
func mustToken(t *testing.T, src *tokensource.Source, want string) *oauth2.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := src.TokenContext(ctx)
	if err != nil {
		t.Fatalf("%v: %v", src, err)
	}
	if want != "" && tok.AccessToken != want {
		t.Fatalf("%v served another token", src)
	}
	return tok
}

// waitEvent waits up to d for an event that match accepts.
func waitEvent(events <-chan tokensource.Event, d time.Duration, match func(tokensource.Event) bool) bool {
	timeout := time.After(d)
	for {
		select {
		case e := <-events:
			if match(e) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}
