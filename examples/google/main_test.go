package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
)

// result is what one run produced.
type result struct {
	code           int
	stdout, stderr string
}

// harness runs the program against an embedded server, with the client in
// GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET and a file store.
type harness struct {
	t   *testing.T
	srv *authserver.Server
	dir string
	key storage.Key
}

func newHarness(t *testing.T, cfg authserver.Config) *harness {
	t.Helper()
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	raw := make([]byte, 32)
	rand.Read(raw)
	t.Setenv(keyEnv, hex.EncodeToString(raw))
	t.Setenv(passphraseEnv, "")
	t.Setenv(clientIDEnv, authserver.ClientID)
	t.Setenv(clientSecretEnv, authserver.ClientSecret)
	key, err := storage.RawKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, dir: t.TempDir(), key: key}
}

// args is the command line for the embedded server, followed by extra.
func (h *harness) args(extra ...string) []string {
	e := h.srv.Endpoint()
	return append([]string{
		"-no-browser", "-file-store", h.dir,
		"-auth-url", e.AuthURL, "-token-url", e.TokenURL, "-revoke-url", h.srv.RevocationURL(),
		"-api", h.srv.UserinfoURL(),
	}, extra...)
}

// hangGuard bounds each run, so that a run that hangs fails its test with
// what it printed instead of stalling the suite. It is no measure of speed:
// the program listens on a real loopback port, which a synctest bubble
// cannot fake, and a correct run on a loaded machine stays far inside it.
const hangGuard = time.Minute

// start runs the program in the background.
func (h *harness) start(args ...string) (*syncbuf.Buffer, <-chan result) {
	var out, errs syncbuf.Buffer
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	go func() {
		defer cancel()
		code := run(ctx, args, &out, &errs, os.Getenv)
		done <- result{code, out.String(), errs.String()}
	}()
	return &out, done
}

var urlRE = regexp.MustCompile(`(?m)^  (http://\S+/authorize\?\S+)$`)

