package tokensource_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/internal/secretservice"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// TestMain lets the test binary act as a child process of the
// multi-process tests.
func TestMain(m *testing.M) {
	if os.Getenv(proctest.EnvChild) != "" {
		os.Exit(proctest.Main(os.Stdout))
	}
	os.Exit(m.Run())
}

// procServer behaves like Okta or Auth0 with rotation on.
func procServer(t *testing.T) *authserver.Server {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	t.Cleanup(srv.Close)
	return srv
}

// procEnv prepares a shared store of mode for child processes of this test
// binary, primed with a login from srv.
func procEnv(t *testing.T, srv *authserver.Server, mode string) proctest.Child {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	t.Setenv(proctest.EnvKey, hex.EncodeToString(key))
	if err := proctest.Prime(context.Background(), mode, dir, srv.Mint("openid", "offline_access")); err != nil {
		t.Fatal(err)
	}
	return proctest.Child{
		Path: os.Args[0],
		Args: []string{"-test.run=^$"},
		Env: []string{
			proctest.EnvMode + "=" + mode,
			proctest.EnvDir + "=" + dir,
			proctest.EnvTokenURL + "=" + srv.Endpoint().TokenURL,
		},
	}
}

// runTogether starts n children, lets them go at once and returns their
// output lines.
func runTogether(t *testing.T, c proctest.Child, n int) []string {
	t.Helper()
	g, err := c.Start(n)
	if err != nil {
		t.Fatal(err)
	}
	g.Release()
	return g.Wait()
}

func testProcessesShareOneRefresh(t *testing.T, mode string, procs, expiries int) {
	srv := procServer(t)
	child := procEnv(t, srv, mode)
	ctx := context.Background()
	dir := strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")
	for round := range expiries {
		if err := proctest.Expire(ctx, mode, dir); err != nil {
			t.Fatal(err)
		}
		before := srv.Stats()
		lines := runTogether(t, child, procs)
		after := srv.Stats()
		if got := after.RefreshGrants - before.RefreshGrants; got != 1 {
			t.Fatalf("expiry %d: %d processes made %d refreshes, want 1", round, procs, got)
		}
		if after.ReuseDetections != 0 {
			t.Fatalf("expiry %d: %d reuse detections", round, after.ReuseDetections)
		}
		if err := proctest.SameValidToken(srv, lines); err != nil {
			t.Fatalf("expiry %d: %v", round, err)
		}
	}
}

// TestProcessesShareOneRefresh starts 8 processes together on an expired
// token, 20 times: each time exactly one refresh, no reuse detection, and
// all 8 get the same valid token.
func TestProcessesShareOneRefresh(t *testing.T) {
	testProcessesShareOneRefresh(t, proctest.ModeFile, 8, 20)
}

