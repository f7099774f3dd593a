package sessions_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/time/rate"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/tokensource/sessions"
)

// heapInUse returns the bytes allocated on the heap and in use, after a
// collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func userKey(i int) string { return "user" + strconv.Itoa(i) }

// filledStore returns a Memory store holding a fresh session for each of n
// users.
func filledStore(b *testing.B, n int) *storage.Memory {
	b.Helper()
	p := &provider{}
	store := storage.NewMemory()
	ctx := context.Background()
	for i := range n {
		if err := storage.SaveToken(ctx, store, userKey(i), p.login(userKey(i))); err != nil {
			b.Fatal(err)
		}
	}
	return store
}

// tokenBytes returns the heap bytes of the n users' tokens as loaded from
// store, which is what an open session holds of its token.
func tokenBytes(b *testing.B, store storage.Store, n int) uint64 {
	b.Helper()
	toks := make([]*oauth2.Token, n)
	before := heapInUse()
	for i := range toks {
		t, err := storage.LoadToken(context.Background(), store, userKey(i))
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = t
	}
	after := heapInUse()
	runtime.KeepAlive(toks)
	return after - before
}

// xoauth2Config is an oauth2.Config whose endpoint is never reached: idle
// sessions do not refresh.
var xoauth2Config = &oauth2.Config{ClientID: "bench", Endpoint: oauth2.Endpoint{TokenURL: "https://auth.example.com/token"}}

// BenchmarkIdleSessions: the memory and goroutines that n open, idle
// sessions cost, each with its token loaded and an HTTP client made.
// tokenkeep: a Set's sessions. x-oauth2: a map from user to the
// http.Client of an oauth2.ReuseTokenSource (oauth2.Config.Client), the
// nearest equivalent. bytes/session includes the token; overhead-B/session
// does not.
func BenchmarkIdleSessions(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			store := filledStore(b, n)
			tokens := tokenBytes(b, store, n)
			ctx := context.Background()
			b.Run("tokenkeep", func(b *testing.B) {
				for range b.N {
					idle(b, n, tokens, func() (any, func()) {
						set, err := sessions.New(sessions.Config{Refresher: &provider{}, Store: store, Idle: -1})
						if err != nil {
							b.Fatal(err)
						}
						for i := range n {
							if _, err := set.Client(ctx, userKey(i)); err != nil {
								b.Fatal(err)
							}
						}
						return set, func() { set.Close() }
					})
				}
			})
			b.Run("x-oauth2", func(b *testing.B) {
				for range b.N {
					idle(b, n, tokens, func() (any, func()) {
						clients := make(map[string]*http.Client)
						for i := range n {
							t, err := storage.LoadToken(ctx, store, userKey(i))
							if err != nil {
								b.Fatal(err)
							}
							clients[userKey(i)] = xoauth2Config.Client(ctx, t)
						}
						return clients, func() {}
					})
				}
			})
		})
	}
}

// idle measures open, which opens n sessions and returns what holds them
// and how to close them.
func idle(b *testing.B, n int, tokens uint64, open func() (any, func())) {
	b.StopTimer()
	g0, h0 := runtime.NumGoroutine(), heapInUse()
	b.StartTimer()
	held, closeAll := open()
	b.StopTimer()
	h1, g1 := heapInUse(), runtime.NumGoroutine()
	runtime.KeepAlive(held)
	closeAll()
	b.StartTimer()
	b.ReportMetric(float64(h1-h0)/float64(n), "bytes/session")
	b.ReportMetric((float64(h1-h0)-float64(tokens))/float64(n), "overhead-B/session")
	b.ReportMetric(float64(g1-g0), "goroutines")
}

// limited is a provider that answers after latency and refuses with 429
// any request beyond perSecond within one second. It records when each
// request came and how many ran at once.
type limited struct {
	latency   time.Duration
	perSecond int

	mu      sync.Mutex
	n       int
	times   []time.Time // accepted and refused requests alike
	refused int
	running int
	peak    int
}

func (p *limited) Refresh(ctx context.Context, t *oauth2.Token) (*oauth2.Token, error) {
	p.mu.Lock()
	now := time.Now()
	p.times = append(p.times, now)
	inWindow := 0
	for i := len(p.times) - 1; i >= 0 && now.Sub(p.times[i]) < time.Second; i-- {
		inWindow++
		if inWindow > p.perSecond {
			break
		}
	}
	over := inWindow > p.perSecond
	if over {
		p.refused++
	}
	p.running++
	p.peak = max(p.peak, p.running)
	p.n++
	n := p.n
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running--
		p.mu.Unlock()
	}()
	time.Sleep(p.latency)
	if over {
		return nil, &oauth2.RetrieveError{Response: &http.Response{StatusCode: http.StatusTooManyRequests,
			Status: "429 Too Many Requests", Header: http.Header{"Retry-After": {"1"}}}}
	}
	return &oauth2.Token{AccessToken: fmt.Sprintf("tkat_storm_%d", n), RefreshToken: t.RefreshToken, TokenType: "Bearer",
		Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}, nil
}

