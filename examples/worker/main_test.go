package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
)

// record is one JSON log line.
type record map[string]any

func (r record) msg() string   { s, _ := r["msg"].(string); return s }
func (r record) level() string { s, _ := r["level"].(string); return s }

// harness holds a server and a store primed with a session.
type harness struct {
	t      *testing.T
	srv    *authserver.Server
	dir    string
	keyEnc string // the key as TOKENKEEP_KEY holds it
	tok    *oauth2.Token
}

// newHarness starts a server with cfg, sets TOKENKEEP_KEY and stores a
// session for the worker under the entry "alice".
func newHarness(t *testing.T, cfg authserver.Config) *harness {
	t.Helper()
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	raw := make([]byte, 32)
	rand.Read(raw)
	h := &harness{t: t, srv: srv, dir: t.TempDir(), keyEnc: base64.StdEncoding.EncodeToString(raw)}
	t.Setenv(keyEnv, h.keyEnc)
	key, err := storage.RawKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewFile(h.dir, key)
	if err != nil {
		t.Fatal(err)
	}
	h.tok = srv.Mint("openid", "offline_access")
	if err := storage.SaveToken(context.Background(), store, "alice", h.tok); err != nil {
		t.Fatal(err)
	}
	return h
}

// args is a command line for the worker, followed by extra.
func (h *harness) args(extra ...string) []string {
	return append([]string{
		"-store", h.dir, "-entry", "alice",
		"-token-url", h.srv.Endpoint().TokenURL,
		"-client-id", authserver.ClientID, "-client-secret", authserver.ClientSecret,
		"-api", h.srv.ResourceURL(), "-interval", "50ms",
	}, extra...)
}

// start runs the worker in the background with ctx.
func (h *harness) start(ctx context.Context, args ...string) (*syncbuf.Buffer, <-chan int) {
	logs := new(syncbuf.Buffer)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, new(syncbuf.Buffer), logs, os.Getenv) }()
	return logs, done
}

// wait returns the exit code, or fails after timeout.
func (h *harness) wait(done <-chan int, logs *syncbuf.Buffer, timeout time.Duration) int {
	h.t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(timeout):
		h.t.Fatalf("the worker did not stop within %v; logs:\n%s", timeout, logs)
		return -1
	}
}

// waitFor waits until the logs hold n records with message msg.
func (h *harness) waitFor(logs *syncbuf.Buffer, msg string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(h.records(logs.String(), msg)) >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("no %d %q records in time; logs:\n%s", n, msg, logs)
}

// records parses the logs, checks that every line is JSON and that none
// holds a secret, and returns the records with message msg ("" for all).
func (h *harness) records(logs, msg string) []record {
	h.t.Helper()
	secrets := []string{"tkat_", "tkrt_", h.keyEnc, h.tok.AccessToken, h.tok.RefreshToken}
	var out []record
	for line := range strings.Lines(logs) {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				h.t.Fatalf("a log line holds a secret: %s", line)
			}
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			h.t.Fatalf("a log line is not JSON: %q: %v", line, err)
		}
		if msg == "" || r.msg() == msg {
			out = append(out, r)
		}
	}
	return out
}

func TestCallsThroughFaults(t *testing.T) {
	h := newHarness(t, authserver.Config{AccessTTL: time.Second, Rotate: true, ReuseDetection: true})
	// The seeded generator behind SetFailRate spares the first few requests,
	// so the first refresh meets two outages for certain.
	outage := authserver.Fault{Status: http.StatusServiceUnavailable}
	h.srv.Inject(authserver.EndpointToken, outage, outage)
	h.srv.SetFailRate(authserver.EndpointToken, 0.3, outage)
	logs, done := h.start(context.Background(), h.args("-calls", "40")...)
	if code := h.wait(done, logs, 15*time.Second); code != exitOK {
		t.Fatalf("exit %d; logs:\n%s", code, logs)
	}
	all := h.records(logs.String(), "")
	calls := h.records(logs.String(), "api call")
	if len(calls) != 40 {
		t.Errorf("%d successful calls, want 40", len(calls))
	}
	for _, r := range calls {
		if r["status"] != float64(http.StatusOK) {
			t.Errorf("call %v: status %v", r["call"], r["status"])
		}
	}
	for _, r := range all {
		// tokensource logs failed refresh attempts as warnings; the
		// worker's own failures would be "api call failed" or errors.
		if r.level() == "ERROR" || r.msg() == "api call failed" {
			t.Errorf("unexpected record: %v", r)
		}
	}
	if last := all[len(all)-1]; last.msg() != "stopped" {
		t.Errorf("last record %v, want stopped", last)
	}
	st := h.srv.Stats()
	if st.RefreshGrants < 2 || st.FaultsInjected == 0 || st.ReuseDetections != 0 {
		t.Errorf("refresh grants %d, faults %d, reuse detections %d: want refreshes through faults and no reuse",
			st.RefreshGrants, st.FaultsInjected, st.ReuseDetections)
	}
	t.Logf("%d token requests (%d faults), %d refreshes, %d resource requests (%d refused)",
		st.TokenRequests, st.FaultsInjected, st.RefreshGrants, st.ResourceRequests, st.ResourceUnauthorized)
}

