package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedStore is a store whose lock protocol tests can stop: File and
// Keyring.
type lockedStore interface {
	Store
	Locker
	lockSet() *lockSet
}

func (f *File) lockSet() *lockSet    { return &f.locks }
func (k *Keyring) lockSet() *lockSet { return &k.locks }

func lockedStores(t *testing.T) []struct {
	name string
	s    lockedStore
} {
	return []struct {
		name string
		s    lockedStore
	}{
		{"file", newFileStore(t, mustRaw(t, testKey()))},
		{"keyring", newFakeKeyring(t, &fakeKeyring{}, -1)},
	}
}

// safetyNet bounds a test that would otherwise hang on a deadlock. It is no
// timed assertion: on a healthy run every wait ends long before.
func safetyNet(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(bg, time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestLockThenSave: one goroutine holds an entry's lock while another
// saves it. The save must not wait for the holder (this process holds the
// lock file), and the holder's own saves must not wait for themselves.
func TestLockThenSave(t *testing.T) {
	for _, st := range lockedStores(t) {
		t.Run(st.name, func(t *testing.T) {
			ctx := safetyNet(t)
			unlock, err := st.s.Lock(ctx, "e")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error)
			go func() { done <- st.s.Save(ctx, "e", NewRecord(0, sessionToken(1))) }()
			if err := <-done; err != nil {
				t.Fatalf("save by another goroutine while the lock is held: %v", err)
			}
			if err := st.s.Save(ctx, "e", NewRecord(1, sessionToken(2))); err != nil {
				t.Fatalf("save by the holder: %v", err)
			}
			if err := unlock(); err != nil {
				t.Fatal(err)
			}
			if r, err := st.s.Load(ctx, "e"); err != nil || r.Generation != 2 {
				t.Fatalf("after unlock: got %v, %v; want generation 2", r, err)
			}
		})
	}
}

// TestSaveThenLock: a save holds the entry's lock file when another
// goroutine asks for the lock. The lock must wait for the save, not
// deadlock with it, and then writes under the lock must go through.
func TestSaveThenLock(t *testing.T) {
	for _, st := range lockedStores(t) {
		t.Run(st.name, func(t *testing.T) {
			ctx := safetyNet(t)
			ls := st.s.lockSet()
			inWrite, release := make(chan struct{}), make(chan struct{})
			lockBusy := make(chan struct{}, 1)
			var stopped atomic.Bool
			ls.hooks = &lockHooks{
				inWrite: func(string) {
					// The first write stops until released; later ones do
					// not. Which write is first is not left to whether the
					// test is already receiving when it comes.
					if stopped.CompareAndSwap(false, true) {
						inWrite <- struct{}{}
						<-release
					}
				},
				busy: func(string) {
					select {
					case lockBusy <- struct{}{}:
					default:
					}
				},
			}
			saved := make(chan error)
			go func() { saved <- st.s.Save(ctx, "e", NewRecord(0, sessionToken(1))) }()
			select {
			case <-inWrite: // the save holds the lock file
			case err := <-saved:
				t.Fatalf("the save returned before it wrote: %v", err)
			}
			locked := make(chan error)
			var unlock func() error
			go func() {
				var err error
				unlock, err = st.s.Lock(ctx, "e")
				locked <- err
			}()
			<-lockBusy // the lock found the file held by the save
			close(release)
			if err := <-saved; err != nil {
				t.Fatal(err)
			}
			if err := <-locked; err != nil {
				t.Fatal(err)
			}
			if err := st.s.Save(ctx, "e", NewRecord(1, sessionToken(2))); err != nil {
				t.Fatalf("save while the lock is held: %v", err)
			}
			if err := unlock(); err != nil {
				t.Fatal(err)
			}
			if r, err := st.s.Load(ctx, "e"); err != nil || r.Generation != 2 {
				t.Fatalf("got %v, %v; want generation 2", r, err)
			}
		})
	}
}

// TestLockEntriesForgotten: a process that touched many keys keeps no lock
// state for the ones it no longer uses.
func TestLockEntriesForgotten(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	for i := range 50 {
		key := string(rune('a' + i%26))
		if err := SaveToken(bg, f, key, sampleToken()); err != nil {
			t.Fatal(err)
		}
		unlock, err := f.Lock(bg, key)
		if err != nil {
			t.Fatal(err)
		}
		unlock()
	}
	unlock, _ := f.Lock(bg, "held")
	defer unlock()
	f.locks.mu.Lock()
	n := len(f.locks.entries)
	f.locks.mu.Unlock()
	if n != 1 {
		t.Fatalf("lock entries kept: got %d, want 1 (the held key)", n)
	}
}

// TestDeleteRemovesLockFile: Delete removes the entry's lock file, at once
// when it took the lock itself, and when the holder unlocks otherwise; a
// save after the delete keeps it.
func TestDeleteRemovesLockFile(t *testing.T) {
	f := newFileStore(t, mustRaw(t, testKey()))
	lockFile := f.Path("e") + ".lock"
	exists := func() bool { _, err := os.Lstat(lockFile); return err == nil }

	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("no lock file after a save")
	}
	if err := f.Delete(bg, "e"); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("Delete left the lock file")
	}

	if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
		t.Fatal(err)
	}
	unlock, _ := f.Lock(bg, "e")
	if err := f.Delete(bg, "e"); err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("the lock file was removed while its lock was held")
	}
	unlock()
	if exists() {
		t.Fatal("the holder's unlock after a Delete left the lock file")
	}

	unlock, _ = f.Lock(bg, "e")
	f.Delete(bg, "e")
	if err := SaveToken(bg, f, "e", sampleToken()); err != nil { // a new login after the purge
		t.Fatal(err)
	}
	unlock()
	if !exists() {
		t.Fatal("the lock file of a live entry was removed")
	}

	if err := f.Delete(bg, "never-written"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(f.Path("never-written") + ".lock"); err == nil {
		t.Fatal("Delete of nothing left a lock file")
	}
}

