package tokensource

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
)

// strictServer behaves like Okta or Auth0 with rotation on: every refresh
// token is single-use and a reused one revokes the whole session.
func strictServer(t testing.TB, cfg authserver.Config) *authserver.Server {
	t.Helper()
	cfg.Rotate, cfg.ReuseDetection = true, true
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	return srv
}

// serverSource returns a Source that refreshes at srv, holding a new login.
func serverSource(t testing.TB, srv *authserver.Server, store storage.Store, opts ...Option) *Source {
	t.Helper()
	return serverSourceVia(t, srv, srv.Client(), store, opts...)
}

// serverSourceVia is serverSource sending its requests through hc.
func serverSourceVia(t testing.TB, srv *authserver.Server, hc *http.Client, store storage.Store, opts ...Option) *Source {
	t.Helper()
	r, err := NewConfigRefresher(srv.OAuth2Config("openid", "offline_access"), srv.RevocationURL(), hc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(r, store, "alice", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Put(context.Background(), srv.Mint("openid", "offline_access")); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServerThousandCallersOneRefresh(t *testing.T) {
	srv := strictServer(t, authserver.Config{})
	srv.SetLatency(authserver.EndpointToken, 20*time.Millisecond)
	s := serverSource(t, srv, storage.NewMemory())
	for round := range 3 {
		first, err := s.Token()
		if err != nil {
			t.Fatal(err)
		}
		s.Invalidate(first) // as a 401 would
		srv.ResetStats()
		var wg sync.WaitGroup
		tokens := make(chan string, 1000)
		for range 1000 {
			wg.Go(func() {
				tok, err := s.Token()
				if err != nil {
					t.Error(err)
					return
				}
				tokens <- tok.AccessToken
			})
		}
		wg.Wait()
		close(tokens)
		seen := map[string]bool{}
		for at := range tokens {
			seen[at] = true
		}
		st := srv.Stats()
		if st.RefreshGrants != 1 || len(seen) != 1 || st.ReuseDetections != 0 {
			t.Errorf("round %d: got %d refreshes, %d distinct tokens, %d reuse detections; want 1, 1, 0",
				round, st.RefreshGrants, len(seen), st.ReuseDetections)
		}
	}
}

// TestServerRotationPersisted: after each refresh the store holds the one
// refresh token the server still accepts, and the source never trips reuse
// detection.
func TestServerRotationPersisted(t *testing.T) {
	srv := strictServer(t, authserver.Config{})
	store := storage.NewMemory()
	s := serverSource(t, srv, store)
	for i := range 10 {
		tok, err := s.Token()
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		rec := storedRecord(t, store, "alice")
		stored := rec.Token
		if !srv.RefreshTokenActive(stored.RefreshToken) || stored.AccessToken != tok.AccessToken {
			t.Fatalf("refresh %d: the store does not hold the live session", i)
		}
		if got, want := rec.Generation, uint64(i+1); got != want {
			t.Errorf("refresh %d: stored generation: got %d, want %d", i, got, want)
		}
		if stored.Extra("id_token") == nil || stored.Extra("scope") == nil {
			t.Errorf("refresh %d: extra fields lost: id_token %v scope %v", i, stored.Extra("id_token"), stored.Extra("scope"))
		}
		s.Invalidate(tok)
	}
	if st := srv.Stats(); st.ReuseDetections != 0 || st.RefreshGrants != 9 {
		t.Errorf("got %d refreshes and %d reuse detections, want 9 and 0", st.RefreshGrants, st.ReuseDetections)
	}
}

func TestServerKeepsRefreshTokenWhenNotRotated(t *testing.T) {
	srv := authserver.New(authserver.Config{OmitRefreshTokenOnRefresh: true})
	t.Cleanup(srv.Close)
	store := storage.NewMemory()
	s := serverSource(t, srv, store)
	before := storedToken(t, store, "alice")
	tok, _ := s.Token()
	s.Invalidate(tok)
	if _, err := s.Token(); err != nil {
		t.Fatal(err)
	}
	after := storedToken(t, store, "alice")
	if after.RefreshToken == "" || after.RefreshToken != before.RefreshToken {
		t.Error("the refresh token was dropped when the answer had none")
	}
}

// TestServerInvalidGrant: an admin ends the session at the provider. One
// token request finds out, the store keeps an ended record in place of the
// dead refresh token, and the Source keeps saying so without asking again.
func TestServerInvalidGrant(t *testing.T) {
	srv := strictServer(t, authserver.Config{})
	store := storage.NewMemory()
	s := serverSource(t, srv, store)
	before := storedToken(t, store, "alice")
	srv.RevokeFamilyOf(before.RefreshToken) // an admin ends the session
	s.Invalidate(before)
	srv.ResetStats()
	_, err := s.Token()
	if !errors.Is(err, ErrReauthRequired) {
		t.Fatalf("got %v, want ErrReauthRequired", err)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("got %v, want a wrapped invalid_grant", err)
	}
	for range 2 {
		if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
			t.Fatalf("again: got %v, want ErrReauthRequired", err)
		}
	}
	if got := srv.Stats().TokenRequests; got != 1 {
		t.Errorf("token requests: got %d, want 1", got)
	}
	wantEnded(t, store, "alice", 2, "refused by the provider: invalid_grant")
}

// TestServerFaults runs each kind of fault the server can inject against a
// strict server and checks the documented outcome. Faults that replace the
// answer never reach the grant, so a retry succeeds. An answer whose grant
// took effect but whose token cannot be served keeps its rotated refresh
// token when it can be read (a negative expires_in, no access_token:
// salvaged, then redeemed). An answer that arrives after the attempt
// timeout comes to a request that was sent: it is awaited, not abandoned.
// Faults that spoil an answer beyond reading (a cut body) lose the rotated
// refresh token in transit: the retry presents the old one, the server
// sees reuse and ends the session, and the Source says to log in again and
// keeps an ended record. It must not loop or corrupt the store.
//
// The outcomes depend on no machine's speed: attempts are given a minute,
// except in the two rows whose answer comes after the attempt timeout,
// where sending the request has a second and the answer takes three. How
// long a retry waits for Retry-After is checked on fake time, in
// TestRetryAfterWaited.
func TestServerFaults(t *testing.T) {
	const ok, reauth, fails = "ok", "reauth", "fails"
	tests := []struct {
		name      string
		faults    []authserver.Fault
		want      string
		wantTries int64         // token requests
		attempt   time.Duration // attempt timeout; 0 means a minute
	}{
		{"500", []authserver.Fault{{Status: 500}}, ok, 2, 0},
		{"502", []authserver.Fault{{Status: 502}}, ok, 2, 0},
		{"503 twice", []authserver.Fault{{Status: 503}, {Status: 503}}, ok, 3, 0},
		{"504", []authserver.Fault{{Status: 504}}, ok, 2, 0},
		{"408", []authserver.Fault{{Status: 408}}, ok, 2, 0},
		{"429 Retry-After seconds", []authserver.Fault{{Status: 429, RetryAfter: "1"}}, ok, 2, 0},
		{"503 Retry-After date", []authserver.Fault{{Status: 503, RetryAfter: "date+3s"}}, ok, 2, 0},
		{"html page", []authserver.Fault{{Status: 200, Body: "<html>maintenance</html>", ContentType: "text/html"}}, ok, 2, 0},
		{"dropped connection", []authserver.Fault{{Drop: true}}, ok, 2, 0},
		// Sent, so in doubt: awaited up to the refresh timeout, not abandoned.
		{"slow answer past the attempt timeout", []authserver.Fault{{Delay: 3 * time.Second}}, ok, 1, time.Second},
		{"temporarily_unavailable", []authserver.Fault{{Status: 400, Body: `{"error":"temporarily_unavailable"}`}}, ok, 2, 0},
		{"invalid_grant", []authserver.Fault{{Status: 400, Body: `{"error":"invalid_grant"}`}}, reauth, 1, 0},
		{"invalid_client", []authserver.Fault{{Status: 401, Body: `{"error":"invalid_client"}`}}, reauth, 1, 0},
		{"unauthorized_client", []authserver.Fault{{Status: 400, Body: `{"error":"unauthorized_client"}`}}, reauth, 1, 0},
		{"invalid_scope", []authserver.Fault{{Status: 400, Body: `{"error":"invalid_scope"}`}}, fails, 1, 0},
		{"expires_in as a string", []authserver.Fault{{Mutate: func(m map[string]any) { m["expires_in"] = "3600" }}}, ok, 1, 0},
		{"truncated answer after the grant", []authserver.Fault{{Truncate: 20}}, reauth, 2, 0},
		// The rotated refresh token is salvaged and redeemed.
		{"answer without access_token after the grant", []authserver.Fault{{Mutate: func(m map[string]any) { delete(m, "access_token") }}}, ok, 2, 0},
		{"429 without Retry-After", []authserver.Fault{{Status: 429}}, ok, 2, 0},
		{"503 Retry-After seconds", []authserver.Fault{{Status: 503, RetryAfter: "1"}}, ok, 2, 0},
		{"500 Retry-After date", []authserver.Fault{{Status: 500, RetryAfter: "date+3s"}}, ok, 2, 0},
		{"truncated JSON instead of an answer", []authserver.Fault{{Status: 200, Body: `{"access_token":"tkat_x","tok`}}, ok, 2, 0},
		{"200 with an error field", []authserver.Fault{{Status: 200, Body: `{"error":"invalid_grant"}`}}, reauth, 1, 0},
		{"200 with a transient error field", []authserver.Fault{{Status: 200, Body: `{"error":"temporarily_unavailable"}`}}, ok, 2, 0},
		{"200 without access_token", []authserver.Fault{{Status: 200, Body: `{"token_type":"Bearer","expires_in":3600}`}}, ok, 2, 0},
		{"body over 1 MiB", []authserver.Fault{{Status: 200, Body: `{"access_token":"` + strings.Repeat("a", 1<<20) + `"}`}}, ok, 2, 0},
		{"expires_in as a float", []authserver.Fault{{Mutate: func(m map[string]any) { m["expires_in"] = 3599.5 }}}, ok, 1, 0},
		{"expires_in null", []authserver.Fault{{Mutate: func(m map[string]any) { m["expires_in"] = nil }}}, ok, 1, 0},
		{"expires_in missing", []authserver.Fault{{Mutate: func(m map[string]any) { delete(m, "expires_in") }}}, ok, 1, 0},
		{"expires_in huge", []authserver.Fault{{Mutate: func(m map[string]any) { m["expires_in"] = 1e15 }}}, ok, 1, 0},
		{"expires_in negative after the grant", []authserver.Fault{{Mutate: func(m map[string]any) { m["expires_in"] = -60 }}}, ok, 2, 0},
		// Sent, so in doubt: awaited up to the refresh timeout, not abandoned.
		{"slow body past the attempt timeout", []authserver.Fault{{SlowBody: 3 * time.Second}}, ok, 1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			attempt := tt.attempt
			if attempt == 0 {
				attempt = time.Minute
			}
			srv := strictServer(t, authserver.Config{})
			store := storage.NewMemory()
			s := serverSource(t, srv, store, WithAttemptTimeout(attempt), WithRefreshTimeout(2*time.Minute),
				WithBackOff(func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Millisecond) }))
			before := storedToken(t, store, "alice")
			s.Invalidate(before)
			srv.ResetStats()
			faults := slices.Clone(tt.faults)
			if faults[0].RetryAfter == "date+3s" { // HTTP-dates have one-second resolution
				faults[0].RetryAfter = time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
			}
			srv.Inject(authserver.EndpointToken, faults...)
			tok, err := s.Token()
			switch tt.want {
			case ok:
				if err != nil {
					t.Fatalf("got %v, want a token", err)
				}
				stored := storedToken(t, store, "alice")
				if stored.AccessToken != tok.AccessToken || !srv.RefreshTokenActive(stored.RefreshToken) {
					t.Error("the store does not hold the new live session")
				}
			case reauth:
				if !errors.Is(err, ErrReauthRequired) {
					t.Fatalf("got %v, want ErrReauthRequired", err)
				}
				if r := storedRecord(t, store, "alice"); r.State != storage.Ended || r.Generation != 2 ||
					!strings.HasPrefix(r.Reason, "refused by the provider") {
					t.Errorf("stored: got %v, want generation 2 ended as refused by the provider", r)
				}
			case fails:
				if err == nil || errors.Is(err, ErrReauthRequired) {
					t.Fatalf("got %v, want a plain failure", err)
				}
				if r := storedRecord(t, store, "alice"); r.Generation != 1 || r.Token == nil || r.Token.RefreshToken != before.RefreshToken {
					t.Errorf("stored: got %v; a failed refresh changed the stored session", r)
				}
			}
			if got := srv.Stats().TokenRequests; got != tt.wantTries {
				t.Errorf("token requests: got %d, want %d", got, tt.wantTries)
			}
		})
	}
}

