package redisstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
)

// BenchmarkSourceFanOut: N processes share one session whose access token
// has expired, and each asks its Source for a token at the same moment; the
// figure, ms/all, is the time from that moment until the last process holds
// the new token. One process refreshes (a request to the embedded
// authorization server on loopback); the others wait. With N=1 the figure
// is the time of a refresh itself, lock and save included.
//
//   - "lock": the store's GenerationWaiter is hidden, so that the waiting
//     processes take the lock in turn to load what the first saved, as
//     Sources did before they watched the stored generation;
//   - "wait": Sources as they are: a waiting process watches the stored
//     generation and adopts the new token without the lock.
//
// "file" is the File store, in one directory; "redis" the Redis store, with
// its default LockPoll and LeaseTTL. Every iteration checks that exactly
// one refresh reached the server and that every process got the same valid
// token. Run with -benchtime=10x or so: each iteration is one expiry.
func BenchmarkSourceFanOut(b *testing.B) {
	for _, kind := range []string{"file", "redis"} {
		for _, mode := range []string{"lock", "wait"} {
			for _, n := range []int{1, 2, 8, 32} {
				b.Run(fmt.Sprintf("%s/%s/N=%d", kind, mode, n), func(b *testing.B) {
					fanOut(b, kind, mode == "lock", n)
				})
			}
		}
	}
}

func fanOut(b *testing.B, kind string, noWait bool, n int) {
	srv := procServer(b)
	var sess session
	var st storage.Store
	if kind == "redis" {
		sess, st = newSession(b, srv, 10*time.Second)
	} else {
		sess, st = newFileSession(b, srv)
	}
	sess.noWait = noWait
	f := startFleet(b, sess, n, 1)
	expire(b, st)
	checkRound(b, srv, f) // the first round also waits for the children to start

	var all time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		expire(b, st)
		b.StartTimer()
		start := time.Now()
		checkRound(b, srv, f)
		all += time.Since(start)
	}
	b.ReportMetric(float64(all.Microseconds())/1000/float64(b.N), "ms/all")
}

// checkRound runs a round in every child of f and fails b unless exactly
// one refresh reached srv and every child got the same valid token.
func checkRound(b *testing.B, srv *authserver.Server, f *fleet) {
	b.Helper()
	before := srv.Stats()
	lines := f.round()
	after := srv.Stats()
	if got := after.RefreshGrants - before.RefreshGrants; got != 1 || after.ReuseDetections != 0 {
		b.Fatalf("%d refreshes and %d reuse detections for one expiry, want 1 and 0: %s",
			got, after.ReuseDetections, strings.Join(lines, "; "))
	}
	if err := proctest.SameValidToken(srv, lines); err != nil {
		b.Fatal(err)
	}
}

// newFileSession primes a session from srv in a File store in a new
// directory, and returns what children need to share it and the parent's
// File on it.
func newFileSession(b *testing.B, srv *authserver.Server) (session, storage.Store) {
	b.Helper()
	keyHex, key := newKeyHex(b)
	dir := filepath.Join(b.TempDir(), "tokens")
	st, err := storage.NewFile(dir, key)
	if err != nil {
		b.Fatal(err)
	}
	if err := storage.SaveToken(context.Background(), st, entry, srv.Mint("openid", "offline_access")); err != nil {
		b.Fatal(err)
	}
	return session{keyHex: keyHex, tokenURL: srv.Endpoint().TokenURL, leaseTTL: 10 * time.Second, dir: dir}, st
}