// TestLockExclusionWhileLockFilesAreRemoved: holders in several stores
// (each with its own lock files handles, as separate processes have) take
// an entry's lock, delete the entry (removing the lock file on unlock) and
// write it again, over and over. Never may two of them hold the lock at
// once: a locker that locked a file its holder then removed must notice
// and lock the new one.
func TestLockExclusionWhileLockFilesAreRemoved(t *testing.T) {
	const stores, rounds = 4, 150
	dir := t.TempDir()
	var inside, overlaps, removed atomic.Int64
	var wg sync.WaitGroup
	for range stores {
		f, err := NewFile(dir, mustRaw(t, testKey()))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := range rounds {
				unlock, err := f.Lock(bg, "e")
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				if i%2 == 0 {
					if err := f.Delete(bg, "e"); err != nil {
						t.Error(err)
					}
					removed.Add(1)
				} else if err := SaveToken(bg, f, "e", sampleToken()); err != nil {
					t.Error(err)
				}
				inside.Add(-1)
				unlock()
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d times two stores held the lock at once", n)
	}
	t.Logf("%d lock holds, %d of them removing the lock file, never two at once", stores*rounds, removed.Load())
	left, _ := filepath.Glob(filepath.Join(dir, "*.lock"))
	if len(left) > 1 {
		t.Fatalf("%d lock files left", len(left))
	}
}

// TestLockFileRemovedWhileTaken stops a locker between taking the lock of
// the file it opened and checking it, and meanwhile does what a previous
// holder and a third process can: remove the file, and create and lock a
// new one at the path. The locker must not count the lock of the removed
// file as the entry's lock.
func TestLockFileRemovedWhileTaken(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewFile(dir, mustRaw(t, testKey()))
	b, _ := NewFile(dir, mustRaw(t, testKey()))
	var third func() error
	a.locks.hooks = &lockHooks{locked: func(path string) {
		if third != nil {
			return
		}
		if err := os.Remove(path); err != nil {
			t.Error(err)
		}
		u, err := b.Lock(bg, "e") // creates and locks the new file
		if err != nil {
			t.Error(err)
		}
		third = u
	}}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	busy := 0
	a.locks.hooks.busy = func(string) {
		busy++
		cancel()
	}
	if unlock, err := a.Lock(ctx, "e"); err == nil {
		unlock()
		t.Fatal("took the lock of a removed lock file while another holds the entry's lock")
	}
	if busy == 0 {
		t.Fatal("never found the new lock file busy")
	}
	third()
	unlock, err := a.Lock(bg, "e")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}

// TestLockCancelledWhileWaiting: a waiter whose ctx ends leaves with ctx's
// error and keeps no state.
func TestLockCancelledWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewFile(dir, mustRaw(t, testKey()))
	b, _ := NewFile(dir, mustRaw(t, testKey()))
	unlock, err := a.Lock(bg, "e")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(bg)
	b.locks.hooks = &lockHooks{busy: func(string) { cancel() }}
	if _, err := b.Lock(ctx, "e"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := b.Save(ctx, "e", NewRecord(0, sampleToken())); !errors.Is(err, context.Canceled) {
		t.Fatalf("save: got %v, want context.Canceled", err)
	}
	if n := len(b.locks.entries); n != 0 {
		t.Fatalf("%d lock entries kept after cancelled waits", n)
	}
}