// TestServerRevoke: the provider no longer accepts the refresh token, and
// the store keeps an ended record.
func TestServerRevoke(t *testing.T) {
	srv := strictServer(t, authserver.Config{})
	store := storage.NewMemory()
	s := serverSource(t, srv, store)
	stored := storedToken(t, store, "alice")
	if err := s.Revoke(context.Background()); err != nil {
		t.Fatal(err)
	}
	if srv.RefreshTokenActive(stored.RefreshToken) {
		t.Error("the server still accepts the refresh token")
	}
	wantEnded(t, store, "alice", 2, "revoked")
	if _, err := s.Token(); !errors.Is(err, ErrReauthRequired) {
		t.Errorf("got %v, want ErrReauthRequired", err)
	}
}

// staleLogin returns a login from srv that is inside its early-refresh
// window but still valid: granted for an hour, with two minutes left.
func staleLogin(srv *authserver.Server) *oauth2.Token {
	t := srv.Mint("openid", "offline_access")
	t.Expiry = time.Now().Add(2 * time.Minute)
	return t
}

// TestServerBackgroundRefresh: a stale token is served at once while the
// provider is asked for the next in the background, round after round. A
// caller whose context has already ended gets a token only if nobody had to
// wait for the network, so the check does not depend on how fast the
// machine is. (The timing across lifetimes is TestBackgroundRefreshNobodyWaits.)
func TestServerBackgroundRefresh(t *testing.T) {
	srv := strictServer(t, authserver.Config{})
	srv.SetLatency(authserver.EndpointToken, 50*time.Millisecond)
	var events eventLog
	s := serverSource(t, srv, storage.NewMemory(), WithHook(events.hook))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	const rounds = 3
	for round := 1; round <= rounds; round++ {
		stale := staleLogin(srv)
		if err := s.Put(context.Background(), stale); err != nil {
			t.Fatal(err)
		}
		tok, err := s.TokenContext(done)
		if err != nil || tok.AccessToken != stale.AccessToken {
			t.Fatalf("round %d: the stale token was not served at once: %v", round, err)
		}
		events.await(t, Refreshed, round)
		for s.background.Load() {
			runtime.Gosched() // the background refresh is returning; the next round starts another
		}
		tok, err = s.TokenContext(done)
		if err != nil || tok.AccessToken == stale.AccessToken || !srv.AccessTokenActive(tok.AccessToken) {
			t.Fatalf("round %d: the background refresh's token was not served at once: %v", round, err)
		}
	}
	for _, e := range events.events() {
		if e.Kind != Refreshed || !e.Background {
			t.Errorf("event %v (background %v), want background refreshes only", e.Kind, e.Background)
		}
	}
	if st := srv.Stats(); st.RefreshGrants != rounds || st.ReuseDetections != 0 {
		t.Errorf("got %d refreshes and %d reuse detections, want %d and 0", st.RefreshGrants, st.ReuseDetections, rounds)
	}
}

