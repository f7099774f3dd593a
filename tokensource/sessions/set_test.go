package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/bubble"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/tokensource/sessions"
	"github.com/tokenkeep/tokenkeep/transport"
)

// newSet returns a Set closed at the end of the test.
func newSet(t *testing.T, cfg sessions.Config) *sessions.Set {
	t.Helper()
	set, err := sessions.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return set
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	p := &provider{}
	perUser := func(string) (tokensource.Refresher, error) { return p, nil }
	cases := []struct {
		name string
		cfg  sessions.Config
	}{
		{name: "no store", cfg: sessions.Config{Refresher: p}},
		{name: "no refresher", cfg: sessions.Config{Store: storage.NewMemory()}},
		{name: "both refreshers", cfg: sessions.Config{Refresher: p, RefresherFor: perUser, Store: storage.NewMemory()}},
		{name: "invalid refresher", cfg: sessions.Config{Refresher: &tokensource.ConfigRefresher{}, Store: storage.NewMemory()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if set, err := sessions.New(tc.cfg); err == nil {
				set.Close()
				t.Fatal("New: got no error")
			}
		})
	}
}

// TestSetOpensOnFirstUse: one Source per key, made on first use with the
// key's own Refresher.
func TestSetOpensOnFirstUse(t *testing.T) {
	p := &provider{}
	var made sync.Map // key → calls
	set := newSet(t, sessions.Config{
		RefresherFor: func(key string) (tokensource.Refresher, error) {
			n, _ := made.LoadOrStore(key, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			if key == "mallory" {
				return nil, errors.New("no such tenant")
			}
			return p, nil
		},
		Store: storage.NewMemory(),
	})
	a1, err := set.Source("alice")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := set.Source("alice")
	b, _ := set.Source("bob")
	if a1 != a2 || a1 == b {
		t.Errorf("Sources: alice twice %p %p, bob %p; want one per key", a1, a2, b)
	}
	if _, err := set.Source("mallory"); err == nil {
		t.Error("Source with a failing RefresherFor: got no error")
	}
	for _, key := range []string{"alice", "bob"} {
		if n, _ := made.Load(key); n.(*atomic.Int32).Load() != 1 {
			t.Errorf("RefresherFor(%q) calls: got %d, want 1", key, n.(*atomic.Int32).Load())
		}
	}
	if got, want := set.List(), []string{"alice", "bob"}; !slices.Equal(got, want) {
		t.Errorf("List: got %q, want %q", got, want)
	}
}

// TestSetClients: every user's client carries that user's token, and all
// send through the one base transport.
func TestSetClients(t *testing.T) {
	p := &provider{}
	base := &recorder{}
	set := newSet(t, sessions.Config{Refresher: p, Store: storage.NewMemory(), Base: base, Hosts: []string{"api.example.com"}})
	ctx := context.Background()
	users := []string{"alice", "bob", "carol"}
	var clients []*http.Client
	for _, u := range users {
		tok := p.login(u)
		if err := set.Put(ctx, u, tok); err != nil {
			t.Fatal(err)
		}
		c, err := set.Client(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := set.Client(ctx, u); again != c {
			t.Errorf("%s: a second Client made another client", u)
		}
		if err := get(c); err != nil {
			t.Fatal(err)
		}
		if got, want := base.last(), "Bearer "+tok.AccessToken; got != want {
			t.Errorf("%s: Authorization: got %q, want %q", u, got, want)
		}
		clients = append(clients, c)
	}
	for i, c := range clients {
		tr, ok := c.Transport.(*transport.Transport)
		if !ok || tr.Base != base {
			t.Errorf("%s: client transport %T does not send through the shared base", users[i], c.Transport)
		}
	}
	if _, err := set.Client(ctx, "dave"); !errors.Is(err, tokensource.ErrReauthRequired) {
		t.Errorf("Client for a user who never logged in: got %v, want ErrReauthRequired", err)
	}
}

// TestSetIdleClose: sessions unused for the idle time are closed; a client
// keeps working through a close; nothing is left running once every
// session closed.
func TestSetIdleClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &provider{}
		base := &recorder{}
		before := bubble.Goroutines()
		set := newSet(t, sessions.Config{Refresher: p, Store: storage.NewMemory(), Base: base, Idle: 10 * time.Minute})
		ctx := context.Background()
		for _, u := range []string{"alice", "bob"} {
			if err := set.Put(ctx, u, p.login(u)); err != nil {
				t.Fatal(err)
			}
		}
		alice, err := set.Client(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Minute)
		if err := get(alice); err != nil {
			t.Fatal(err)
		}
		time.Sleep(8 * time.Minute)
		synctest.Wait()
		if got, want := set.List(), []string{"alice"}; !slices.Equal(got, want) {
			t.Errorf("open after 13 min (bob unused since 0, alice since 5 min): got %q, want %q", got, want)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got := set.List(); len(got) != 0 {
			t.Errorf("open after 23 min: got %q, want none", got)
		}
		if extra := bubble.Goroutines() - before; extra > 0 {
			t.Errorf("goroutines with no session open: %d more than before, want 0", extra)
		}
		if err := get(alice); err != nil {
			t.Fatalf("alice's client after her session closed: %v", err)
		}
		if got, want := set.List(), []string{"alice"}; !slices.Equal(got, want) {
			t.Errorf("open after alice's request: got %q, want %q", got, want)
		}
	})
}

