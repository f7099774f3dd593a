package transport_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// noop is a RoundTripper that answers every request with the same response
// without I/O, so that benchmarks measure the wrapping transports alone.
type noop struct{ resp *http.Response }

func (n noop) RoundTrip(*http.Request) (*http.Response, error) { return n.resp, nil }

// benchSetup returns a request, a base that answers it, a Source holding a
// fresh token, and that token.
func benchSetup(b *testing.B) (*http.Request, http.RoundTripper, *tokensource.Source, *oauth2.Token) {
	b.Helper()
	tok := &oauth2.Token{
		AccessToken: "tkat_benchmark_0123456789abcdef0123456789abcdef",
		TokenType:   "Bearer",
		Expiry:      time.Now().Add(24 * time.Hour),
		ExpiresIn:   int64((24 * time.Hour) / time.Second),
	}
	refuse := tokensource.RefresherFunc(func(context.Context, *oauth2.Token) (*oauth2.Token, error) {
		return nil, errors.New("no refresh in a benchmark")
	})
	var st storage.Memory
	src, err := tokensource.New(refuse, &st, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	if err := src.Put(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/v1/items?page=2", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tokenkeep-bench/1")
	base := noop{&http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody}}
	return req, base, src, tok
}

// transports returns the two transports compared: tokenkeep's, with a
// tokensource.Source, and x/oauth2's, with a caching static source.
func transports(b *testing.B) (*http.Request, map[string]http.RoundTripper) {
	req, base, src, tok := benchSetup(b)
	return req, map[string]http.RoundTripper{
		"tokenkeep": &transport.Transport{Source: src, Base: base},
		"x-oauth2":  &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(tok)), Base: base},
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	req, rts := transports(b)
	for _, name := range []string{"tokenkeep", "x-oauth2"} {
		rt := rts[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

func BenchmarkRoundTripParallel(b *testing.B) {
	req, rts := transports(b)
	for _, name := range []string{"tokenkeep", "x-oauth2"} {
		rt := rts[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkUnauthorizedStorm measures 100 concurrent requests refused with
// the same token: every operation should cost one request to the token
// endpoint. Operations follow each other closer than the recovery interval
// allows, so it is turned off.
func BenchmarkUnauthorizedStorm(b *testing.B) {
	const n = 100
	srv := newServer(b)
	src := newSource(b, srv, true)
	client := transport.NewClient(src, transport.WithBase(srv.Client().Transport), transport.WithRecoveryInterval(-1))
	var total, refused int64
	for b.Loop() {
		srv.ExpireAccessTokens()
		srv.ResetStats()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp, err := client.Get(srv.ResourceURL())
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("got status %d, want 200", resp.StatusCode)
				}
			})
		}
		wg.Wait()
		st := srv.Stats()
		total += st.TokenRequests
		refused += st.ResourceUnauthorized
	}
	b.ReportMetric(float64(total)/float64(b.N), "token-requests/op")
	b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
}
