package tokensource

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// slowUnlock is a Memory store whose unlocks wait until release is closed.
type slowUnlock struct {
	*storage.Memory
	release chan struct{}
}

func (s *slowUnlock) Lock(ctx context.Context, key string) (func() error, error) {
	unlock, err := s.Memory.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	return func() error { <-s.release; return unlock() }, nil
}

// TestInvalidateDuringRefreshsEnd: a caller whose token a server refused
// while a refresh was ending (it had served its new token and was releasing
// the store's lock) does not get that refused token back from the refresh
// it joins: a new refresh runs. Before, the caller got the refused token,
// and the transport gave up on the request with its 401.
func TestInvalidateDuringRefreshsEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProvider{}
		store := &slowUnlock{Memory: storage.NewMemory(), release: make(chan struct{})}
		src := newLedgerSource(t, p, store, "alice")
		stale := &oauth2.Token{AccessToken: "tkat_login", RefreshToken: "tkrt_login", TokenType: "Bearer",
			Expiry: time.Now().Add(2 * time.Minute), ExpiresIn: 3600}
		close(store.release)
		if err := src.Put(context.Background(), stale); err != nil {
			t.Fatal(err)
		}
		store.release = make(chan struct{})
		if _, err := src.Token(); err != nil { // in the early-refresh window: a background refresh starts
			t.Fatal(err)
		}
		synctest.Wait() // the refresh served its token and waits to release the lock
		fresh, err := src.Token()
		if err != nil || fresh.AccessToken == stale.AccessToken {
			t.Fatalf("after the background refresh: %v, %v; want its new token", fresh, err)
		}
		src.Invalidate(fresh)
		got := make(chan *oauth2.Token, 1)
		go func() {
			tok, err := src.Token()
			if err != nil {
				t.Error(err)
			}
			got <- tok
		}()
		synctest.Wait()
		close(store.release)
		tok := <-got
		if tok != nil && tok.AccessToken == fresh.AccessToken {
			t.Fatalf("Token after Invalidate returned the refused token")
		}
		if n := p.calls.Load(); n != 2 {
			t.Errorf("provider calls: %d, want 2 (the background refresh and the one after Invalidate)", n)
		}
	})
}
