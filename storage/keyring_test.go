package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
)

// bigToken has a 16 KB id_token, as some providers' tokens grow with claims.
func bigToken() *oauth2.Token {
	t := sampleToken().WithExtra(map[string]any{"id_token": strings.Repeat("x", 16<<10), "scope": "openid"})
	return t
}

// newFakeKeyring returns a Keyring over kr. Its timeout is generous: a
// test about the timeout sets its own, inside a synctest bubble.
func newFakeKeyring(t testing.TB, kr *fakeKeyring, chunk int) *Keyring {
	t.Helper()
	k, err := NewKeyring("tokenkeep-test", &KeyringOptions{Backend: kr, Timeout: time.Minute, ChunkSize: chunk, LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringChunksLargeTokens(t *testing.T) {
	kr := &fakeKeyring{limit: 2000}
	k := newFakeKeyring(t, kr, 2000)
	if err := SaveToken(bg, k, "alice", bigToken()); err != nil {
		t.Fatal(err)
	}
	items := kr.len()
	if items < 9 {
		t.Fatalf("a 16 KB token in %d items; want it chunked", items)
	}
	got, err := LoadToken(bg, k, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got.Extra("id_token") != bigToken().Extra("id_token") {
		t.Fatal("id_token lost in chunking")
	}
	// A new value replaces the chunks, leaving no orphans.
	if err := SaveToken(bg, k, "alice", bigToken()); err != nil {
		t.Fatal(err)
	}
	if got := kr.len(); got != items {
		t.Fatalf("after a second save: %d items, want %d", got, items)
	}
	// A small value goes back to one item.
	if err := SaveToken(bg, k, "alice", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if got := kr.len(); got != 1 {
		t.Fatalf("after a small save: %d items, want 1", got)
	}
	if err := SaveToken(bg, k, "alice", bigToken()); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	if got := kr.len(); got != 0 {
		t.Fatalf("after Delete: %d items, want 0", got)
	}
	if _, err := k.Load(bg, "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
	}
	if err := k.Delete(bg, "alice"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
}

func TestKeyringUnchunkedRefusedByLimit(t *testing.T) {
	kr := &fakeKeyring{limit: 2000}
	k := newFakeKeyring(t, kr, -1)
	err := SaveToken(bg, k, "alice", bigToken())
	if err == nil {
		t.Fatal("a 16 KB value went into a 2,000-byte keyring")
	}
	noSecrets(t, err)
}

func TestKeyringBadValues(t *testing.T) {
	kr := &fakeKeyring{}
	k := newFakeKeyring(t, kr, 1000)
	if err := SaveToken(bg, k, "alice", bigToken()); err != nil {
		t.Fatal(err)
	}
	manifest, _ := kr.Get("tokenkeep-test", "alice")
	m, _ := parseManifest(manifest)

	for _, tc := range []struct {
		name  string
		setup func()
	}{
		{"not ours", func() { kr.Set("tokenkeep-test", "alice", "hunter2") }},
		{"bad base64", func() { kr.Set("tokenkeep-test", "alice", singlePrefix+"***") }},
		{"not a token", func() { kr.Set("tokenkeep-test", "alice", singlePrefix+"e30=") }},
		{"bad manifest", func() { kr.Set("tokenkeep-test", "alice", manifestPrefix+"x") }},
		{"missing chunk", func() {
			kr.Set("tokenkeep-test", "alice", manifest)
			kr.Delete("tokenkeep-test", chunkUser("alice", m.gen, 3))
		}},
		{"altered chunk", func() {
			kr.Set("tokenkeep-test", "alice", manifest)
			kr.Set("tokenkeep-test", chunkUser("alice", m.gen, 3), "AAAA")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			tok, err := k.Load(bg, "alice")
			if !errors.Is(err, ErrCorrupt) || tok != nil {
				t.Fatalf("got (%v, %v), want ErrCorrupt", tok != nil, err)
			}
			noSecrets(t, err, "hunter2")
		})
	}
}

func TestKeyringHangingBackendTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kr := &fakeKeyring{hang: make(chan struct{})}
		defer close(kr.hang)
		k, err := NewKeyring("tokenkeep-test", &KeyringOptions{Backend: kr, Timeout: 200 * time.Millisecond, LockDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = k.Load(bg, "alice")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d != 200*time.Millisecond {
			t.Fatalf("returned after %v of the bubble's time; the timeout is 200ms", d)
		}
	})
}

func TestKeyringBackendErrorsAreUnavailable(t *testing.T) {
	kr := &fakeKeyring{fail: errors.New("org.freedesktop.DBus.Error.ServiceUnknown")}
	k := newFakeKeyring(t, kr, -1)
	for name, err := range map[string]error{
		"load":   func() error { _, err := k.Load(bg, "a"); return err }(),
		"save":   SaveToken(bg, k, "a", sampleToken()),
		"delete": k.Delete(bg, "a"),
	} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: got %v, want ErrUnavailable", name, err)
		}
	}
}

// TestKeyringNoSessionBus: without a session bus, the OS keyring fails with
// ErrUnavailable, and no helper process hangs.
func TestKeyringNoSessionBus(t *testing.T) {
	// In this process: an empty address is refused by sessionBusReachable,
	// before D-Bus is touched, so nothing tries to launch a bus. The
	// timeout is generous: the refusal comes before any call that could
	// need it.
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	k, err := NewKeyring("tokenkeep-test", &KeyringOptions{LockDir: t.TempDir(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Load(bg, "alice"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errNoSessionBus) {
		t.Fatalf("got %v, want ErrUnavailable from the session bus check, before any D-Bus call", err)
	}

	// In a fresh process (the D-Bus library caches its connection): no
	// address, and a bus address where nothing listens. The bound only
	// catches a hang, such as a bus daemon started by the helper holding
	// its output open.
	const hang = 2 * time.Minute
	for _, addr := range []string{"", "unix:path=/nonexistent/tokenkeep/bus"} {
		ctx, cancel := context.WithTimeout(bg, hang)
		cmd := helperContext(ctx, t, "nobus", "DBUS_SESSION_BUS_ADDRESS="+addr, "XDG_RUNTIME_DIR="+t.TempDir())
		cmd.WaitDelay = time.Second // after a kill, do not wait for whatever holds its output
		out, err := cmd.Output()
		hung := ctx.Err()
		cancel()
		if hung != nil {
			t.Fatalf("address %q: helper still running after %v, killed: %v (%s)", addr, hang, err, out)
		}
		if err != nil {
			t.Fatalf("address %q: helper failed: %v (%s)", addr, err, out)
		}
	}
}

// helperNoBus loads from the OS keyring, which must fail with
// ErrUnavailable; with no bus address at all, from the session bus check.
func helperNoBus() error {
	k, err := NewKeyring("tokenkeep-test", &KeyringOptions{LockDir: os.TempDir(), Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	_, err = k.Load(bg, "alice")
	switch {
	case !errors.Is(err, ErrUnavailable):
		return fmt.Errorf("got %v, want ErrUnavailable", err)
	case os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" && !errors.Is(err, errNoSessionBus):
		return fmt.Errorf("got %v, want ErrUnavailable from the session bus check", err)
	}
	return nil
}

func TestKeyringSecretService(t *testing.T) {
	needSecretService(t)
	for _, chunk := range []int{-1, 2000} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			k, err := NewKeyring("tokenkeep-test", &KeyringOptions{ChunkSize: chunk, LockDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			name := t.Name()
			if _, err := k.Load(bg, name); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load of nothing: got %v, want ErrNotFound", err)
			}
			for _, tok := range []*oauth2.Token{sampleToken(), bigToken(), sampleToken()} {
				if err := SaveToken(bg, k, name, tok); err != nil {
					t.Fatal(err)
				}
				got, err := LoadToken(bg, k, name)
				if err != nil {
					t.Fatal(err)
				}
				sameToken(t, got, tok)
				if got.Extra("id_token") != tok.Extra("id_token") {
					t.Fatal("id_token lost")
				}
			}
			if err := k.Delete(bg, name); err != nil {
				t.Fatal(err)
			}
			if _, err := k.Load(bg, name); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
			}
		})
	}
}

func TestKeyringKeySecretService(t *testing.T) {
	needSecretService(t)
	key, err := KeyringKey("tokenkeep-test", t.Name(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFileStore(t, key)
	if err := SaveToken(bg, f, "e", bigToken()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(bg, "e"); err != nil {
		t.Fatal(err)
	}
	if err := (osKeyring{}).Delete("tokenkeep-test", t.Name()); err != nil {
		t.Fatal(err)
	}
	again, _ := KeyringKey("tokenkeep-test", t.Name(), nil)
	g, _ := NewFile(f.Dir(), again)
	if _, err := g.Load(bg, "e"); !errors.Is(err, ErrKeyLost) {
		t.Fatalf("key deleted from the keyring: got %v, want ErrKeyLost", err)
	}
}

func TestKeyringLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		testLockExcludes(t, newFakeKeyring(t, &fakeKeyring{}, -1))
	})
}

// testLockExcludes has 16 goroutines take l's lock on one key and hold it
// for a millisecond: at most one may hold it at a time. Run it in a
// synctest bubble, where the millisecond and the lock's polls take no real
// time and every waiter has tried the lock before the holder lets go.
func testLockExcludes(t *testing.T, l Locker) {
	var mu sync.Mutex
	holders, maxHolders := 0, 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.Lock(bg, "alice")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			holders++
			maxHolders = max(maxHolders, holders)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			holders--
			mu.Unlock()
			if err := unlock(); err != nil {
				t.Error(err)
			}
			unlock() // a second call is harmless
		}()
	}
	wg.Wait()
	if maxHolders != 1 {
		t.Fatalf("%d goroutines held the lock at once", maxHolders)
	}
}

func TestKeyringRefusesTooLarge(t *testing.T) {
	kr := &fakeKeyring{}
	k := newFakeKeyring(t, kr, 2000)
	huge := sampleToken().WithExtra(map[string]any{"id_token": strings.Repeat("x", maxEntrySize)})
	if err := k.Save(bg, "alice", NewRecord(0, huge)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if n := kr.len(); n != 0 {
		t.Fatalf("%d items written by a refused save", n)
	}
}
