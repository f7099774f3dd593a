package storage

import (
	"context"
	"errors"

	"golang.org/x/oauth2"
)

// Store keeps tokens at rest under a caller-chosen key.
//
// Implementations are safe for concurrent use. Load returns a token that the
// caller may modify; Save keeps its own copy of t. Every implementation keeps
// the access token, token type, refresh token, expiry and the extra fields the
// provider returned (id_token, scope, custom fields).
type Store interface {
	// Load returns the token saved under key, or an error that matches
	// ErrNotFound when there is none.
	Load(ctx context.Context, key string) (*oauth2.Token, error)
	// Save replaces the token saved under key.
	Save(ctx context.Context, key string, t *oauth2.Token) error
	// Delete removes the token saved under key. Deleting a key that holds
	// nothing is not an error.
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

// Errors that callers branch on with [errors.Is]. Stores wrap them with
// detail (the entry, the backend) but never with secret values.
var (
	// ErrNotFound means no token is stored under the key.
	ErrNotFound = errors.New("storage: token not found")

	// ErrCorrupt means stored data could not be authenticated or decoded:
	// it was truncated, tampered with, moved to another entry, written by an
	// unknown format version, or encrypted with a different key or
	// passphrase. Authenticated encryption cannot tell these apart, so they
	// share one sentinel; the wrapping message says which check failed.
	ErrCorrupt = errors.New("storage: stored token is corrupt or was encrypted with another key")

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
