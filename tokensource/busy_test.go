package tokensource

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/storage"
)

// TestBusy: a Source is busy while a refresh runs and while its newest
// token is unsaved, and idle otherwise.
func TestBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fleet{refreshBusy: make(chan struct{})}
		store := newHookStore()
		ctx := context.Background()
		var zero *Source
		if zero.Busy() || new(Source).Busy() {
			t.Error("nil or zero Source: busy")
		}
		src := putAt(t, p, store, "alice", -time.Minute)
		if src.Busy() {
			t.Error("saved, nothing running: busy")
		}
		go src.TokenContext(ctx)
		synctest.Wait()
		if !src.Busy() {
			t.Error("refresh under way: not busy")
		}
		close(p.refreshBusy)
		synctest.Wait()
		if src.Busy() {
			t.Error("refresh done and saved: busy")
		}
		store.setSave(func(*storage.Record) error { return errDiskFull })
		if err := src.Put(ctx, p.login("alice")); !errors.Is(err, ErrNotSaved) {
			t.Fatalf("Put on a failing store: got %v, want ErrNotSaved", err)
		}
		if !src.Busy() {
			t.Error("token unsaved: not busy")
		}
		store.setSave(nil)
		time.Sleep(time.Minute) // the save retry
		synctest.Wait()
		if src.Busy() {
			t.Error("token saved by the retry: busy")
		}
	})
}
