package transport_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// TestLoad sends 20,000 requests from 200 goroutines through NewClient to
// a protected resource while access tokens live one second, resource
// requests spend up to 40 ms in transit, and token requests take 20 ms and
// fail with 503 one time in ten (and three times in a row at the start).
// Every request must succeed, the token endpoint must see about one refresh
// per lifetime and no reuse of a spent refresh token, and after Close no
// goroutine may be left behind.
//
// It runs in a synctest bubble against a provider in memory: time is fake
// and moves only when every goroutine waits, so lifetimes, latencies and
// backoffs play out the same however slow the machine is. (On real sockets
// and the real clock, round trips under the race detector on a busy machine
// outlived one-second tokens, and hundreds of requests failed.) The bubble
// itself checks for leaks: synctest.Test fails if a goroutine it started is
// still blocked when the test ends.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	synctest.Test(t, testLoad)
}

func testLoad(t *testing.T) {
	const (
		workers  = 200
		requests = 20000
		lifetime = time.Second
		think    = 80 * time.Millisecond // between a worker's requests
	)
	p := newMemProvider(lifetime, 1)
	p.tokenLatency = 20 * time.Millisecond
	p.resourceMin, p.resourceMax = time.Millisecond, 40*time.Millisecond
	p.failRate = 0.1
	// A run makes only a dozen token requests; queue a few 503s as well,
	// so that failures are ridden out whatever the random draws.
	p.failNext = 3

	r, err := tokensource.NewConfigRefresher(memConfig(), "", &http.Client{Transport: p})
	if err != nil {
		t.Fatal(err)
	}
	src, err := tokensource.New(r, storage.NewMemory(), "load")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Put(context.Background(), p.Mint()); err != nil {
		t.Fatal(err)
	}
	client := transport.NewClient(src, transport.WithBase(p))

	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= requests {
				resp, err := client.Get(memResourceURL)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("request answered %s", resp.Status)
				}
				<-time.After(think) // on the bubble's clock: a pause between requests
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := p.stats()

	var mem runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&mem)

	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	lifetimes := elapsed.Seconds() / lifetime.Seconds()
	t.Logf("%d requests in %v of fake time from %d goroutines: %d failed; %d token requests (%d refresh grants, %d failed with 503) for %.1f token lifetimes; %d unauthorized answers; heap %d KiB",
		requests, elapsed, workers, failed.Load(), st.TokenRequests, st.RefreshGrants, st.Faults, lifetimes, st.Unauthorized, mem.HeapAlloc>>10)

	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	// Early refresh renews each token once, a little before it expires:
	// about one refresh per lifetime, plus one for the start.
	if max := int(lifetimes*1.5) + 3; st.RefreshGrants > max {
		t.Errorf("refresh grants: %d for %.1f lifetimes, want at most %d", st.RefreshGrants, lifetimes, max)
	}
	if st.RefreshGrants < int(lifetimes/2) {
		t.Errorf("refresh grants: %d for %.1f lifetimes; the test did not exercise expiry", st.RefreshGrants, lifetimes)
	}
	if st.Faults < 3 {
		t.Errorf("only %d token requests failed; the test did not exercise failures", st.Faults)
	}
	if st.Reuse != 0 {
		t.Errorf("reuse detections: %d", st.Reuse)
	}
	if mem.HeapAlloc > 256<<20 {
		t.Errorf("heap after the run: %d MiB", mem.HeapAlloc>>20)
	}
}
