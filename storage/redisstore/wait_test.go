package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/storage"
)

// waitResult is what a WaitGeneration call returned.
type waitResult struct {
	gen uint64
	err error
}

// goWait runs s.WaitGeneration in a goroutine.
func goWait(ctx context.Context, s *Store, name string, after uint64) <-chan waitResult {
	c := make(chan waitResult, 1)
	go func() {
		g, err := s.WaitGeneration(ctx, name, after)
		c <- waitResult{g, err}
	}()
	return c
}

// TestWaitGeneration: WaitGeneration returns at once when the stored
// generation is already another, and otherwise as soon as a write or a
// purge changes it, with the new generation.
func TestWaitGeneration(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, nil)
	b := twin(t, a)
	ctx := context.Background()

	if g, err := b.WaitGeneration(ctx, "alice", 5); g != 0 || err != nil {
		t.Fatalf("nothing stored, waiting past 5: %d, %v; want 0 at once", g, err)
	}
	if err := a.Save(ctx, "alice", record(1, "v1")); err != nil {
		t.Fatal(err)
	}
	if g, err := b.WaitGeneration(ctx, "alice", 0); g != 1 || err != nil {
		t.Fatalf("generation 1 stored, waiting past 0: %d, %v; want 1 at once", g, err)
	}

	for _, step := range []struct {
		name  string
		write func() error
		want  uint64
	}{
		{"save", func() error { return a.Save(ctx, "alice", record(2, "v2")) }, 2},
		{"tombstone", func() error {
			return a.Save(ctx, "alice", &storage.Record{Generation: 3, State: storage.Ended, Reason: "revoked"})
		}, 3},
		{"purge", func() error { return a.Delete(ctx, "alice") }, 0},
	} {
		after, err := b.generation(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		w := twin(t, a) // a watcher of its own, so that its subscription is new
		ready := subscribed(w)
		res := goWait(ctx, w, "alice", after)
		within(t, ready, "the subscription")
		if err := step.write(); err != nil {
			t.Fatal(err)
		}
		got := within(t, res, "WaitGeneration returning after a "+step.name)
		if got.err != nil || got.gen != step.want {
			t.Fatalf("after a %s: %d, %v; want %d", step.name, got.gen, got.err, step.want)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	res := goWait(cctx, b, "alice", 0)
	cancel()
	if got := within(t, res, "WaitGeneration returning after cancel"); !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled wait: %d, %v; want Canceled", got.gen, got.err)
	} else {
		noSecret(t, got.err)
	}
}

// subscribed returns a channel that receives the name of each channel s's
// WaitGeneration calls begin listening on. Tests use it where a write must
// come after the wait began, to test the message path; WaitGeneration
// itself needs no such help. Call it before the first wait.
func subscribed(s *Store) <-chan string {
	c := make(chan string, 64)
	s.watch.onReady = func(ch string) { c <- ch }
	return c
}

// TestWaitGenerationNoGap: a write right after WaitGeneration began, while
// it subscribes and reads, is never missed, whichever comes first. The
// fallback reads (every RenewEvery) are out of reach here, so only the
// subscription can wake the call.
func TestWaitGenerationNoGap(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, &Options{LeaseTTL: time.Hour})
	b := twin(t, a)
	ctx := context.Background()
	for gen := uint64(1); gen <= 100; gen++ {
		res := goWait(ctx, b, "alice", gen-1)
		if err := a.Save(ctx, "alice", record(gen, "v")); err != nil {
			t.Fatal(err)
		}
		got := within(t, res, fmt.Sprintf("wait %d", gen))
		if got.err != nil || got.gen < gen {
			t.Fatalf("wait %d: %d, %v", gen, got.gen, got.err)
		}
	}
}

// TestWaitGenerationShared: 32 calls on one Store, on 4 entries, share
// one subscription connection; all return after their entry's write, and
// the connection closes once no call waits.
func TestWaitGenerationShared(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, &Options{LeaseTTL: time.Hour})
	b := twin(t, a)
	ready := subscribed(b)
	idle := make(chan struct{}, 1)
	b.watch.onIdle = func() { idle <- struct{}{} }
	ctx := context.Background()
	names := []string{"w", "x", "y", "z"}
	var results []<-chan waitResult
	for i := range 32 {
		results = append(results, goWait(ctx, b, names[i%4], 0))
	}
	for range names {
		within(t, ready, "a subscription")
	}
	clients, err := c.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(clients, " sub=4 "); n != 1 {
		t.Fatalf("%d connections subscribed to the 4 channels, want one shared", n)
	}
	for _, name := range names {
		if err := a.Save(ctx, name, record(1, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i, res := range results {
		if got := within(t, res, "a shared wait"); got.err != nil || got.gen != 1 {
			t.Fatalf("wait %d: %d, %v", i, got.gen, got.err)
		}
	}
	within(t, idle, "the subscription connection being given up")
}

// TestWaitGenerationReconnect: when the subscription connection is killed,
// go-redis makes a new one and subscribes again, and the waiting call reads
// the generation again: a write made meanwhile, whose message nobody
// received, still wakes it. The fallback reads are out of reach here.
func TestWaitGenerationReconnect(t *testing.T) {
	c := needRedis(t)
	a := newStore(t, c, &Options{LeaseTTL: time.Hour})
	ctx := context.Background()
	for gen := uint64(1); gen <= 5; gen++ {
		b := twin(t, a)
		ready := subscribed(b)
		res := goWait(ctx, b, "alice", gen-1)
		within(t, ready, "the subscription")
		if err := c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		if err := a.Save(ctx, "alice", record(gen, "v")); err != nil {
			t.Fatal(err)
		}
		got := within(t, res, "a wait across a reconnection")
		if got.err != nil || got.gen != gen {
			t.Fatalf("wait %d: %d, %v", gen, got.gen, got.err)
		}
	}
}

// TestWaitGenerationRefused: a user that may not subscribe to the channel
// gets an error, not a wait until its context ends.
func TestWaitGenerationRefused(t *testing.T) {
	admin := needRedis(t)
	ctx := context.Background()
	prefix := testPrefix(t)
	user := aclUser(t, admin, "~"+prefix+"*", "resetchannels", "+@all")
	s := newStore(t, user, &Options{Prefix: prefix, LeaseTTL: time.Hour})
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	_, err := s.WaitGeneration(wctx, "alice", 0)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("WaitGeneration without the channel permission: got %v, want NOPERM", err)
	}
	noSecret(t, err)
}
