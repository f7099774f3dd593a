package tokensource_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// freshSources returns a tokenkeep Source and an x/oauth2 ReuseTokenSource
// both holding the same fresh token; neither ever needs to refresh.
func freshSources(b *testing.B) (*tokensource.Source, oauth2.TokenSource) {
	b.Helper()
	tok := &oauth2.Token{AccessToken: "tkat_bench", TokenType: "Bearer", Expiry: time.Now().Add(24 * time.Hour)}
	never := tokensource.RefresherFunc(func(context.Context, *oauth2.Token) (*oauth2.Token, error) {
		b.Fatal("refresh of a fresh token")
		return nil, nil
	})
	src, err := tokensource.New(never, storage.NewMemory(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	if err := src.Put(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	reuse := oauth2.ReuseTokenSource(tok, oauth2.StaticTokenSource(tok))
	return src, reuse
}

func BenchmarkTokenFresh(b *testing.B) {
	src, reuse := freshSources(b)
	for _, bm := range []struct {
		name string
		ts   oauth2.TokenSource
	}{{"tokenkeep", src}, {"x-oauth2", reuse}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bm.ts.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTokenFreshParallel(b *testing.B) {
	src, reuse := freshSources(b)
	for _, bm := range []struct {
		name string
		ts   oauth2.TokenSource
	}{{"tokenkeep", src}, {"x-oauth2", reuse}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bm.ts.Token(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
