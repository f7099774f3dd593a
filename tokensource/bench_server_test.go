package tokensource_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

const stormCallers = 1000

// storm calls ts from stormCallers goroutines at once and returns how many
// of them got an error.
func storm(ts oauth2.TokenSource) (failed int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	for range stormCallers {
		wg.Go(func() {
			<-start
			if _, err := ts.Token(); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return failed
}

// expiredLogin returns a fresh login with its access token already expired.
func expiredLogin(srv *authserver.Server) *oauth2.Token {
	t := srv.Mint("offline_access")
	t.Expiry = time.Now().Add(-time.Minute)
	t.ExpiresIn = 0
	return t
}

func newBenchSource(b *testing.B, srv *authserver.Server, opts ...tokensource.Option) *tokensource.Source {
	b.Helper()
	r, err := tokensource.NewConfigRefresher(srv.OAuth2Config("offline_access"), srv.RevocationURL(), srv.Client())
	if err != nil {
		b.Fatal(err)
	}
	src, err := tokensource.New(r, storage.NewMemory(), "bench", opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	return src
}

// BenchmarkRefreshStorm: 1,000 goroutines ask for a token whose access token
// has expired, with 20 ms of token endpoint latency.
func BenchmarkRefreshStorm(b *testing.B) {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	defer srv.Close()
	srv.SetLatency(authserver.EndpointToken, 20*time.Millisecond)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())

	b.Run("tokenkeep", func(b *testing.B) {
		src := newBenchSource(b, srv)
		srv.ResetStats()
		for b.Loop() {
			b.StopTimer()
			if err := src.Put(ctx, expiredLogin(srv)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if failed := storm(src); failed > 0 {
				b.Fatalf("%d callers failed", failed)
			}
		}
		b.ReportMetric(float64(srv.Stats().RefreshGrants)/float64(b.N), "token-requests/op")
	})
	b.Run("x-oauth2", func(b *testing.B) {
		cfg := srv.OAuth2Config("offline_access")
		srv.ResetStats()
		for b.Loop() {
			b.StopTimer()
			t := expiredLogin(srv)
			ts := oauth2.ReuseTokenSource(t, cfg.TokenSource(ctx, t))
			b.StartTimer()
			if failed := storm(ts); failed > 0 {
				b.Fatalf("%d callers failed", failed)
			}
		}
		b.ReportMetric(float64(srv.Stats().RefreshGrants)/float64(b.N), "token-requests/op")
	})
}

// BenchmarkFailingStorm: the same storm while the token endpoint answers
// 503. tokenkeep's refresh is bounded by a 1 s refresh deadline on its
// default backoff schedule.
func BenchmarkFailingStorm(b *testing.B) {
	srv := authserver.New(authserver.Config{Rotate: true})
	defer srv.Close()
	srv.SetLatency(authserver.EndpointToken, 20*time.Millisecond)
	srv.SetFailRate(authserver.EndpointToken, 1, authserver.Fault{Status: 503})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())

	b.Run("tokenkeep", func(b *testing.B) {
		src := newBenchSource(b, srv, tokensource.WithRefreshTimeout(time.Second))
		srv.ResetStats()
		for b.Loop() {
			b.StopTimer()
			if err := src.Put(ctx, expiredLogin(srv)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if failed := storm(src); failed != stormCallers {
				b.Fatalf("%d callers failed, want all", failed)
			}
		}
		b.ReportMetric(float64(srv.Stats().TokenRequests)/float64(b.N), "token-requests/op")
	})
	b.Run("x-oauth2", func(b *testing.B) {
		cfg := srv.OAuth2Config("offline_access")
		srv.ResetStats()
		for b.Loop() {
			b.StopTimer()
			t := expiredLogin(srv)
			ts := oauth2.ReuseTokenSource(t, cfg.TokenSource(ctx, t))
			b.StartTimer()
			if failed := storm(ts); failed != stormCallers {
				b.Fatalf("%d callers failed, want all", failed)
			}
		}
		b.ReportMetric(float64(srv.Stats().TokenRequests)/float64(b.N), "token-requests/op")
	})
}

// BenchmarkBlockedCalls: four goroutines call every millisecond (paced by a
// ticker; a call that overruns its tick is followed at once) for one
// access token lifetime (1 s, 20 ms endpoint latency) per op. A call that
// takes longer than 10 ms waited for the network. x/oauth2 is given a
// 100 ms expiry delta, since its default of 10 s exceeds the lifetime.
func BenchmarkBlockedCalls(b *testing.B) {
	const life = time.Second
	srv := authserver.New(authserver.Config{Rotate: true, AccessTTL: life})
	defer srv.Close()
	srv.SetLatency(authserver.EndpointToken, 20*time.Millisecond)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())

	run := func(b *testing.B, ts oauth2.TokenSource) {
		var blocked int
		var mu sync.Mutex
		for b.Loop() {
			var wg sync.WaitGroup
			end := time.Now().Add(life)
			for range 4 {
				wg.Go(func() {
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for time.Now().Before(end) {
						start := time.Now()
						if _, err := ts.Token(); err != nil {
							b.Error(err)
							return
						}
						if time.Since(start) > 10*time.Millisecond {
							mu.Lock()
							blocked++
							mu.Unlock()
						}
						<-tick.C
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(blocked)/float64(b.N), "blocked-calls/op")
	}
	b.Run("tokenkeep", func(b *testing.B) {
		src := newBenchSource(b, srv)
		if err := src.Put(ctx, srv.Mint("offline_access")); err != nil {
			b.Fatal(err)
		}
		run(b, src)
	})
	b.Run("x-oauth2", func(b *testing.B) {
		t := srv.Mint("offline_access")
		run(b, oauth2.ReuseTokenSourceWithExpiry(t, srv.OAuth2Config("offline_access").TokenSource(ctx, t), 100*time.Millisecond))
	})
}
