package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
//
// # Lock files that come and go
//
// A lock file may be removed (with its entry, by Delete) so that a
// directory of many entries does not keep one lock file per entry ever
// written. Removing a file that others may be waiting on is safe only with
// two rules, which every function here follows:
//
//   - A lock file is removed only by a holder of its lock, as the last
//     thing it does before unlocking.
//   - After taking the lock on an open file, a locker checks that the path
//     still names that same file (fstat of the locked handle against lstat
//     of the path). If not, the previous holder removed it in between: the
//     locker drops the lock it took on the orphan and tries again, and
//     ends up locking the file now at the path, with every other locker.
//
// So at any moment at most one file is at the path, and only its lock
// counts. On platforms where an open file cannot be removed cleanly
// (Windows), lock files are never removed (see removeLockFiles).
type lockSet struct {
	mu      sync.Mutex            // guards entries and every lockEntry.refs
	entries map[string]*lockEntry // one per key locked or being written

	hooks *lockHooks // tests only; nil otherwise
}

// lockHooks let tests stop the lock protocol at its interesting points.
type lockHooks struct {
	busy    func(key string)  // a lock file was found held by another
	inWrite func(key string)  // a write holds the key's lock file and is about to run
	locked  func(path string) // a lock file was locked and is about to be checked
}

// lockEntry is the lock state of one key in this process.
type lockEntry struct {
	refs int // guarded by lockSet.mu: the holder and the writers of the key in this process

	sem   chan struct{} // one-slot semaphore: the key's lock holder in this process
	wmu   sync.Mutex    // guards held and purge; serialises this process's writes of the key
	held  bool          // this process holds the key's lock file
	purge bool          // the lock file is to be removed when the holder unlocks
}

// acquire returns key's entry, counted as in use until release.
func (l *lockSet) acquire(key string) *lockEntry {
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
	e.refs++
	return e
}

// release ends a use of key's entry, forgetting the entry when nobody
// uses it, so that a process that touched a hundred thousand keys does not
// keep a hundred thousand entries.
func (l *lockSet) release(key string, e *lockEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(l.entries, key)
	}
}

func (l *lockSet) busy(key string) {
	if l.hooks != nil && l.hooks.busy != nil {
		l.hooks.busy(key)
	}
}

// maxLockRetries bounds how often a locker finds that the file it locked
// was removed in between: each time needs another holder to remove it.
const maxLockRetries = 100

// tryLockFile takes the exclusive lock of the file at path, creating it
// with mode 0600, without waiting: nil, nil when another holds it.
func (l *lockSet) tryLockFile(path string) (*flock.Flock, error) {
	for range maxLockRetries {
		f := flock.New(path, flock.SetPermissions(0o600))
		ok, err := f.TryLock()
		if err != nil || !ok {
			f.Close()
			return nil, err
		}
		if l.hooks != nil && l.hooks.locked != nil {
			l.hooks.locked(path)
		}
		locked, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		now, err := os.Lstat(path)
		if err == nil && os.SameFile(locked, now) {
			return f, nil
		}
		f.Close() // unlocks: the file was removed or replaced after we opened it
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, errors.New("the lock file keeps being replaced while it is taken")
}

// unlockFile removes the lock file if remove is set (best effort: a lock
// file left behind costs a directory entry, nothing else), then unlocks it.
func unlockFile(f *flock.Flock, remove bool) error {
	if remove && removeLockFiles {
		os.Remove(f.Path())
	}
	return f.Close()
}

// wait waits lockPoll on t, or returns ctx's error.
func wait(ctx context.Context, t **time.Timer) error {
	if *t == nil {
		*t = time.NewTimer(lockPoll)
	} else {
		(*t).Reset(lockPoll)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-(*t).C:
		return nil
	}
}

// lockLocal takes key's semaphore only.
func (l *lockSet) lockLocal(ctx context.Context, key string) (func() error, error) {
	return l.lock(ctx, key, "")
}

// lock takes key's semaphore, then an exclusive lock on the file at path,
// which is created 0600 if needed.
//
// The operating system releases a lock file's lock when its holder dies,
// SIGKILL included, so a crashed process never blocks the others. On NFS,
// Linux emulates flock with fcntl byte-range locks, which work only where
// the server runs a lock manager (NFSv4, or v3 with lockd); elsewhere the
// lock protects processes on one machine only.
func (l *lockSet) lock(ctx context.Context, key, path string) (func() error, error) {
	e := l.acquire(key)
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		l.release(key, e)
		return nil, ctx.Err()
	}
	fail := func(err error) (func() error, error) {
		<-e.sem
		l.release(key, e)
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	if path == "" {
		var once sync.Once
		return func() error {
			once.Do(func() {
				<-e.sem
				l.release(key, e)
			})
			return nil
		}, nil
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	var f *flock.Flock
	for {
		var err error
		if f, err = l.tryLockFile(path); err != nil {
			return fail(err)
		}
		if f != nil {
			break
		}
		l.busy(key)
		if err := wait(ctx, &t); err != nil {
			return fail(err)
		}
	}
	e.wmu.Lock()
	e.held, e.purge = true, false
	e.wmu.Unlock()
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			e.wmu.Lock()
			purge := e.purge
			e.held, e.purge = false, false
			e.wmu.Unlock()
			uerr = unlockFile(f, purge)
			<-e.sem
			l.release(key, e)
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
//
// If purge is set and fn succeeds (fn removed the entry), the lock file is
// removed too: at once when write took it, or when the holder unlocks.
func (l *lockSet) write(ctx context.Context, key, path string, purge bool, fn func() error) error {
	e := l.acquire(key)
	defer l.release(key, e)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		e.wmu.Lock()
		if e.held || path == "" {
			err := fn()
			if e.held && err == nil {
				e.purge = purge // a save after a purge keeps the lock file
			}
			e.wmu.Unlock()
			return err
		}
		f, err := l.tryLockFile(path)
		if err != nil {
			e.wmu.Unlock()
			return fmt.Errorf("lock file %s: %w", path, err)
		}
		if f != nil {
			if l.hooks != nil && l.hooks.inWrite != nil {
				l.hooks.inWrite(key)
			}
			err := fn()
			unlockFile(f, purge && err == nil)
			e.wmu.Unlock()
			return err
		}
		e.wmu.Unlock()
		l.busy(key)
		if err := wait(ctx, &t); err != nil {
			return fmt.Errorf("lock file %s: %w", path, err)
		}
	}
}
