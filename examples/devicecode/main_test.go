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
	"testing/synctest"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
)

// result is what one run of the program produced.
type result struct {
	code           int
	stdout, stderr string
}

// harness runs the program against an embedded authorization server, served
// in memory, with a file store in a temporary directory.
type harness struct {
	t      *testing.T
	srv    *authserver.Server
	dir    string
	key    storage.Key
	client []string // -client-id and, maybe, -client-secret
}

// inBubble runs f in a testing/synctest bubble with a harness made there:
// the program's polls, the code's expiry and the provider's clock all run
// on the bubble's clock, which jumps whenever the program and the server
// wait. RFC 8628's seconds pass at once, and exactly.
func inBubble(t *testing.T, cfg authserver.Config, f func(t *testing.T, h *harness)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		f(t, newHarness(t, cfg))
	})
}

// newHarness starts a server with cfg in memory, points the program's HTTP
// requests at it and sets TOKENKEEP_KEY. Tests call it in a synctest bubble
// (inBubble), where the program's polling intervals, in RFC 8628 seconds,
// pass at once.
func newHarness(t *testing.T, cfg authserver.Config) *harness {
	t.Helper()
	cfg.InMemory = true
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	httpTransport = srv.Client().Transport
	t.Cleanup(func() { httpTransport = nil })
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
	code := run(h.t.Context(), args, &out, &errs, envLookup)
	return result{code, out.String(), errs.String()}
}

// envLookup reads the process environment, which t.Setenv sets.
func envLookup(name string) string {
	return os.Getenv(name)
}

var codeRE = regexp.MustCompile(`enter the code: (\S+)`)

// startLogin runs login in the background until it waits for its first
// poll, and returns the user code it shows, its stderr, and a channel for
// the outcome. No time passes in the bubble meanwhile.
func (h *harness) startLogin(args ...string) (string, *syncbuf.Buffer, <-chan result) {
	h.t.Helper()
	var out, errs syncbuf.Buffer
	done := make(chan result, 1)
	go func() {
		code := run(h.t.Context(), args, &out, &errs, envLookup)
		done <- result{code, out.String(), errs.String()}
	}()
	synctest.Wait()
	select {
	case r := <-done:
		h.t.Fatalf("login ended before waiting for approval: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	default:
	}
	m := codeRE.FindStringSubmatch(out.String())
	if m == nil {
		h.t.Fatalf("no user code in the output: %q", out.String())
	}
	return m[1], &errs, done
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
	inBubble(t, authserver.Config{Rotate: true, ReuseDetection: true}, func(t *testing.T, h *harness) {
		r := h.login(h.args("login")...)
		assertNoSecrets(t, "login", r)
		if !strings.Contains(r.stdout, "Logged in as alice") {
			t.Errorf("login output does not say who logged in: %q", r.stdout)
		}
		if !strings.Contains(r.stdout, "?user_code=") {
			t.Errorf("login output lacks verification_uri_complete: %q", r.stdout)
		}
		if !strings.Contains(r.stderr, "Waiting for approval (checking every 5s)") {
			t.Errorf("no progress line with the provider's interval on stderr: %q", r.stderr)
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
	})
}

func TestLogoutWithoutRevocationEndpoint(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
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
	})
}

func TestConfidentialClientAndAudience(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		h.client = []string{"-client-id", authserver.ClientID, "-client-secret", authserver.ClientSecret}
		h.login(h.args("login", "-audience", "https://api.example.com", "-scopes", "openid offline_access")...)
		st := h.stored()
		st.expire(t)
		r := h.run(h.args("token")...)
		if r.code != exitOK || !h.srv.AccessTokenActive(strings.TrimSpace(r.stdout)) {
			t.Fatalf("token: exit %d\nstderr: %s", r.code, r.stderr)
		}
	})
}

// issuerTransport answers requests to host with h, in the process, and sends
// the others on to next: an issuer that serves only its discovery document.
type issuerTransport struct {
	host string
	h    http.Handler
	next http.RoundTripper
}

func (it *issuerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != it.host {
		return it.next.RoundTrip(r)
	}
	w := httptest.NewRecorder()
	it.h.ServeHTTP(w, r)
	return w.Result(), nil
}

func TestDiscovery(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		meta := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/.well-known/openid-configuration" {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{
				"issuer":                        "https://issuer.example/",
				"device_authorization_endpoint": h.srv.URL() + authserver.EndpointDevice,
				"token_endpoint":                h.srv.Endpoint().TokenURL,
				"revocation_endpoint":           h.srv.RevocationURL(),
			})
		})
		httpTransport = &issuerTransport{host: "issuer.example", h: meta, next: httpTransport}
		args := func(cmd string) []string {
			return []string{"-issuer", "https://issuer.example/", "-client-id", authserver.PublicClientID, "-store", h.dir, cmd}
		}
		h.login(args("login")...)
		rt := h.stored().refresh
		if r := h.run(args("token")...); r.code != exitOK || !h.srv.AccessTokenActive(strings.TrimSpace(r.stdout)) {
			t.Fatalf("token: exit %d\nstderr: %s", r.code, r.stderr)
		}
		if r := h.run(args("logout")...); r.code != exitOK || h.srv.RefreshTokenActive(rt) {
			t.Fatalf("logout through discovered revocation endpoint: exit %d, still active %v\nstderr: %s", r.code, h.srv.RefreshTokenActive(rt), r.stderr)
		}
	})
}

