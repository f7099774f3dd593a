package transport_test

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/transport"
)

// refuseAll answers every request 401, refusing its token.
var refuseAll = roundTripFunc(func(req *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusUnauthorized,
		Header:     http.Header{"Www-Authenticate": {invalidToken}},
		Body:       http.NoBody,
		Request:    req,
	}, nil
})

// get sends a GET through tr and reports its status.
func get(t *testing.T, tr http.RoundTripper) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (s *fakeSource) issuedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// TestRecoveryInterval sends requests to an endpoint that refuses every
// token: once a 401 has cost a refresh, no 401 costs another until the
// interval has passed, to the nanosecond.
func TestRecoveryInterval(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration // Transport.RecoveryInterval
		want     time.Duration // the interval in force; 0 for none
	}{
		{"default", 0, transport.DefaultRecoveryInterval},
		{"one minute", time.Minute, time.Minute},
		{"one nanosecond", time.Nanosecond, time.Nanosecond},
		{"off", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &fakeSource{}
				tr := &transport.Transport{Source: src, Base: refuseAll, RecoveryInterval: tt.interval}
				const n = 50
				for range n {
					if got := get(t, tr); got != http.StatusUnauthorized {
						t.Fatalf("got status %d, want 401", got)
					}
				}
				want := 2 // the first token, and one refresh
				if tt.want == 0 {
					want = 1 + n
				}
				if got := src.issuedCount(); got != want {
					t.Fatalf("%d requests refused: got %d tokens issued, want %d", n, got, want)
				}
				if tt.want == 0 {
					return
				}
				time.Sleep(tt.want - 1)
				get(t, tr)
				if got := src.issuedCount(); got != 2 {
					t.Fatalf("1ns before the interval ends: got %d tokens issued, want 2", got)
				}
				time.Sleep(time.Nanosecond)
				for range n {
					get(t, tr)
				}
				if got := src.issuedCount(); got != 3 {
					t.Fatalf("once the interval has passed, %d requests: got %d tokens issued, want 3", n, got)
				}
			})
		})
	}
}

// TestRecoveryIntervalConcurrent sends two waves of concurrent requests to
// an endpoint that refuses every token: however they interleave, the first
// wave costs one refresh and the second none.
func TestRecoveryIntervalConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{}
		tr := &transport.Transport{Source: src, Base: refuseAll}
		get(t, &transport.Transport{Source: src, Base: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
		})}) // the first token, issued before the waves
		for wave := range 2 {
			var wg sync.WaitGroup
			for range 50 {
				wg.Go(func() { get(t, tr) })
			}
			wg.Wait()
			if got := src.issuedCount(); got != 2 {
				t.Fatalf("after wave %d: got %d tokens issued, want 2", wave+1, got)
			}
		}
	})
}

// TestUnauthorizedEndpointAuthserver points a client at a resource that
// answers every request 401: 50 requests cost one refresh grant, not 50.
func TestUnauthorizedEndpointAuthserver(t *testing.T) {
	srv := newServer(t)
	src := newSource(t, srv, true)
	srv.SetFailRate(authserver.EndpointResource, 1, authserver.Fault{Status: http.StatusUnauthorized})
	// An hour: the test must not depend on how fast the machine is.
	client := transport.NewClient(src, transport.WithBase(srv.Client().Transport), transport.WithRecoveryInterval(time.Hour))
	srv.ResetStats()
	for range 50 {
		resp, err := client.Get(srv.ResourceURL())
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got status %d, want 401", resp.StatusCode)
		}
	}
	if st := srv.Stats(); st.RefreshGrants != 1 {
		t.Errorf("50 requests refused: got %d refresh grants, want 1", st.RefreshGrants)
	}
}