// authURL waits for the sign-in URL the program prints, waking at each
// write to out, or for the run to end without one.
func (h *harness) authURL(out *syncbuf.Buffer, done <-chan result) *url.URL {
	h.t.Helper()
	for {
		changed := out.Changed()
		if m := urlRE.FindStringSubmatch(out.String()); m != nil {
			u, err := url.Parse(m[1])
			if err != nil {
				h.t.Fatal(err)
			}
			return u
		}
		select {
		case <-changed:
		case r := <-done:
			h.t.Fatalf("ended before printing a URL: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	}
}

// browse plays the browser: it opens u and follows the redirect to the
// program's loopback listener, returning the listener's answer.
func browse(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// signIn runs the program through a first sign-in.
func (h *harness) signIn(args ...string) result {
	h.t.Helper()
	out, done := h.start(args...)
	u := h.authURL(out, done)
	if status, body := browse(h.t, u.String()); status != http.StatusOK || !strings.Contains(body, "Signed in") {
		h.t.Errorf("the callback answered %d: %s", status, body)
	}
	r := <-done
	if r.code != exitOK {
		h.t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// run runs the program to completion.
func (h *harness) run(args ...string) result {
	_, done := h.start(args...)
	return <-done
}

// assertNoSecrets fails if r's output holds a token or a code.
func assertNoSecrets(t *testing.T, r result) {
	t.Helper()
	for _, s := range []string{"tkat_", "tkrt_", "tkcode_", authserver.ClientSecret} {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("output holds a secret (%s):\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
}

// refreshToken returns the stored refresh token.
func (h *harness) refreshToken() string {
	h.t.Helper()
	f, err := storage.NewFile(h.dir, h.key)
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := storage.LoadToken(context.Background(), f, authserver.ClientID)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok.RefreshToken
}

func TestSignInThenReuse(t *testing.T) {
	h := newHarness(t, authserver.Config{Rotate: true, ReuseDetection: true})
	out, done := h.start(h.args()...)
	u := h.authURL(out, done)
	q := u.Query()
	for k, want := range map[string]string{
		"access_type": "offline", "prompt": "consent", "code_challenge_method": "S256",
		"client_id": authserver.ClientID, "response_type": "code",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/callback$`).MatchString(q.Get("redirect_uri")) {
		t.Errorf("redirect_uri %q is not a loopback callback on a port", q.Get("redirect_uri"))
	}
	if status, body := browse(t, u.String()); status != http.StatusOK {
		t.Errorf("the callback answered %d: %s", status, body)
	}
	r := <-done
	assertNoSecrets(t, r)
	if r.code != exitOK || !strings.Contains(r.stdout, "200 OK") || !strings.Contains(r.stdout, "email: alice@example.com") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	before := h.srv.Stats()
	r = h.run(h.args()...)
	assertNoSecrets(t, r)
	if r.code != exitOK || strings.Contains(r.stdout, "/authorize") || !strings.Contains(r.stdout, "email: alice@example.com") {
		t.Fatalf("second run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if got := h.srv.Stats().CodeGrants - before.CodeGrants; got != 0 {
		t.Errorf("the second run made %d code grants, want 0", got)
	}
}

func TestRefreshAcrossRuns(t *testing.T) {
	h := newHarness(t, authserver.Config{Rotate: true})
	h.signIn(h.args()...)
	h.srv.ExpireAccessTokens()
	before := h.srv.Stats()
	r := h.run(h.args()...)
	after := h.srv.Stats()
	if r.code != exitOK || after.CodeGrants != before.CodeGrants || after.RefreshGrants-before.RefreshGrants != 1 {
		t.Fatalf("exit %d, code grants +%d, refreshes +%d\nstdout: %s\nstderr: %s", r.code,
			after.CodeGrants-before.CodeGrants, after.RefreshGrants-before.RefreshGrants, r.stdout, r.stderr)
	}
}

func TestRevokedSessionSignsInAgain(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	h.signIn(h.args()...)
	h.srv.RevokeFamilyOf(h.refreshToken())
	h.srv.ExpireAccessTokens()
	r := h.signIn(h.args()...)
	if !strings.Contains(r.stderr, "signing in again") || !strings.Contains(r.stdout, "200 OK") {
		t.Errorf("stdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	h.signIn(h.args()...)
	rt := h.refreshToken()
	r := h.run(h.args("-logout")...)
	if r.code != exitOK || h.srv.RefreshTokenActive(rt) {
		t.Fatalf("exit %d, refresh token active %v\nstdout: %s\nstderr: %s", r.code, h.srv.RefreshTokenActive(rt), r.stdout, r.stderr)
	}
	if r := h.run(h.args("-logout")...); r.code != exitOK || !strings.Contains(r.stdout, "Not signed in") {
		t.Errorf("second logout: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestPublicClient(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	t.Setenv(clientIDEnv, "")
	t.Setenv(clientSecretEnv, "")
	r := h.signIn(h.args("-client-id", authserver.PublicClientID)...)
	if !strings.Contains(r.stdout, "email: alice@example.com") {
		t.Errorf("stdout: %s", r.stdout)
	}
}

func TestForgedCallbackIgnored(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	out, done := h.start(h.args()...)
	u := h.authURL(out, done)
	cb := u.Query().Get("redirect_uri")
	if status, _ := browse(t, cb+"?code=forged&state=wrong"); status != http.StatusBadRequest {
		t.Errorf("a callback with the wrong state answered %d, want 400", status)
	}
	if status, _ := browse(t, u.String()); status != http.StatusOK {
		t.Errorf("the real callback answered %d", status)
	}
	if r := <-done; r.code != exitOK {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
}

func TestDenied(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	out, done := h.start(h.args()...)
	q := h.authURL(out, done).Query()
	if status, _ := browse(t, q.Get("redirect_uri")+"?error=access_denied&state="+url.QueryEscape(q.Get("state"))); status != http.StatusForbidden {
		t.Errorf("the denied callback answered %d, want 403", status)
	}
	r := <-done
	if r.code != exitRefused || !strings.Contains(r.stderr, "you denied access") {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRefused, r.stderr)
	}
}

func TestLoginTimeout(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	r := h.run(h.args("-login-timeout", "100ms")...)
	if r.code != exitRefused || !strings.Contains(r.stderr, "no answer from the browser") {
		t.Fatalf("exit %d, want %d\nstderr: %s", r.code, exitRefused, r.stderr)
	}
}

func TestUsage(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"help", []string{"-h"}, nil, exitOK},
		{"no client", h.args(), map[string]string{clientIDEnv: ""}, exitUsage},
		{"extra argument", h.args("now"), nil, exitUsage},
		{"bad flag", h.args("-browser"), nil, exitUsage},
		{"file store without key", h.args(), map[string]string{keyEnv: ""}, exitUsage},
		{"plain http token endpoint", h.args("-token-url", "http://example.com/token"), nil, exitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			r := h.run(tc.args...)
			if r.code != tc.want {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, tc.want, r.stderr)
			}
			assertNoSecrets(t, r)
		})
	}
}
