package transport_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// TestLoad sends 20,000 requests from 200 goroutines through NewClient to
// the protected resource while access tokens live one second and one token
// request in ten fails with 503. Every request must succeed, the token
// endpoint must see about one refresh per lifetime, and after Close no
// goroutine may be left behind.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	const (
		workers  = 200
		requests = 20000
		lifetime = time.Second
	)
	baseline := runtime.NumGoroutine()

	srv := authserver.New(authserver.Config{AccessTTL: lifetime, Rotate: true, ReuseDetection: true})
	unavailable := authserver.Fault{Status: http.StatusServiceUnavailable}
	srv.SetFailRate(authserver.EndpointToken, 0.1, unavailable)
	// A run makes only a dozen token requests; queue a few 503s as well, so
	// that failures are ridden out whatever the random draws.
	srv.Inject(authserver.EndpointToken, unavailable, unavailable, unavailable)
	r, err := tokensource.NewConfigRefresher(srv.OAuth2Config(), srv.RevocationURL(), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	src, err := tokensource.New(r, storage.NewMemory(), "load")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Put(context.Background(), srv.Mint()); err != nil {
		t.Fatal(err)
	}
	client := transport.NewClient(src)

	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests {
				resp, err := client.Get(srv.ResourceURL())
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
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := srv.Stats()

	var mem runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&mem)

	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	client.CloseIdleConnections()
	srv.Close()

	lifetimes := elapsed.Seconds() / lifetime.Seconds()
	t.Logf("%d requests in %v from %d goroutines: %d failed; %d token requests (%d refresh grants, %d failed with 503) for %.1f token lifetimes; %d unauthorized answers; heap %d KiB",
		requests, elapsed.Round(time.Millisecond), workers, failed.Load(), st.TokenRequests, st.RefreshGrants, st.FaultsInjected, lifetimes, st.ResourceUnauthorized, mem.HeapAlloc>>10)

	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	// Early refresh renews each token once, a little before it expires:
	// about one refresh per lifetime, plus one for the start.
	if max := int64(lifetimes*1.5) + 3; st.RefreshGrants > max {
		t.Errorf("refresh grants: %d for %.1f lifetimes, want at most %d", st.RefreshGrants, lifetimes, max)
	}
	if st.FaultsInjected < 3 {
		t.Errorf("only %d token requests failed; the test did not exercise failures", st.FaultsInjected)
	}
	if st.ReuseDetections != 0 {
		t.Errorf("reuse detections: %d", st.ReuseDetections)
	}
	if mem.HeapAlloc > 256<<20 {
		t.Errorf("heap after the run: %d MiB", mem.HeapAlloc>>20)
	}

	// Goroutines of the source, the client's connections and the server
	// wind down; wait for them a little, then compare.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after Close\n%s", baseline, n, buf[:runtime.Stack(buf, true)])
	}
}
