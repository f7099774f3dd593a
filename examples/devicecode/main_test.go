package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
)

func init() {
	// The provider's intervals count hundredths of seconds instead of
	// seconds, so that a login takes milliseconds.
	pollUnit = 10 * time.Millisecond
}

// result is what one run of the program produced.
type result struct {
	code           int
	stdout, stderr string
}

// harness runs the program against an embedded authorization server with a
// file store in a temporary directory.
type harness struct {
	t      *testing.T
	srv    *authserver.Server
	dir    string
	key    storage.Key
	client []string // -client-id and, maybe, -client-secret
}

// newHarness starts a server with cfg and sets TOKENKEEP_KEY.
func newHarness(t *testing.T, cfg authserver.Config) *harness {
	t.Helper()
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	raw := make([]byte, 32)
	rand.Read(raw)
	t.Setenv(keyEnv, hex.EncodeToString(raw))
	t.Setenv(passphraseEnv, "")
	key, err := storage.RawKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, dir: t.TempDir(), key: key, client: []string{"-client-id", authserver.PublicClientID}}
}

// endpointFlags names the server's endpoints explicitly.
func (h *harness) endpointFlags(revoke bool) []string {
	f := []string{"-device-url", h.srv.URL() + authserver.EndpointDevice, "-token-url", h.srv.Endpoint().TokenURL}
	if revoke {
		f = append(f, "-revoke-url", h.srv.RevocationURL())
	}
	return f
}

// args builds a command line: endpoints, client, store, then cmd.
func (h *harness) args(cmd string, extra ...string) []string {
	a := append(h.endpointFlags(true), h.client...)
	a = append(a, "-store", h.dir, cmd)
	return append(a, extra...)
}

// run runs the program to completion.
func (h *harness) run(args ...string) result {
	h.t.Helper()
	var out, errs syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := run(ctx, args, &out, &errs, envLookup)
	return result{code, out.String(), errs.String()}
}

// envLookup reads the process environment, which t.Setenv sets.
func envLookup(name string) string {
	return os.Getenv(name)
}

var codeRE = regexp.MustCompile(`enter the code: (\S+)`)

