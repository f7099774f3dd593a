package storage

import (
	"context"
	"errors"
)

// Store keeps sessions at rest under caller-chosen keys, as versioned
// [Record]s.
//
// Every write is conditional: Save names, through the record's Generation,
// the generation it was derived from, and the store refuses the write with
// an error matching [ErrConflict] when the stored generation is another.
// A refused writer reads the entry again and decides anew; it never
// overwrites. This is what keeps a late retry, a slow save or a rival
// process from rolling a session back to a spent refresh token.
//
// Implementations are safe for concurrent use. Load returns a record the
// caller may modify; Save keeps its own copy.
type Store interface {
	// Load returns the record saved under key, or an error that matches
	// ErrNotFound when there is none.
	Load(ctx context.Context, key string) (*Record, error)
	// Save writes r under key if the stored generation is r.Generation-1
	// (a key that holds nothing has generation 0), and otherwise returns an
	// error matching ErrConflict and leaves the entry as it was.
	Save(ctx context.Context, key string, r *Record) error
	// Delete removes the entry under key for good, whatever it holds.
	// Deleting a key that holds nothing is not an error. To end a session
	// and keep it ended, save an ended record instead: a deleted entry
	// looks like one that was never written.
	Delete(ctx context.Context, key string) error
}

// Locker is implemented by stores that can serialise refreshes of one key
// across goroutines, processes or machines.
//
// Lock blocks until the lock for key is held or ctx is done, in which case it
// returns ctx's error. The returned unlock function releases the lock; it is
// safe to call more than once.
type Locker interface {
	Lock(ctx context.Context, key string) (unlock func() error, err error)
}

// LeaseLocker is implemented by Lockers whose locks can be lost while held,
// such as a lease in a server that expires when it is not renewed in time.
//
// LockLease is Lock that also returns held, a context that is done once the
// lock is known to be lost: from then on another process may hold it, and
// the holder must not start anything the lock was taken to serialise.
type LeaseLocker interface {
	Locker
	LockLease(ctx context.Context, key string) (held context.Context, unlock func() error, err error)
}

// Lister is implemented by stores that can enumerate their entries.
//
// List calls yield with the key of every entry, in no particular order,
// until yield returns false or every entry was visited. Entries written or
// deleted while List runs may or may not be visited.
type Lister interface {
	List(ctx context.Context, yield func(key string) bool) error
}

// GenerationWaiter is implemented by stores that can tell a process
// waiting for an entry's lock that the entry moved on, so that it adopts the
// new record at once instead of queuing for the lock behind every other
// waiter.
//
// WaitGeneration returns the generation stored under key as soon as it is
// other than after: at once if it already is, otherwise when a write (or a
// Delete, which makes it 0) changes it. It returns an error wrapping ctx's
// when ctx ends first, and the store's errors for a failed read. A waiter
// runs it beside its Lock call, with a context it cancels when either
// returns. What it reports is a hint: the record is read again, with Load,
// before anything is served from it.
type GenerationWaiter interface {
	WaitGeneration(ctx context.Context, key string, after uint64) (uint64, error)
}

// Errors that callers branch on with [errors.Is]. Stores wrap them with
// detail (the entry, the backend) but never with secret values.
var (
	// ErrNotFound means nothing is stored under the key.
	ErrNotFound = errors.New("storage: token not found")

	// ErrConflict means a conditional write was refused: the entry's
	// generation is no longer the one the write was derived from, because
	// another writer saved first. Nothing was written. Read the entry again.
	ErrConflict = errors.New("storage: entry changed since it was read")

	// ErrCorrupt means stored data could not be authenticated or decoded:
	// it was truncated, tampered with, moved to another entry, written by an
	// unknown format version, or encrypted with a different key or
	// passphrase. Authenticated encryption cannot tell these apart, so they
	// share one sentinel; the wrapping message says which check failed.
	// A session source also reports a stored generation lower than one it
	// has already seen (a rollback) with it.
	ErrCorrupt = errors.New("storage: stored token is corrupt or was encrypted with another key")

	// ErrTooLarge means a record was refused on save because its stored
	// form would be larger than a load accepts (1 MiB for a file or a
	// sealed value). Nothing was written; saving it again will fail again.
	ErrTooLarge = errors.New("storage: record too large to store")

	// ErrUnavailable means the backend could not be reached in time: no
	// Secret Service on the session bus, a locked or hung keyring, an
	// unreachable server. It is transient from the store's point of view;
	// nothing was lost.
	ErrUnavailable = errors.New("storage: backend unavailable")

	// ErrKeyLost means the key that encrypted the stored tokens is gone (for
	// example its keyring entry was deleted). The tokens cannot be recovered:
	// the user must log in again.
	ErrKeyLost = errors.New("storage: encryption key lost")
)

// Static checks: what the package's stores implement.
var (
	_ GenerationWaiter = (*Memory)(nil)
	_ GenerationWaiter = (*File)(nil)
)
