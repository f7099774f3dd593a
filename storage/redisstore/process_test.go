package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// TestProcessesShareOneRefresh: 4 processes of 8 Sources each ask together
// for an expired session, 20 times over: each time exactly one refresh, no
// reuse detection, and all 32 get the same valid token.
func TestProcessesShareOneRefresh(t *testing.T) {
	shareOneRefresh(t, 4, 8, 20, DefaultLeaseTTL)
}

// TestRedisFigures logs how many refreshes each expiry costs, and how many
// reuse detections the provider saw, when N processes share one session
// through Redis.
func TestRedisFigures(t *testing.T) {
	for _, tc := range []struct {
		name            string
		procs, expiries int
	}{
		{"N=2", 2, 5},
		{"N=8", 8, 5},
		{"N=32", 32, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			grants := shareOneRefresh(t, tc.procs, 1, tc.expiries, DefaultLeaseTTL)
			var sum int64
			for _, g := range grants {
				sum += g
			}
			t.Logf("N=%d processes, %d expiries: %.2f refreshes per expiry, 0 reuse detections, %v per expiry",
				tc.procs, tc.expiries, float64(sum)/float64(len(grants)),
				(time.Since(start) / time.Duration(tc.expiries)).Round(time.Millisecond))
		})
	}
}

// TestSlowTokenEndpoint: the token endpoint answers after 3 s, three times
// the 1 s lease. The holder's renewals keep the lease, so the others wait
// instead of redeeming the same refresh token.
func TestSlowTokenEndpoint(t *testing.T) {
	// The lease is real time in a real Redis, renewed every third of it: a
	// renewal may come two thirds of a lease late, a stall that a loaded
	// machine survives.
	const ttl, slow = time.Second, 3 * time.Second
	t.Run("processes", func(t *testing.T) {
		srv := procServer(t)
		srv.SetLatency(authserver.EndpointToken, slow)
		sess, st := newSession(t, srv, ttl)
		f := startFleet(t, sess, 3, 2)
		expire(t, st)
		lines := f.round()
		s := srv.Stats()
		if s.RefreshGrants != 1 || s.ReuseDetections != 0 {
			t.Fatalf("refresh grants %d, reuse detections %d; want 1 and 0", s.RefreshGrants, s.ReuseDetections)
		}
		if err := proctest.SameValidToken(srv, lines); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stores", func(t *testing.T) {
		srv := procServer(t)
		srv.SetLatency(authserver.EndpointToken, slow)
		_, st := newSession(t, srv, ttl)
		expire(t, st)
		r, err := tokensource.NewConfigRefresher(proctest.Config(srv.Endpoint().TokenURL), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		stores := make([]*Store, 3)
		renews := make([]*atomic.Int64, len(stores))
		ats := make([]string, len(stores))
		var wg sync.WaitGroup
		for i := range stores {
			// One client and one Store each, as separate processes have.
			stores[i] = twin(t, st)
			renews[i] = renewals(stores[i])
			wg.Go(func() {
				src, err := tokensource.New(r, stores[i], entry)
				if err != nil {
					t.Error(err)
					return
				}
				defer src.Close()
				tok, err := src.TokenContext(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				ats[i] = tok.AccessToken
			})
		}
		wg.Wait()
		var renewed int64
		for i := range stores {
			renewed += renews[i].Load()
			if ats[i] != ats[0] {
				t.Fatalf("store %d's Source got another token than store 0's", i)
			}
		}
		s := srv.Stats()
		if s.RefreshGrants != 1 || s.ReuseDetections != 0 {
			t.Fatalf("refresh grants %d, reuse detections %d; want 1 and 0", s.RefreshGrants, s.ReuseDetections)
		}
		if renewed < 2 {
			t.Fatalf("the lease was renewed %d times during a %v refresh with a %v lease; want at least 2", renewed, slow, ttl)
		}
	})
}

// TestProcessKilledMidRefresh SIGKILLs the process that holds the lease and
// is waiting for the token endpoint, then runs three more.
//
// The dead holder's lease stays in Redis until its TTL (1 s here) runs out;
// the survivors wait for that, and then take the lock: a survivor still
// waiting at its lock timeout (20 s, see childRound) says it failed, which
// CheckSurvivors rejects. What they see next depends on whether the killed
// refresh reached the server (see proctest.Kills). In both cases the stored
// token still decodes.
func TestProcessKilledMidRefresh(t *testing.T) {
	const ttl = time.Second
	for _, tc := range proctest.Kills {
		t.Run(tc.Name, func(t *testing.T) {
			srv := procServer(t)
			sess, st := newSession(t, srv, ttl)
			expire(t, st)
			victim := startFleet(t, sess, 1, 1)
			survivors := startFleet(t, sess, 3, 1)
			srv.Inject(authserver.EndpointToken, tc.Fault)

			victim.start()
			if err := tc.Await(srv); err != nil {
				t.Fatal(err)
			}
			victim.kill(0)
			lk := st.keys(entry).lease
			if n, err := st.c.Exists(context.Background(), lk).Result(); err != nil || n != 1 {
				t.Fatalf("the dead holder's lease: exists %d, %v; want 1", n, err)
			}

			start := time.Now()
			lines := survivors.round()
			took := time.Since(start)
			if err := tc.CheckSurvivors(srv, lines); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Load(context.Background(), entry); err != nil {
				t.Fatalf("store after the kill: %v", err)
			}
			s := srv.Stats()
			t.Logf("survivors finished in %v: %s (refresh grants %d, reuse detections %d)",
				took.Round(time.Millisecond), tc.Want, s.RefreshGrants, s.ReuseDetections)
			if tc.Want == proctest.OK && (s.RefreshGrants != 1 || s.ReuseDetections != 0) {
				t.Fatalf("refresh grants %d, reuse detections %d; want 1 and 0", s.RefreshGrants, s.ReuseDetections)
			}
		})
	}
}