// TestNoSecretInErrorsOrLogs runs the failure paths with a debug logger and
// an echoing provider, and looks for any token value in the output.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []string
	var events eventLog
	opts := []Option{WithLogger(logger), quickBackOff(2), WithHook(events.hook)}

	srv := strictServer(t, authserver.Config{})
	store := newFaultyStore()
	s := serverSource(t, srv, store, opts...)
	tok, _ := s.Token()
	secrets := []string{tok.AccessToken, tok.RefreshToken}
	scenarios := []func(){
		func() { // 503 then success
			srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 503})
			s.Invalidate(tok)
			_, err := s.Token()
			collect(&errs, err)
		},
		func() { // save failure
			store.failSaves(errDiskFull)
			cur, _ := s.Token()
			s.Invalidate(cur)
			_, err := s.Token()
			collect(&errs, err)
			store.failSaves(nil)
		},
		func() { // the provider echoes the refresh token in its error
			cur, _ := s.Token()
			secrets = append(secrets, cur.AccessToken, cur.RefreshToken)
			srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 400,
				Body: `{"error":"invalid_grant","error_description":"refresh token ` + cur.RefreshToken + ` is revoked"}`})
			s.Invalidate(cur)
			_, err := s.Token()
			collect(&errs, err)
		},
		func() { // revocation failing at the provider, which echoes the token
			// The refusal above ended the session; a new login revives it.
			login := srv.Mint("openid", "offline_access")
			secrets = append(secrets, login.AccessToken, login.RefreshToken)
			if err := s.Put(context.Background(), login); err != nil {
				t.Fatal(err)
			}
			srv.Inject(authserver.EndpointRevoke, authserver.Fault{Status: 503,
				Body: `{"error":"temporarily_unavailable","error_description":"cannot revoke ` + login.RefreshToken + `"}`})
			collect(&errs, s.Revoke(context.Background()))
		},
	}
	for _, sc := range scenarios {
		sc()
	}
	if len(errs) < 3 {
		t.Fatalf("scenarios produced %d errors, want at least 3", len(errs))
	}
	for _, e := range events.events() {
		if e.Err != nil {
			errs = append(errs, e.Err.Error())
		}
	}
	mu.Lock()
	out := logs.String() + strings.Join(errs, "\n") + s.String()
	mu.Unlock()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(out, sec) {
			t.Errorf("a token value appears in errors or logs")
		}
	}
	if strings.Contains(out, "tkat_") || strings.Contains(out, "tkrt_") {
		t.Errorf("a token value appears in errors or logs")
	}
}