func TestPassphraseStore(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
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
	})
}

func TestDenied(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
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
	})
}

// codeLifetime makes the device authorization answer state a lifetime of secs.
func codeLifetime(secs int) authserver.Fault {
	return authserver.Fault{Mutate: func(m map[string]any) { m["expires_in"] = secs }}
}

func TestExpiredCode(t *testing.T) {
	t.Run("provider says expired_token", func(t *testing.T) {
		// The code lasts 7s at the provider, though its answer says 600s:
		// the program polls at 5s, and at 10s learns from the provider
		// that the code expired.
		inBubble(t, authserver.Config{DeviceTTL: 7 * time.Second}, func(t *testing.T, h *harness) {
			h.srv.Inject(authserver.EndpointDevice, codeLifetime(600))
			start := time.Now()
			_, _, done := h.startLogin(h.args("login")...)
			r := <-done
			if r.code != exitRejected || !strings.Contains(r.stderr, "the code expired; run login again") {
				t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRejected, r.stderr)
			}
			if got, want := time.Since(start), 10*time.Second; got != want {
				t.Errorf("gave up after %v, want %v", got, want)
			}
			if got, want := h.srv.Stats().DeviceGrants, int64(2); got != want {
				t.Errorf("%d polls, want %d", got, want)
			}
		})
	})
	t.Run("expires_in passes", func(t *testing.T) {
		// The code lasts 12s by the answer, 10 minutes at the provider: the
		// program polls at 5s and 10s and gives up by itself at 15s, the
		// first poll due after the code expired, without making it.
		inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
			h.srv.Inject(authserver.EndpointDevice, codeLifetime(12))
			start := time.Now()
			_, _, done := h.startLogin(h.args("login")...)
			r := <-done
			if r.code != exitRejected || !strings.Contains(r.stderr, "the code expired") {
				t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRejected, r.stderr)
			}
			if got, want := time.Since(start), 15*time.Second; got != want {
				t.Errorf("gave up after %v, want %v", got, want)
			}
			if got, want := h.srv.Stats().DeviceGrants, int64(2); got != want {
				t.Errorf("%d polls, want %d", got, want)
			}
		})
	})
}

func TestSlowDown(t *testing.T) {
	// The provider states an interval of 1s but enforces 2s: the program's
	// second poll, at 2s, is answered slow_down, and the provider's interval
	// grows to 4s. The program adds 5s, as RFC 8628 says, polls every 6s
	// from then on, and is never told again.
	cfg := authserver.Config{DeviceInterval: 2 * time.Second, DeviceSlowDownStep: 2 * time.Second}
	inBubble(t, cfg, func(t *testing.T, h *harness) {
		h.srv.Inject(authserver.EndpointDevice, authserver.Fault{Mutate: func(m map[string]any) { m["interval"] = 1 }})
		code, stderr, done := h.startLogin(h.args("login")...)
		time.Sleep(2500 * time.Millisecond)
		if got, want := h.srv.Stats().DeviceGrants, int64(2); got != want {
			t.Fatalf("%d polls in the first 2.5s, want %d", got, want)
		}
		if !strings.Contains(stderr.String(), "poll less often; checking every 6s now") {
			t.Fatalf("no slow_down by 2.5s, or the interval did not grow by 5s:\n%s", stderr)
		}
		// From 2.5s to 32.5s the program polls at 8, 14, 20, 26 and 32s;
		// had it not slowed down, thirty times.
		before := h.srv.Stats().DeviceGrants
		time.Sleep(30 * time.Second)
		if got, want := h.srv.Stats().DeviceGrants-before, int64(5); got != want {
			t.Errorf("%d polls in the 30s after slow_down, want %d", got, want)
		}
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
	})
}

func TestNotLoggedIn(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		for _, cmd := range []string{"status", "token"} {
			r := h.run(h.args(cmd)...)
			if r.code != exitNoLogin {
				t.Errorf("%s: exit %d, want %d\nstderr: %s", cmd, r.code, exitNoLogin, r.stderr)
			}
		}
	})
}

func TestUsage(t *testing.T) {
	// No case gets as far as the network or the clock: no server, no bubble.
	raw := make([]byte, 32)
	rand.Read(raw)
	t.Setenv(keyEnv, hex.EncodeToString(raw))
	t.Setenv(passphraseEnv, "")
	dir := t.TempDir()
	client := []string{"-client-id", "x", "-store", dir}
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
		{"no client ID", []string{"-store", dir, "status"}, nil, exitUsage},
		{"no endpoints", append(client, "login"), nil, exitUsage},
		{"no device endpoint", append(client, "-token-url", "http://127.0.0.1/token", "login"), nil, exitUsage},
		{"plain http", append(client, "-device-url", "http://example.com/device", "-token-url", "http://example.com/token", "login"), nil, exitUsage},
		{"no key", append(client, "status"), map[string]string{keyEnv: ""}, exitUsage},
		{"bad key", append(client, "status"), map[string]string{keyEnv: "short"}, exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errs syncbuf.Buffer
			code := run(t.Context(), tc.args, &out, &errs, envLookup)
			if code != tc.want {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tc.want, &errs)
			}
			if tc.want == exitOK && !strings.Contains(errs.String(), "Exit codes") {
				t.Errorf("-h does not document exit codes: %s", &errs)
			}
		})
	}
}
