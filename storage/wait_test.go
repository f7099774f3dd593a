package storage

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitGeneration: a waiter returns at once when the entry is already
// past the generation it knows, wakes when another writer (for File, a
// second store value on the same directory, as another process has) saves
// or deletes the entry, and ends with its context.
func TestWaitGeneration(t *testing.T) {
	type waitingStore interface {
		Store
		GenerationWaiter
	}
	stores := map[string]func(t *testing.T) (waiter, writer waitingStore){
		"Memory": func(t *testing.T) (_, _ waitingStore) {
			m := NewMemory()
			return m, m
		},
		"File": func(t *testing.T) (_, _ waitingStore) {
			a := newFileStore(t, mustRaw(t, testKey()))
			b, err := NewFile(a.Dir(), mustRaw(t, testKey()))
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			waiter, writer := open(t)
			ctx := context.Background()
			if err := writer.Save(ctx, "alice", NewRecord(0, sampleToken())); err != nil {
				t.Fatal(err)
			}
			if gen, err := waiter.WaitGeneration(ctx, "alice", 0); gen != 1 || err != nil {
				t.Fatalf("WaitGeneration after 0 with generation 1 stored: %d, %v; want 1 at once", gen, err)
			}

			wait := func(after uint64) <-chan uint64 {
				got := make(chan uint64, 1)
				go func() {
					gen, err := waiter.WaitGeneration(ctx, "alice", after)
					if err != nil {
						t.Error(err)
					}
					got <- gen
				}()
				return got
			}
			expect := func(got <-chan uint64, want uint64) {
				t.Helper()
				guard := time.NewTimer(time.Minute) // against hanging, not a measurement
				defer guard.Stop()
				select {
				case gen := <-got:
					if gen != want {
						t.Fatalf("WaitGeneration returned %d, want %d", gen, want)
					}
				case <-guard.C:
					t.Fatalf("WaitGeneration did not return within a minute of a write")
				}
			}

			got := wait(1)
			if err := writer.Save(ctx, "alice", NewRecord(1, sampleToken())); err != nil {
				t.Fatal(err)
			}
			expect(got, 2)

			got = wait(2)
			if err := writer.Delete(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			expect(got, 0)

			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := waiter.WaitGeneration(cctx, "alice", 0); !errors.Is(err, context.Canceled) {
				t.Errorf("WaitGeneration with an ended context: %v, want an error matching context.Canceled", err)
			}
		})
	}
}