func collect(errs *[]string, err error) {
	if err != nil {
		*errs = append(*errs, err.Error())
	}
}

// gate is an http.RoundTripper that reports each request as it is sent and
// holds every answer until release is closed.
type gate struct {
	base    http.RoundTripper
	sent    chan struct{} // receives once per request
	release chan struct{} // closed to let answers through
}

func newGate(base http.RoundTripper) *gate {
	return &gate{base: base, sent: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	g.sent <- struct{}{}
	resp, err := g.base.RoundTrip(req)
	select {
	case <-g.release:
	case <-req.Context().Done():
		if err == nil {
			resp.Body.Close()
		}
		return nil, req.Context().Err()
	}
	return resp, err
}

// TestServerCloseDuringBackgroundRefreshIsQuiet: Close while a background
// refresh's request is at the provider lets it finish (see WithCloseGrace);
// a clean shutdown logs no warning. The answer is held until Close has
// begun, so the test is about the same moment on any machine.
func TestServerCloseDuringBackgroundRefreshIsQuiet(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := strictServer(t, authserver.Config{})
	g := newGate(srv.Client().Transport)
	s := serverSourceVia(t, srv, &http.Client{Transport: g}, storage.NewMemory(), WithLogger(logger), WithCloseGrace(time.Minute))
	if err := s.Put(context.Background(), staleLogin(srv)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Token(); err != nil {
		t.Fatal(err)
	}
	<-g.sent // the background refresh's request
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-s.stopped.Done() // Close has begun
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() != 0 {
		t.Fatalf("Close during a background refresh logged:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