// busiestSecond returns the most requests within any second, [t, t+1s).
func (p *limited) busiestSecond() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	most, j := 0, 0
	for i := range p.times {
		for p.times[i].Sub(p.times[j]) >= time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// Storm parameters. Logins are granted for two minutes, so that
// tokenkeep's early-refresh window is a quarter of that (30 s, plus up to
// 7.5 s of jitter) and its expiry point 10 s before Expiry.
const (
	stormLife     = 2 * time.Minute
	stormValid    = 40 * time.Second     // from the start until the logins' Expiry: all stale at once for tokenkeep
	stormDuration = 20 * time.Second     // to refresh every session at the provider's limit
	stormLatency  = 5 * time.Millisecond // of each token request
	stormCallers  = 32
	stormPause    = 2 * time.Millisecond // between a caller's calls
	stormSlots    = 64                   // token requests at once
)

// stormToken is the login of session i, granted for stormLife and
// expiring at expiry.
func stormToken(i int, expiry time.Time) *oauth2.Token {
	return &oauth2.Token{AccessToken: "tkat_storm_login_" + strconv.Itoa(i), RefreshToken: "tkrt_storm_" + strconv.Itoa(i),
		TokenType: "Bearer", Expiry: expiry, ExpiresIn: int64(stormLife / time.Second)}
}

// BenchmarkStaleStorm: n sessions turn stale at the same moment, against a
// provider that refuses (429) requests beyond perSecond = n/20 a second,
// so that refreshing them all takes 20 s of the 30 s before tokenkeep stops
// serving their tokens. stormCallers goroutines call sessions at random
// throughout, on the real clock. Figures: peak-concurrent (token requests
// at once), max-req/s (in any one second; the provider's cap is req/s-cap),
// requests, refused (429 answers), refreshed (requests answered with a new
// token: one per session at most), calls, blocked-valid (calls that took
// 5 ms or more — a token request's latency — while the provider still
// held every login valid: target 0), failed-calls.
//
// tokenkeep: a Set with Limits of stormSlots at once and 90 % of perSecond
// a second, with bursts of 1: a token bucket spaces the requests it lets
// go, but the moments they reach the provider shift with scheduling, so
// the rate keeps a margin below the provider's limit. x-oauth2:
// a map of oauth2.ReuseTokenSource, which refreshes when a caller finds the
// token within 10 s of its expiry.
func BenchmarkStaleStorm(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		perSecond := n / int(stormDuration/time.Second)
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			b.Run("tokenkeep", func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					p := &limited{latency: stormLatency, perSecond: perSecond}
					set, err := sessions.New(sessions.Config{
						Refresher: p, Store: storage.NewMemory(), Idle: -1,
						Scheduler: &tokensource.Scheduler{MaxRunning: stormSlots},
						Limits:    tokensource.NewLimits(stormSlots).Rate(rate.Limit(perSecond)*0.9, 1),
					})
					if err != nil {
						b.Fatal(err)
					}
					srcs := make([]*tokensource.Source, n)
					for i := range n {
						// Put each session with the scheduler waiting,
						// so that they turn stale together.
						srcs[i], err = set.Source(userKey(i))
						if err != nil {
							b.Fatal(err)
						}
					}
					get := func(i int) error {
						_, err := srcs[i].TokenContext(context.Background())
						return err
					}
					put := func(expiry time.Time) {
						for i := range n {
							if err := srcs[i].Put(context.Background(), stormToken(i, expiry)); err != nil {
								b.Fatal(err)
							}
						}
					}
					b.StartTimer()
					storm(b, p, n, put, get)
					b.StopTimer()
					set.Close()
					b.StartTimer()
				}
			})
			b.Run("x-oauth2", func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					p := &limited{latency: stormLatency, perSecond: perSecond}
					srcs := make([]oauth2.TokenSource, n)
					put := func(expiry time.Time) {
						for i := range n {
							srcs[i] = oauth2.ReuseTokenSource(stormToken(i, expiry), &userRefresher{p: p, rt: "tkrt_storm_" + strconv.Itoa(i)})
						}
					}
					get := func(i int) error {
						_, err := srcs[i].Token()
						return err
					}
					b.StartTimer()
					storm(b, p, n, put, get)
				}
			})
		})
	}
}

// userRefresher is the oauth2.TokenSource under one user's
// ReuseTokenSource: it redeems the user's refresh token at p.
type userRefresher struct {
	p  *limited
	rt string
}

func (u *userRefresher) Token() (*oauth2.Token, error) {
	return u.p.Refresh(context.Background(), &oauth2.Token{RefreshToken: u.rt})
}

// storm runs one storm: put logs every session in with tokens that expire
// stormValid from now, and stormCallers goroutines call get on sessions at
// random until then, while every session's token is valid for the
// provider.
func storm(b *testing.B, p *limited, n int, put func(expiry time.Time), get func(i int) error) {
	end := time.Now().Add(stormValid)
	put(end)
	var blocked, failed, calls atomic.Int64
	var wg sync.WaitGroup
	for c := range stormCallers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for time.Now().Before(end) {
				start := time.Now()
				err := get(rng.IntN(n))
				calls.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
				case time.Since(start) >= stormLatency:
					blocked.Add(1)
				}
				time.Sleep(stormPause)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	p.mu.Lock()
	peak, refused, requests := p.peak, p.refused, len(p.times)
	p.mu.Unlock()
	b.ReportMetric(float64(peak), "peak-concurrent")
	b.ReportMetric(float64(p.busiestSecond()), "max-req/s")
	b.ReportMetric(float64(p.perSecond), "req/s-cap")
	b.ReportMetric(float64(requests), "requests")
	b.ReportMetric(float64(refused), "refused")
	b.ReportMetric(float64(requests-refused), "refreshed")
	b.ReportMetric(float64(calls.Load()), "calls")
	b.ReportMetric(float64(blocked.Load()), "blocked-valid")
	b.ReportMetric(float64(failed.Load()), "failed-calls")
	b.StartTimer()
}