// startLogin runs login in the background and returns the user code it
// shows, and a channel for the outcome.
func (h *harness) startLogin(args ...string) (string, *syncbuf.Buffer, <-chan result) {
	h.t.Helper()
	var out, errs syncbuf.Buffer
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	go func() {
		defer cancel()
		code := run(ctx, args, &out, &errs, envLookup)
		done <- result{code, out.String(), errs.String()}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := codeRE.FindStringSubmatch(out.String()); m != nil {
			return m[1], &errs, done
		}
		select {
		case r := <-done:
			h.t.Fatalf("login ended before showing a code: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	h.t.Fatalf("no user code in the output: %q", out.String())
	return "", nil, nil
}

// login logs in, approving the code, and checks that it worked.
func (h *harness) login(args ...string) result {
	h.t.Helper()
	code, _, done := h.startLogin(args...)
	if err := h.srv.ApproveDevice(code); err != nil {
		h.t.Fatal(err)
	}
	r := <-done
	if r.code != exitOK {
		h.t.Fatalf("login: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// stored loads the session the program saved.
func (h *harness) stored() *storageToken {
	h.t.Helper()
	f, err := storage.NewFile(h.dir, h.key)
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := storage.LoadToken(context.Background(), f, h.client[1])
	if err != nil {
		h.t.Fatal(err)
	}
	return &storageToken{f: f, entry: h.client[1], access: tok.AccessToken, refresh: tok.RefreshToken}
}

// storageToken is a stored session, for checks at the server.
type storageToken struct {
	f               *storage.File
	entry           string
	access, refresh string
}

// expire marks the stored access token expired, so the next use refreshes.
func (s *storageToken) expire(t *testing.T) {
	ctx := context.Background()
	tok, err := storage.LoadToken(ctx, s.f, s.entry)
	if err != nil {
		t.Fatal(err)
	}
	tok.Expiry = time.Now().Add(-time.Minute)
	if err := storage.SaveToken(ctx, s.f, s.entry, tok); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecrets fails if r's output holds a token.
func assertNoSecrets(t *testing.T, what string, r result) {
	t.Helper()
	for _, s := range []string{"tkat_", "tkrt_", "tkdev_"} {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("%s printed a secret (%s...):\nstdout: %s\nstderr: %s", what, s, r.stdout, r.stderr)
		}
	}
}

func TestLoginStatusTokenLogout(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond, Rotate: true, ReuseDetection: true})

	r := h.login(h.args("login")...)
	assertNoSecrets(t, "login", r)
	if !strings.Contains(r.stdout, "Logged in as alice") {
		t.Errorf("login output does not say who logged in: %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "?user_code=") {
		t.Errorf("login output lacks verification_uri_complete: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "Waiting for approval") {
		t.Errorf("no progress line on stderr: %q", r.stderr)
	}

	r = h.run(h.args("status")...)
	assertNoSecrets(t, "status", r)
	for _, want := range []string{"alice", "unverified", "valid until", "Refresh token:  present", "openid profile offline_access"} {
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("status: exit %d, output lacks %q:\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}

	r = h.run(h.args("token")...)
	at := strings.TrimSpace(r.stdout)
	if r.code != exitOK || !h.srv.AccessTokenActive(at) {
		t.Fatalf("token: exit %d, printed a token the server does not accept\nstderr: %s", r.code, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("token wrote to stderr: %q", r.stderr)
	}

	// An expired access token is refreshed before it is printed.
	st := h.stored()
	st.expire(t)
	before := h.srv.Stats().RefreshGrants
	r = h.run(h.args("token")...)
	fresh := strings.TrimSpace(r.stdout)
	if r.code != exitOK || fresh == at || !h.srv.AccessTokenActive(fresh) {
		t.Fatalf("token after expiry: exit %d, new=%v active=%v\nstderr: %s", r.code, fresh != at, h.srv.AccessTokenActive(fresh), r.stderr)
	}
	if got := h.srv.Stats().RefreshGrants - before; got != 1 {
		t.Errorf("refresh grants = %d, want 1", got)
	}

	rt := h.stored().refresh
	r = h.run(h.args("logout")...)
	assertNoSecrets(t, "logout", r)
	if r.code != exitOK || !strings.Contains(r.stdout, "revoked at the provider") {
		t.Fatalf("logout: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if h.srv.RefreshTokenActive(rt) {
		t.Error("the refresh token is still active after logout")
	}
	for _, cmd := range []string{"token", "status"} {
		r = h.run(h.args(cmd)...)
		if r.code != exitNoLogin || r.stdout != "" || !strings.Contains(r.stderr, "devicecode login") {
			t.Errorf("%s after logout: exit %d, want %d\nstdout: %s\nstderr: %s", cmd, r.code, exitNoLogin, r.stdout, r.stderr)
		}
	}
	r = h.run(h.args("logout")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "Not logged in") {
		t.Errorf("second logout: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestLogoutWithoutRevocationEndpoint(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
	h.login(h.args("login")...)
	rt := h.stored().refresh

	args := append(h.endpointFlags(false), "-client-id", authserver.PublicClientID, "-store", h.dir, "logout")
	r := h.run(args...)
	if r.code != exitOK || !strings.Contains(r.stderr, "still honours the refresh token") {
		t.Fatalf("logout: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !h.srv.RefreshTokenActive(rt) {
		t.Error("the refresh token was revoked though no revocation endpoint was given")
	}
	if r := h.run(h.args("token")...); r.code != exitNoLogin {
		t.Errorf("token after logout: exit %d, want %d", r.code, exitNoLogin)
	}
}

func TestConfidentialClientAndAudience(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
	h.client = []string{"-client-id", authserver.ClientID, "-client-secret", authserver.ClientSecret}
	h.login(h.args("login", "-audience", "https://api.example.com", "-scopes", "openid offline_access")...)
	st := h.stored()
	st.expire(t)
	r := h.run(h.args("token")...)
	if r.code != exitOK || !h.srv.AccessTokenActive(strings.TrimSpace(r.stdout)) {
		t.Fatalf("token: exit %d\nstderr: %s", r.code, r.stderr)
	}
}

func TestDiscovery(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{
			"issuer":                        h.srv.URL(),
			"device_authorization_endpoint": h.srv.URL() + authserver.EndpointDevice,
			"token_endpoint":                h.srv.Endpoint().TokenURL,
			"revocation_endpoint":           h.srv.RevocationURL(),
		})
	}))
	defer meta.Close()
	args := func(cmd string) []string {
		return []string{"-issuer", meta.URL + "/", "-client-id", authserver.PublicClientID, "-store", h.dir, cmd}
	}
	h.login(args("login")...)
	rt := h.stored().refresh
	if r := h.run(args("token")...); r.code != exitOK || !h.srv.AccessTokenActive(strings.TrimSpace(r.stdout)) {
		t.Fatalf("token: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if r := h.run(args("logout")...); r.code != exitOK || h.srv.RefreshTokenActive(rt) {
		t.Fatalf("logout through discovered revocation endpoint: exit %d, still active %v\nstderr: %s", r.code, h.srv.RefreshTokenActive(rt), r.stderr)
	}
}

func TestPassphraseStore(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
	t.Setenv(keyEnv, "")
	t.Setenv(passphraseEnv, "correct horse battery staple")
	h.login(h.args("login")...)
	if r := h.run(h.args("status")...); r.code != exitOK || !strings.Contains(r.stdout, "alice") {
		t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Setenv(passphraseEnv, "wrong")
	if r := h.run(h.args("status")...); r.code != exitError || !strings.Contains(r.stderr, "another key") {
		t.Errorf("status with the wrong passphrase: exit %d, want %d\nstderr: %s", r.code, exitError, r.stderr)
	}
}

func TestDenied(t *testing.T) {
	h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
	code, _, done := h.startLogin(h.args("login")...)
	if err := h.srv.DenyDevice(code); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != exitRejected || !strings.Contains(r.stderr, "you denied the request") {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRejected, r.stderr)
	}
	if r := h.run(h.args("status")...); r.code != exitNoLogin {
		t.Errorf("status after a denied login: exit %d, want %d", r.code, exitNoLogin)
	}
}

func TestExpiredCode(t *testing.T) {
	t.Run("provider says expired_token", func(t *testing.T) {
		h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond, DeviceTTL: 150 * time.Millisecond})
		_, _, done := h.startLogin(h.args("login")...)
		r := <-done
		if r.code != exitRejected || !strings.Contains(r.stderr, "the code expired; run login again") {
			t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRejected, r.stderr)
		}
	})
	t.Run("expires_in passes", func(t *testing.T) {
		h := newHarness(t, authserver.Config{DeviceInterval: time.Millisecond})
		h.srv.Inject(authserver.EndpointDevice, authserver.Fault{Mutate: func(m map[string]any) { m["expires_in"] = 1 }})
		start := time.Now()
		_, _, done := h.startLogin(h.args("login")...)
		r := <-done
		if r.code != exitRejected || !strings.Contains(r.stderr, "the code expired") {
			t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRejected, r.stderr)
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("gave up after %v, want about 1s", d)
		}
	})
}

func TestSlowDown(t *testing.T) {
	// The client polls every 20ms, faster than the server's 80ms: the server
	// answers slow_down once and adds 20ms. The client adds five intervals
	// (100ms), as RFC 8628 says, and is never told again.
	defer func(u time.Duration) { pollUnit = u }(pollUnit)
	pollUnit = 20 * time.Millisecond
	h := newHarness(t, authserver.Config{DeviceInterval: 80 * time.Millisecond, DeviceSlowDownStep: 20 * time.Millisecond})
	code, stderr, done := h.startLogin(h.args("login")...)
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(stderr.String(), "poll less often") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	before := h.srv.Stats().DeviceGrants
	time.Sleep(600 * time.Millisecond)
	polls := h.srv.Stats().DeviceGrants - before
	if err := h.srv.ApproveDevice(code); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != exitOK {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
	if n := strings.Count(r.stderr, "poll less often"); n != 1 {
		t.Errorf("slow_down answered %d times, want 1:\n%s", n, r.stderr)
	}
	if !strings.Contains(r.stderr, "checking every 120ms now") {
		t.Errorf("the interval did not grow by five: %s", r.stderr)
	}
	// At 120ms, 600ms hold about five polls; without slowing down, thirty.
	if polls < 3 || polls > 7 {
		t.Errorf("%d polls in 600ms after slow_down, want about 5", polls)
	}
}

func TestNotLoggedIn(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	for _, cmd := range []string{"status", "token"} {
		r := h.run(h.args(cmd)...)
		if r.code != exitNoLogin {
			t.Errorf("%s: exit %d, want %d\nstderr: %s", cmd, r.code, exitNoLogin, r.stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	client := []string{"-client-id", "x", "-store", h.dir}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"help", []string{"-h"}, nil, exitOK},
		{"no command", client, nil, exitUsage},
		{"unknown command", append(client, "whoami"), nil, exitUsage},
		{"unknown flag", append(client, "-verbose", "status"), nil, exitUsage},
		{"extra argument", append(client, "status", "now"), nil, exitUsage},
		{"no client ID", []string{"-store", h.dir, "status"}, nil, exitUsage},
		{"no endpoints", append(client, "login"), nil, exitUsage},
		{"no device endpoint", append(client, "-token-url", h.srv.Endpoint().TokenURL, "login"), nil, exitUsage},
		{"plain http", append(client, "-device-url", "http://example.com/device", "-token-url", "http://example.com/token", "login"), nil, exitUsage},
		{"no key", append(client, "status"), map[string]string{keyEnv: ""}, exitUsage},
		{"bad key", append(client, "status"), map[string]string{keyEnv: "short"}, exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			r := h.run(tc.args...)
			if r.code != tc.want {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, tc.want, r.stderr)
			}
			if tc.want == exitOK && !strings.Contains(r.stderr, "Exit codes") {
				t.Errorf("-h does not document exit codes: %s", r.stderr)
			}
		})
	}
}
