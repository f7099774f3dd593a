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
// The zero value is ready to use.
type lockSet struct {
	mu   sync.Mutex               // guards sems
	sems map[string]chan struct{} // one-slot semaphore per key
}

func (l *lockSet) sem(key string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sems == nil {
		l.sems = make(map[string]chan struct{})
	}
	s, ok := l.sems[key]
	if !ok {
		s = make(chan struct{}, 1)
		l.sems[key] = s
	}
	return s
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
	sem := l.sem(key)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if path == "" {
		var once sync.Once
		return func() error { once.Do(func() { <-sem }); return nil }, nil
	}
	f := flock.New(path, flock.SetPermissions(0o600))
	ok, err := f.TryLockContext(ctx, lockPoll)
	if !ok || err != nil {
		<-sem
		f.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			uerr = f.Unlock()
			f.Close()
			<-sem
		})
		return uerr
	}, nil
}