// TestSetIdleKeepsUnsavedToken: a session whose token is not saved yet is
// not closed for idleness; once saved, it is.
func TestSetIdleKeepsUnsavedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &provider{}
		store := &flaky{Memory: storage.NewMemory()}
		set := newSet(t, sessions.Config{Refresher: p, Store: store, Idle: time.Minute})
		ctx := context.Background()
		store.setFailing(true)
		tok := p.login("alice")
		if err := set.Put(ctx, "alice", tok); !errors.Is(err, tokensource.ErrNotSaved) {
			t.Fatalf("Put on a failing store: got %v, want ErrNotSaved", err)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got, want := set.List(), []string{"alice"}; !slices.Equal(got, want) {
			t.Fatalf("open while the token is unsaved: got %q, want %q", got, want)
		}
		store.setFailing(false)
		time.Sleep(10 * time.Minute) // the save retry, then the sweep
		synctest.Wait()
		if got := set.List(); len(got) != 0 {
			t.Errorf("open once saved and idle: got %q, want none", got)
		}
		stored, err := storage.LoadToken(ctx, store, "alice")
		if err != nil || stored.RefreshToken != tok.RefreshToken {
			t.Errorf("stored: got %v, %v; want the Put token", stored, err)
		}
	})
}

// TestSetCloseReportsNotSaved: Close says when a token is lost.
func TestSetCloseReportsNotSaved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &provider{}
		store := &flaky{Memory: storage.NewMemory()}
		set, err := sessions.New(sessions.Config{Refresher: p, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := set.Put(ctx, "bob", p.login("bob")); err != nil {
			t.Fatal(err)
		}
		store.setFailing(true)
		if err := set.Put(ctx, "alice", p.login("alice")); !errors.Is(err, tokensource.ErrNotSaved) {
			t.Fatalf("Put on a failing store: got %v, want ErrNotSaved", err)
		}
		if err := set.Close(); !errors.Is(err, tokensource.ErrNotSaved) {
			t.Errorf("Close with alice's token unsaved: got %v, want ErrNotSaved", err)
		}
		if _, err := set.Client(ctx, "bob"); !errors.Is(err, tokensource.ErrClosed) {
			t.Errorf("Client after Close: got %v, want ErrClosed", err)
		}
		if err := set.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestSetListStored(t *testing.T) {
	p := &provider{}
	ctx := context.Background()
	mem := storage.NewMemory()
	for _, u := range []string{"carol", "alice", "bob"} {
		if err := storage.SaveToken(ctx, mem, u, p.login(u)); err != nil {
			t.Fatal(err)
		}
	}
	set := newSet(t, sessions.Config{Refresher: p, Store: mem})
	if _, err := set.Source("alice"); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := set.ListStored(ctx, func(key string) bool { keys = append(keys, key); return true }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if want := []string{"alice", "bob", "carol"}; !slices.Equal(keys, want) {
		t.Errorf("ListStored: got %q, want %q", keys, want)
	}
	if got, want := set.List(), []string{"alice"}; !slices.Equal(got, want) {
		t.Errorf("List: got %q, want %q", got, want)
	}
	unlisted := newSet(t, sessions.Config{Refresher: p, Store: plain{mem}})
	err := unlisted.ListStored(ctx, func(string) bool { return true })
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListStored on a store that cannot list: got %v, want errors.ErrUnsupported", err)
	}
}

func TestSetRevoke(t *testing.T) {
	p := &provider{}
	set := newSet(t, sessions.Config{Refresher: p, Store: storage.NewMemory()})
	ctx := context.Background()
	if err := set.Put(ctx, "alice", p.login("alice")); err != nil {
		t.Fatal(err)
	}
	if err := set.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if p.revoked != 1 {
		t.Errorf("revocations at the provider: got %d, want 1", p.revoked)
	}
	if _, err := set.Client(ctx, "alice"); !errors.Is(err, tokensource.ErrReauthRequired) {
		t.Errorf("Client after Revoke: got %v, want ErrReauthRequired", err)
	}
	if err := set.Put(ctx, "alice", p.login("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := set.Client(ctx, "alice"); err != nil {
		t.Errorf("Client after a new login: %v", err)
	}
}

// TestSetRefreshesWithoutCallers: the Set's Scheduler refreshes every
// open session once per lifetime, with no request and no goroutine per
// session.
func TestSetRefreshesWithoutCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 200
		p := &provider{}
		before := bubble.Goroutines()
		set := newSet(t, sessions.Config{Refresher: p, Store: storage.NewMemory(), Idle: -1})
		ctx := context.Background()
		for i := range n {
			u := fmt.Sprintf("user%04d", i)
			if err := set.Put(ctx, u, p.login(u)); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if extra := bubble.Goroutines() - before; extra > 1 {
			t.Errorf("goroutines for %d open sessions: %d more than before, want at most 1 (the scheduler's)", n, extra)
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		for i := range n {
			u := fmt.Sprintf("user%04d", i)
			if got := p.refreshes(u); got != 3 {
				t.Errorf("%s: refreshes in 3 h: got %d, want 3", u, got)
			}
		}
	})
}

// TestSetConcurrentUse runs every method from many goroutines while
// sessions are closed for idleness underneath (run it with -race).
func TestSetConcurrentUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &provider{life: 10 * time.Minute}
		set := newSet(t, sessions.Config{Refresher: p, Store: storage.NewMemory(), Base: &recorder{}, Idle: time.Minute})
		ctx := context.Background()
		users := []string{"u0", "u1", "u2", "u3", "u4"}
		for _, u := range users {
			if err := set.Put(ctx, u, p.login(u)); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for range 200 {
					u := users[rng.IntN(len(users))]
					switch rng.IntN(6) {
					case 0:
						c, err := set.Client(ctx, u)
						if err != nil {
							t.Errorf("Client(%s): %v", u, err)
							return
						}
						if err := get(c); err != nil {
							t.Errorf("request as %s: %v", u, err)
						}
					case 1:
						if _, err := set.Source(u); err != nil {
							t.Errorf("Source(%s): %v", u, err)
						}
					case 2:
						if err := set.Put(ctx, u, p.login(u)); err != nil {
							t.Errorf("Put(%s): %v", u, err)
						}
					case 3:
						set.List()
					case 4:
						time.Sleep(time.Duration(rng.IntN(120)) * time.Second)
					case 5:
						if src, err := set.Source(u); err == nil {
							src.TokenContext(ctx) // may find it closed for idleness: no error to check
						}
					}
				}
			})
		}
		wg.Wait()
	})
}
