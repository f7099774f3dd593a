package tokensource_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
)

// ledgerEnv is procEnv with a revocation endpoint, and the shared store as
// the parent sees it.
func ledgerEnv(t *testing.T, srv *authserver.Server) (proctest.Child, storage.Store) {
	t.Helper()
	child := procEnv(t, srv, proctest.ModeFile)
	child.Env = append(child.Env, proctest.EnvRevokeURL+"="+srv.RevocationURL())
	dir := strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")
	st, err := proctest.Store(proctest.ModeFile, dir)
	if err != nil {
		t.Fatal(err)
	}
	return child, st
}

// withOp returns c performing op.
func withOp(c proctest.Child, op string, env ...string) proctest.Child {
	c.Env = append(append(append([]string(nil), c.Env...), proctest.EnvOp+"="+op), env...)
	return c
}

// TestProcessesLedgerRevokeAndPut runs 8 processes through 20 expiries of a
// rotating session, with one of them revoking or logging in again at random
// in some rounds. Whatever the interleaving: the stored generation only
// grows, no spent refresh token is presented, and after a Revoke every
// process reports ErrReauthRequired until the next Put.
func TestProcessesLedgerRevokeAndPut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 200 processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x1ed9e))
	srv := procServer(t)
	child, st := ledgerEnv(t, srv)
	ctx := context.Background()
	dir := strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")
	var gen uint64
	ended := false
	revokes, puts, checks := 0, 0, 0
	for round := range 20 {
		if !ended {
			if err := proctest.Expire(ctx, proctest.ModeFile, dir); err != nil {
				t.Fatal(err)
			}
		}
		op := child
		switch r := rng.IntN(4); {
		case r == 0:
			op, ended = withOp(child, proctest.OpRevoke), true
			revokes++
		case r == 1:
			b, _ := json.Marshal(srv.Mint("openid", "offline_access"))
			op, ended = withOp(child, proctest.OpPut, proctest.EnvPut+"="+string(b)), false
			puts++
		}
		others, err := child.Start(7)
		if err != nil {
			t.Fatal(err)
		}
		one, err := op.Start(1)
		if err != nil {
			t.Fatal(err)
		}
		one.Release()
		others.Release()
		lines := append(others.Wait(), one.Wait()...)
		for i, l := range lines {
			if strings.HasPrefix(l, proctest.Failed) {
				t.Fatalf("round %d: process %d said %q", round, i, proctest.Redact(l))
			}
		}
		rec, err := st.Load(ctx, proctest.Entry)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if rec.Generation < gen {
			t.Fatalf("round %d: stored generation went from %d to %d", round, gen, rec.Generation)
		}
		gen = rec.Generation
		checks++
		if got := srv.Stats().ReuseDetections; got != 0 {
			t.Fatalf("round %d: %d reuse detections", round, got)
		}
		// Every process now agrees on the session.
		after := runTogether(t, child, 2)
		if ended {
			for i, l := range after {
				if l != proctest.Reauth {
					t.Fatalf("round %d, after Revoke: process %d said %q, want %q", round, i, proctest.Redact(l), proctest.Reauth)
				}
			}
		} else if err := proctest.SameValidToken(srv, after); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	st2 := srv.Stats()
	t.Logf("20 rounds × 8 processes (+2 checking): %d revokes, %d puts, final generation %d, %d generation checks, %d refresh grants, %d reuse detections",
		revokes, puts, gen, checks, st2.RefreshGrants, st2.ReuseDetections)
}

// TestSIGTERMMidRefresh stops a worker with SIGTERM while its refresh
// request is at the provider, after the provider processed it, 50 times (10
// workers on 10 sessions at once, 5 times): Close waits for the answer and
// saves it, so the stored refresh token is always the newest the provider
// issued and no start presents a spent one.
func TestSIGTERMMidRefresh(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on Windows")
	}
	if testing.Short() {
		t.Skip("starts 50 processes")
	}
	const workers, batches = 10, 5
	srv := procServer(t)
	child, _ := ledgerEnv(t, srv)
	ctx := context.Background()
	term := withOp(child, proctest.OpTerm)
	dirs := []string{strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")}
	for len(dirs) < workers {
		d := t.TempDir()
		if err := proctest.Prime(ctx, proctest.ModeFile, d, srv.Mint("openid", "offline_access")); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	slow := make([]authserver.Fault, workers)
	for i := range slow {
		slow[i] = authserver.Fault{SlowBody: 300 * time.Millisecond}
	}
	for b := range batches {
		for _, d := range dirs {
			if err := proctest.Expire(ctx, proctest.ModeFile, d); err != nil {
				t.Fatal(err)
			}
		}
		before := srv.Stats().RefreshGrants
		srv.Inject(authserver.EndpointToken, slow...)
		var groups []*proctest.Group
		for _, d := range dirs {
			c := term
			c.Env = append(append([]string(nil), term.Env...), proctest.EnvDir+"="+d)
			g, err := c.Start(1)
			if err != nil {
				t.Fatal(err)
			}
			groups = append(groups, g)
		}
		for _, g := range groups {
			g.Release()
		}
		processed := proctest.Kill{Reached: func(s authserver.Stats) bool { return s.RefreshGrants >= before+workers }}
		if err := processed.Await(srv); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		for _, g := range groups {
			g.Process(0).Signal(syscall.SIGTERM)
		}
		for i, g := range groups {
			if lines := g.Wait(); lines[0] != proctest.Closed {
				t.Fatalf("batch %d, worker %d said %q, want %q", b, i, proctest.Redact(lines[0]), proctest.Closed)
			}
			st, err := proctest.Store(proctest.ModeFile, dirs[i])
			if err != nil {
				t.Fatal(err)
			}
			rec, err := st.Load(ctx, proctest.Entry)
			if err != nil {
				t.Fatalf("batch %d, worker %d: %v", b, i, err)
			}
			if rec.Token == nil || !srv.RefreshTokenActive(rec.Token.RefreshToken) {
				t.Fatalf("batch %d, worker %d: the stored refresh token is not the one the provider holds valid", b, i)
			}
		}
	}
	s := srv.Stats()
	t.Logf("%d SIGTERMs mid-refresh: %d refresh grants, %d reuse detections", workers*batches, s.RefreshGrants, s.ReuseDetections)
	if s.ReuseDetections != 0 || s.RefreshGrants != workers*batches {
		t.Fatalf("%d refresh grants and %d reuse detections, want %d and 0", s.RefreshGrants, s.ReuseDetections, workers*batches)
	}
}
