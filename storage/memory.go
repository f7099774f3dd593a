package storage

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// Memory is a Store and Locker that keeps tokens in process memory. Nothing
// survives the process; it suits tests, and services that log in at start-up.
//
// The zero value is ready to use. A Memory is safe for concurrent use.
type Memory struct {
	mu     sync.Mutex               // guards tokens
	tokens map[string]*oauth2.Token // private copies
	locks  lockSet                  // in-process only: no lock files
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return new(Memory) }

// Load implements Store.
func (m *Memory) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	m.mu.Lock()
	t, ok := m.tokens[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("storage: memory entry %q: %w", key, ErrNotFound)
	}
	return tokencodec.Clone(t), nil
}

// Save implements Store.
func (m *Memory) Save(ctx context.Context, key string, t *oauth2.Token) error {
	if t == nil {
		return fmt.Errorf("storage: memory entry %q: refusing to save a nil token", key)
	}
	c := tokencodec.Clone(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens == nil {
		m.tokens = make(map[string]*oauth2.Token)
	}
	m.tokens[key] = c
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	m.mu.Lock()
	delete(m.tokens, key)
	m.mu.Unlock()
	return nil
}

// Lock implements Locker. The lock is held per key within this process.
func (m *Memory) Lock(ctx context.Context, key string) (func() error, error) {
	unlock, err := m.locks.lockLocal(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("storage: lock memory entry %q: %w", key, err)
	}
	return unlock, nil
}
