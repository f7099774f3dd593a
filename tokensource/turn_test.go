package tokensource

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/tokenkeep/tokenkeep/storage"
)

// turnOf reports whether s's turn is held and whether anyone waits for it.
func turnOf(s *Source) (held, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.turn, s.waiting != nil
}

// TestTurnInOrder: the turn goes to its waiters in the order they came; a
// waiter whose ctx ends leaves the line and is told so; once the last
// gives it back, the turn is free and nobody waits.
func TestTurnInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestSource(t, &fakeProvider{}, storage.NewMemory())
		if !s.takeTurn(context.Background()) {
			t.Fatal("a free turn was not taken")
		}
		got := make(chan int, 3)
		ctx2, cancel2 := context.WithCancel(context.Background())
		for i, ctx := range []context.Context{context.Background(), ctx2, context.Background()} {
			go func() {
				if !s.takeTurn(ctx) {
					got <- -(i + 1)
					return
				}
				got <- i + 1
				s.giveTurn()
			}()
			synctest.Wait() // in line before the next
		}
		cancel2()
		synctest.Wait()
		s.giveTurn()
		synctest.Wait()
		close(got)
		var order []int
		for i := range got {
			order = append(order, i)
		}
		if want := []int{-2, 1, 3}; !slices.Equal(order, want) {
			t.Errorf("turns (negative: gave up): got %v, want %v", order, want)
		}
		if held, waiting := turnOf(s); held || waiting {
			t.Errorf("after the last gave the turn back: held %v, waiting %v; want free, nobody", held, waiting)
		}
	})
}

// TestTurnGivenAsCtxEnds: a waiter whose ctx ends as the turn is handed to
// it either takes the turn (and says so) or leaves the line without it;
// the turn is never lost between the two.
func TestTurnGivenAsCtxEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestSource(t, &fakeProvider{}, storage.NewMemory())
		for range 50 {
			if !s.takeTurn(context.Background()) {
				t.Fatal("a free turn was not taken")
			}
			ctx, cancel := context.WithCancel(context.Background())
			took := make(chan bool, 1)
			go func() { took <- s.takeTurn(ctx) }()
			synctest.Wait() // in line
			cancel()
			s.giveTurn() // to the waiter, unless it saw its ctx end first and left the line
			if <-took {
				s.giveTurn() // it took the turn: it gives it back
			}
			// Either way the turn is free: a waiter handed the turn as
			// its ctx ended must not report false and lose it.
			if held, waiting := turnOf(s); held || waiting {
				t.Fatalf("after the turn was given back: held %v, waiting %v; want free, nobody", held, waiting)
			}
		}
	})
}
