package storage

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// lockPoll is how often a waiter retries a lock file held by another
// process. flock(2) cannot wait with a deadline, so waiting is polling.
const lockPoll = 5 * time.Millisecond

// lockSet serialises holders of one key: first within the process, with a
// semaphore per key (lock files are not reliable between goroutines of one
// process on every platform), then across processes, with the lock file.
// It also serialises the conditional writes of a key (see write).
// The zero value is ready to use.
type lockSet struct {
	mu      sync.Mutex            // guards entries
	entries map[string]*lockEntry // one per key ever locked or written
}

// lockEntry is the lock state of one key in this process.
type lockEntry struct {
	sem  chan struct{} // one-slot semaphore: the key's lock holder in this process
	wmu  sync.Mutex    // guards held; serialises this process's writes of the key
	held bool          // this process holds the key's lock file
}

func (l *lockSet) entry(key string) *lockEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries == nil {
		l.entries = make(map[string]*lockEntry)
	}
	e, ok := l.entries[key]
	if !ok {
		e = &lockEntry{sem: make(chan struct{}, 1)}
		l.entries[key] = e
	}
	return e
}

// lockLocal takes key's semaphore only.
func (l *lockSet) lockLocal(ctx context.Context, key string) (func() error, error) {
	return l.lock(ctx, key, "")
}

// lock takes key's semaphore, then an exclusive lock on the file at path,
// which is created 0600 if needed and never deleted: deleting a lock file
// while another process waits on it would let two processes hold "the" lock.
//
// The operating system releases a lock file's lock when its holder dies,
// SIGKILL included, so a crashed process never blocks the others. On NFS,
// Linux emulates flock with fcntl byte-range locks, which work only where
// the server runs a lock manager (NFSv4, or v3 with lockd); elsewhere the
// lock protects processes on one machine only.
func (l *lockSet) lock(ctx context.Context, key, path string) (func() error, error) {
	e := l.entry(key)
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if path == "" {
		var once sync.Once
		return func() error { once.Do(func() { <-e.sem }); return nil }, nil
	}
	f := flock.New(path, flock.SetPermissions(0o600))
	ok, err := f.TryLockContext(ctx, lockPoll)
	if !ok || err != nil {
		<-e.sem
		f.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	e.wmu.Lock()
	e.held = true
	e.wmu.Unlock()
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			e.wmu.Lock()
			e.held = false
			e.wmu.Unlock()
			uerr = f.Unlock()
			f.Close()
			<-e.sem
		})
		return uerr
	}, nil
}

// write runs fn, a read-compare-write of key, while no other writer of key
// runs, in this process or (with a lock file at path) in another: under the
// key's lock file, which it takes for the length of fn unless this process
// already holds it. A holder of the lock therefore writes without waiting
// for itself, and a writer without the lock waits for the holder.
//
// The lock file is tried rather than waited on while this process's write
// mutex is held, so that a goroutine taking the key's lock is never stuck
// behind a writer waiting for that same lock.
func (l *lockSet) write(ctx context.Context, key, path string, fn func() error) error {
	e := l.entry(key)
	var t *time.Timer
	for {
		e.wmu.Lock()
		if e.held || path == "" {
			err := fn()
			e.wmu.Unlock()
			return err
		}
		f := flock.New(path, flock.SetPermissions(0o600))
		ok, err := f.TryLock()
		if err != nil {
			e.wmu.Unlock()
			f.Close()
			return fmt.Errorf("lock file %s: %w", path, err)
		}
		if ok {
			err := fn()
			f.Unlock()
			f.Close()
			e.wmu.Unlock()
			return err
		}
		f.Close()
		e.wmu.Unlock()
		if t == nil {
			t = time.NewTimer(lockPoll)
			defer t.Stop()
		} else {
			t.Reset(lockPoll)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock file %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
