package storage

import (
	"context"
	"fmt"
	"sync"
)

// Memory is a Store, Locker, Lister and GenerationWaiter that keeps
// records in process memory. Nothing survives the process; it suits tests, and services that
// log in at start-up.
//
// The zero value is ready to use. A Memory is safe for concurrent use.
type Memory struct {
	mu      sync.Mutex         // guards records and changed
	records map[string]*Record // private copies
	changed chan struct{}      // closed, and replaced, by every write; nil until waited on
	locks   lockSet            // in-process only: no lock files
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return new(Memory) }

// Load implements Store.
func (m *Memory) Load(ctx context.Context, key string) (*Record, error) {
	m.mu.Lock()
	r, ok := m.records[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("storage: memory entry %q: %w", key, ErrNotFound)
	}
	return r.Clone(), nil
}

// Save implements Store: r is saved if the stored generation is
// r.Generation-1.
func (m *Memory) Save(ctx context.Context, key string, r *Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage: memory entry %q: refusing to save: %w", key, err)
	}
	c := r.Clone()
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur uint64
	if old, ok := m.records[key]; ok {
		cur = old.Generation
	}
	if err := checkGeneration(cur, c); err != nil {
		return fmt.Errorf("storage: memory entry %q: %w", key, err)
	}
	if m.records == nil {
		m.records = make(map[string]*Record)
	}
	m.records[key] = c
	m.wake()
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	m.mu.Lock()
	delete(m.records, key)
	m.wake()
	m.mu.Unlock()
	return nil
}

// wake wakes every WaitGeneration call. The caller holds m.mu.
func (m *Memory) wake() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// WaitGeneration implements GenerationWaiter. Every write wakes every
// waiting call, which reads its own entry again: waiting is meant for the
// few sessions whose lock is taken, not for every session.
func (m *Memory) WaitGeneration(ctx context.Context, key string, after uint64) (uint64, error) {
	for {
		m.mu.Lock()
		var gen uint64
		if r, ok := m.records[key]; ok {
			gen = r.Generation
		}
		if m.changed == nil {
			m.changed = make(chan struct{})
		}
		changed := m.changed
		m.mu.Unlock()
		if gen != after {
			return gen, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, fmt.Errorf("storage: wait for memory entry %q: %w", key, ctx.Err())
		}
	}
}

// List implements Lister.
func (m *Memory) List(ctx context.Context, yield func(key string) bool) error {
	m.mu.Lock()
	keys := make([]string, 0, len(m.records))
	for k := range m.records {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !yield(k) {
			return nil
		}
	}
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