// TestProcessesShareOneRefreshKeyring is the same through the OS keyring,
// against a private Secret Service.
func TestProcessesShareOneRefreshKeyring(t *testing.T) {
	svc, err := secretservice.Start(func(addr string) error {
		t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
		k, err := storage.NewKeyring(proctest.KeyringService, &storage.KeyringOptions{LockDir: t.TempDir()})
		if err != nil {
			return err
		}
		_, err = k.Load(context.Background(), "probe")
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	})
	if errors.Is(err, secretservice.ErrMissing) {
		t.Skipf("no Secret Service: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	testProcessesShareOneRefresh(t, proctest.ModeKeyring, 8, 5)
}

// TestProcessKilledMidRefresh SIGKILLs the process that holds the lock and
// is waiting for the token endpoint, then runs seven more.
//
// What the survivors see depends on whether the killed refresh reached the
// server (see proctest.Kills). In neither case does anyone wait for the
// dead process's lock (a survivor that did would fail at its lock timeout),
// exactly one survivor asks the server — to refresh, or to learn that the
// session ended, which the others then read from the store — and the store
// always decodes.
func TestProcessKilledMidRefresh(t *testing.T) {
	for _, tc := range proctest.Kills {
		t.Run(tc.Name, func(t *testing.T) {
			srv := procServer(t)
			child := procEnv(t, srv, proctest.ModeFile)
			dir := strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")
			ctx := context.Background()
			proctest.Expire(ctx, proctest.ModeFile, dir)
			srv.Inject(authserver.EndpointToken, tc.Fault)

			victim, err := child.Start(1)
			if err != nil {
				t.Fatal(err)
			}
			victim.Release()
			if err := tc.Await(srv); err != nil {
				t.Fatal(err)
			}
			victim.Process(0).Kill()
			victim.Wait()

			before := srv.Stats()
			start := time.Now()
			lines := runTogether(t, child, 7)
			took := time.Since(start)
			if err := tc.CheckSurvivors(srv, lines); err != nil {
				t.Fatal(err)
			}
			if got := srv.Stats().RefreshGrants - before.RefreshGrants; got != 1 {
				t.Errorf("refresh grants by the survivors: got %d, want 1", got)
			}
			st, _ := proctest.Store(proctest.ModeFile, dir)
			if _, err := st.Load(ctx, proctest.Entry); err != nil {
				t.Fatalf("store after the kill: %v", err)
			}
			t.Logf("survivors finished in %v: %s (refresh grants %d, reuse detections %d)",
				took.Round(time.Millisecond), tc.Want, srv.Stats().RefreshGrants, srv.Stats().ReuseDetections)
		})
	}
}

// nonLocking hides a store's Locker, as when a process cannot take the lock.
type nonLocking struct{ storage.Store }

// held is an http.RoundTripper that holds the first request it is given
// until release is closed, and reports when it has it.
type held struct {
	base    http.RoundTripper
	once    sync.Once
	sent    chan struct{} // closed when the first request is held
	release chan struct{} // closed to send it on
}

func (h *held) RoundTrip(req *http.Request) (*http.Response, error) {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.sent)
		select {
		case <-h.release:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return h.base.RoundTrip(req)
}

// TestProcessInvalidGrantRecovery: this process reads the session, then its
// refresh is held up on the way to the server while another process rotates
// the token and saves it. Its own refresh then presents a retired refresh
// token and gets invalid_grant; it must read the store again, find the
// rotated token and carry on instead of reporting ErrReauthRequired. The
// request is held by the test, not by a delay, so the other process may
// take as long as it needs to start.
func TestProcessInvalidGrantRecovery(t *testing.T) {
	srv := authserver.New(authserver.Config{Rotate: true}) // retired tokens answer invalid_grant
	t.Cleanup(srv.Close)
	child := procEnv(t, srv, proctest.ModeFile)
	dir := strings.TrimPrefix(child.Env[1], proctest.EnvDir+"=")
	ctx := context.Background()
	proctest.Expire(ctx, proctest.ModeFile, dir)
	st, err := proctest.Store(proctest.ModeFile, dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &held{base: http.DefaultTransport, sent: make(chan struct{}), release: make(chan struct{})}
	r, _ := tokensource.NewConfigRefresher(proctest.Config(srv.Endpoint().TokenURL), "", &http.Client{Transport: h})
	b, err := tokensource.New(r, nonLocking{st}, proctest.Entry,
		tokensource.WithAttemptTimeout(5*time.Minute), tokensource.WithRefreshTimeout(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	type result struct {
		at  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := b.TokenContext(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{at: tok.AccessToken}
	}()
	<-h.sent
	lines := runTogether(t, child, 1) // rotates while this process's request waits
	if err := proctest.SameValidToken(srv, lines); err != nil {
		t.Fatal(err)
	}
	close(h.release)

	res := <-done
	if res.err != nil {
		t.Fatalf("got %v, want the other process's token", res.err)
	}
	if "ok "+res.at != lines[0] {
		t.Fatal("this process did not adopt the other process's token")
	}
	if got := srv.Stats().RefreshGrants; got != 2 {
		t.Fatalf("refresh grants: got %d, want 2 (one rotation, one invalid_grant)", got)
	}
}
