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
//   - a Source holding a stale token keeps serving it, and its background
//     refresh fails with an error matching storage.ErrUnavailable without
//     calling the provider (it could not take the lock);
//   - a Source with nothing in memory, and the store's own calls, fail with
//     errors matching storage.ErrUnavailable (not ErrReauthRequired) on
//     their own, without waiting for the caller's context, and a Delete
//     deletes nothing;
//   - after the restart every stored token is there, the save that failed
//     is not, and the stale Source refreshes once.
//
// Nothing here depends on how fast the machine is: the stale token is in
// its Source's early-refresh window from the start and valid for half an
// hour, and every wait is for an event, bounded only to catch a hang.
func TestRedisRestart(t *testing.T) {
	if shared == nil {
		t.Skip(noRedis)
	}
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
	c := newClient(t, rs.addr)
	// The Sources, and the checks after the restart, use st, whose
	// OpTimeout is the default: generous. The store's own calls during the
	// outage use short, over the same client, whose OpTimeout ends them
	// sooner than go-redis's redials would.
	st, err := New(c, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	short, err := New(c, key, &Options{OpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fresh := srv.Mint("openid", "offline_access")
	if err := storage.SaveToken(ctx, st, "fresh", fresh); err != nil {
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
	newSource := func(name string, opts ...tokensource.Option) *tokensource.Source {
		src, err := tokensource.New(r, st, name, append([]tokensource.Option{hook}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	a := newSource("fresh")
	mustToken(t, a, fresh.AccessToken)

	// The stale Source's token was granted for four hours and has half an
	// hour left: inside its one-hour early-refresh window, long before its
	// expiry. Put stores and serves it without asking for a refresh; the
	// first TokenContext, during the outage, starts one.
	b := newSource("stale", tokensource.WithEarlyRefresh(time.Hour))
	stale := srv.Mint("openid", "offline_access")
	stale.Expiry, stale.ExpiresIn = time.Now().Add(30*time.Minute), int64((4 * time.Hour).Seconds())
	if err := b.Put(ctx, stale); err != nil {
		t.Fatal(err)
	}

	rs.kill()
	outage := time.Now()
	for range 100 {
		mustToken(t, a, fresh.AccessToken)
	}
	for _, op := range []struct {
		name string
		f    func(ctx context.Context) error
	}{
		{"load", func(ctx context.Context) error { _, err := short.Load(ctx, "fresh"); return err }},
		{"save", func(ctx context.Context) error { return storage.SaveToken(ctx, short, "other", fresh) }},
		{"delete", func(ctx context.Context) error { return short.Delete(ctx, "fresh") }},
		{"lock", func(ctx context.Context) error { _, err := short.Lock(ctx, "fresh"); return err }},
		{"new source", func(ctx context.Context) error { _, err := newSource("fresh").TokenContext(ctx); return err }},
	} {
		// OpTimeout, not the caller's context, must end the call: had the
		// guard ended it, the error would be the guard's, not
		// ErrUnavailable.
		guard, cancel := context.WithTimeout(ctx, bound)
		err := op.f(guard)
		hung := guard.Err()
		cancel()
		if hung != nil {
			t.Fatalf("%s during the outage still waiting after %v (%v): OpTimeout did not end it", op.name, bound, err)
		}
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("%s during the outage: got %v, want ErrUnavailable", op.name, err)
		}
		if errors.Is(err, tokensource.ErrReauthRequired) {
			t.Fatalf("%s during the outage: %v asks for a new login", op.name, err)
		}
	}

	mustToken(t, b, stale.AccessToken) // stale: served while it refreshes in the background
	if !waitEvent(events, bound, func(e tokensource.Event) bool {
		return e.Key == "stale" && e.Kind == tokensource.Failed && errors.Is(e.Err, storage.ErrUnavailable)
	}) {
		t.Fatal("no failed background refresh matching ErrUnavailable")
	}
	if n := srv.Stats().RefreshGrants; n != 0 {
		t.Fatalf("%d refreshes during the outage, want 0: nobody could take the lock", n)
	}
	mustToken(t, a, fresh.AccessToken)
	served := mustToken(t, b, stale.AccessToken) // still served after its refresh failed

	if rs, err = startRedis(port, dir, "--appendfsync", "always"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Redis was down for %v", time.Since(outage).Round(time.Millisecond))
	// go-redis, after as many failed dials as its pool has connections,
	// answers with the last dial error and redials in the background once
	// a second: wait until the client sees the server again.
	if err := waitPing(c, nil); err != nil {
		t.Fatalf("the store's client after the restart: %v", err)
	}
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

	// After a failed background refresh a Source leaves the next one for an
	// eighth of the time left (minutes, here). Rather than wait, say the
	// token was refused: the next call refreshes, with the refresh token
	// the outage left the Source.
	b.Invalidate(served)
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

// mustToken asks src for a token, waiting up to bound, and checks it is
// want's, unless want is empty.
func mustToken(t *testing.T, src *tokensource.Source, want string) *oauth2.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
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

// waitEvent waits up to d for an event that match accepts, and reports
// whether one came.
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