func TestCancelFinishesInFlightCall(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	h.srv.SetLatency(authserver.EndpointResource, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs, done := h.start(ctx, h.args()...)
	h.waitFor(logs, "api call", 1)
	// The second call started at most 50ms after the first ended and takes
	// 300ms: cancel in the middle of it.
	time.Sleep(100 * time.Millisecond)
	cancelled := time.Now()
	cancel()
	if code := h.wait(done, logs, 5*time.Second); code != exitOK {
		t.Fatalf("exit %d; logs:\n%s", code, logs)
	}
	if d := time.Since(cancelled); d < 100*time.Millisecond {
		t.Errorf("stopped %v after the cancellation: it did not wait for the call in flight", d)
	}
	calls := h.records(logs.String(), "api call")
	if len(calls) != 2 || h.srv.Stats().ResourceRequests != 2 {
		t.Errorf("%d completed calls, %d requests; want 2 and 2 (the call in flight finishes, no other starts)",
			len(calls), h.srv.Stats().ResourceRequests)
	}
	if n := len(h.records(logs.String(), "stopped")); n != 1 {
		t.Errorf("%d stopped records, want 1; logs:\n%s", n, logs)
	}
}

func TestSIGTERM(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	logs, done := h.start(context.Background(), h.args()...)
	h.waitFor(logs, "api call", 2)
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Skipf("cannot signal this process: %v", err)
	}
	if code := h.wait(done, logs, 5*time.Second); code != exitOK {
		t.Fatalf("exit %d; logs:\n%s", code, logs)
	}
	if n := len(h.records(logs.String(), "stopped")); n != 1 {
		t.Errorf("%d stopped records, want 1; logs:\n%s", n, logs)
	}
}

func TestRevokedSession(t *testing.T) {
	h := newHarness(t, authserver.Config{Rotate: true})
	logs, done := h.start(context.Background(), h.args()...)
	h.waitFor(logs, "api call", 3)
	h.srv.RevokeFamilyOf(h.tok.RefreshToken)
	h.srv.ExpireAccessTokens()
	if code := h.wait(done, logs, 5*time.Second); code != exitReauth {
		t.Fatalf("exit %d, want %d; logs:\n%s", code, exitReauth, logs)
	}
	assertReauthLogged(t, h, logs)
}

func TestNothingStored(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	logs, done := h.start(context.Background(), h.args("-entry", "bob")...)
	if code := h.wait(done, logs, 5*time.Second); code != exitReauth {
		t.Fatalf("exit %d, want %d; logs:\n%s", code, exitReauth, logs)
	}
	assertReauthLogged(t, h, logs)
	if n := h.srv.Stats().ResourceRequests; n != 0 {
		t.Errorf("%d API requests without a token", n)
	}
}

// assertReauthLogged checks for the ERROR record that asks for a new login.
func assertReauthLogged(t *testing.T, h *harness, logs *syncbuf.Buffer) {
	t.Helper()
	for _, r := range h.records(logs.String(), "") {
		if r.level() == "ERROR" && strings.Contains(r.msg(), "log in again") {
			return
		}
	}
	t.Errorf("no ERROR record asking to log in again; logs:\n%s", logs)
}

func TestWrongKey(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	other := make([]byte, 32)
	rand.Read(other)
	t.Setenv(keyEnv, base64.StdEncoding.EncodeToString(other))
	logs, done := h.start(context.Background(), h.args()...)
	if code := h.wait(done, logs, 5*time.Second); code != exitError {
		t.Fatalf("exit %d, want %d; logs:\n%s", code, exitError, logs)
	}
	if !strings.Contains(logs.String(), "TOKENKEEP_KEY") {
		t.Errorf("the error does not point at the key; logs:\n%s", logs)
	}
}

func TestUsage(t *testing.T) {
	h := newHarness(t, authserver.Config{})
	for _, tc := range []struct {
		name string
		args []string
		key  string
		want int
	}{
		{"help", []string{"-h"}, h.keyEnc, exitOK},
		{"no api", []string{"-token-url", "https://x/token", "-client-id", "c"}, h.keyEnc, exitUsage},
		{"bad interval", h.args("-interval", "0s"), h.keyEnc, exitUsage},
		{"extra argument", h.args("now"), h.keyEnc, exitUsage},
		{"no key", h.args(), "", exitUsage},
		{"bad key", h.args(), "c2hvcnQ=", exitUsage},
		{"plain http token endpoint", append(h.args(), "-token-url", "http://example.com/token"), h.keyEnc, exitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(keyEnv, tc.key)
			t.Setenv(secretEnv, "env-secret-value")
			var stderr syncbuf.Buffer
			code := run(context.Background(), tc.args, new(syncbuf.Buffer), &stderr, os.Getenv)
			if code != tc.want {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.want, &stderr)
			}
			if strings.Contains(stderr.String(), tc.key) && tc.key != "" {
				t.Errorf("the key was printed")
			}
			if strings.Contains(stderr.String(), "env-secret-value") {
				t.Errorf("the client secret was printed")
			}
		})
	}
}
