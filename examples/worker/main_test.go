package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
)

func init() {
	// The first signal.Notify of a process starts the goroutine that
	// delivers signals. Started in a synctest bubble, it would belong to
	// the bubble, which could then never end. run calls
	// signal.NotifyContext, and most tests run it in a bubble: make the
	// first call here, outside any. A signal reaching the process while a
	// bubbled run waits for one would still be sent on a bubble's channel
	// from outside it, which the runtime refuses fatally; only TestSIGTERM
	// sends one, outside any bubble, and no test runs beside it.
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	signal.Stop(c)
}

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

// inBubble runs f in a testing/synctest bubble with a harness made there:
// the worker's schedule, the server's latency and the tokens' lifetimes all
// run on the bubble's clock, which jumps whenever the worker and the server
// wait.
func inBubble(t *testing.T, cfg authserver.Config, f func(t *testing.T, h *harness)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		f(t, newHarness(t, cfg))
	})
}

// newHarness starts a server with cfg in memory, points the worker's HTTP
// requests at it, sets TOKENKEEP_KEY and stores a session for the worker
// under the entry "alice".
func newHarness(t *testing.T, cfg authserver.Config) *harness {
	t.Helper()
	cfg.InMemory = true
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	httpTransport = srv.Client().Transport
	t.Cleanup(func() { httpTransport = nil })
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

// wait returns the exit code, or fails after timeout on the bubble's clock.
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
	inBubble(t, authserver.Config{AccessTTL: time.Second, Rotate: true, ReuseDetection: true}, func(t *testing.T, h *harness) {
		// The seeded generator behind SetFailRate spares the first few
		// requests, so the first refresh meets two outages for certain.
		outage := authserver.Fault{Status: http.StatusServiceUnavailable}
		h.srv.Inject(authserver.EndpointToken, outage, outage)
		h.srv.SetFailRate(authserver.EndpointToken, 0.3, outage)
		logs, done := h.start(context.Background(), h.args("-calls", "40")...)
		if code := h.wait(done, logs, time.Minute); code != exitOK {
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
	})
}

func TestCancelFinishesInFlightCall(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		h.srv.SetLatency(authserver.EndpointResource, 300*time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		logs, done := h.start(ctx, h.args()...)
		// The first call runs from 0 to 300ms; a tick is waiting by then,
		// so the second runs from 300 to 600ms. Cancel in the middle of it.
		time.Sleep(450 * time.Millisecond)
		if got := len(h.records(logs.String(), "api call")); got != 1 || h.srv.Stats().ResourceRequests != 2 {
			t.Fatalf("at 450ms: %d completed calls, %d requests; want 1 and 2 (the second in flight)",
				got, h.srv.Stats().ResourceRequests)
		}
		cancelled := time.Now()
		cancel()
		if code := h.wait(done, logs, time.Minute); code != exitOK {
			t.Fatalf("exit %d; logs:\n%s", code, logs)
		}
		if got, want := time.Since(cancelled), 150*time.Millisecond; got != want {
			t.Errorf("stopped %v after the cancellation, want %v: when the call in flight ended", got, want)
		}
		calls := h.records(logs.String(), "api call")
		if len(calls) != 2 || h.srv.Stats().ResourceRequests != 2 {
			t.Fatalf("%d completed calls, %d requests; want 2 and 2 (the call in flight finishes, no other starts)",
				len(calls), h.srv.Stats().ResourceRequests)
		}
		if got, want := calls[1]["duration_ms"], float64(300); got != want {
			t.Errorf("the call in flight took %vms, want %vms", got, want)
		}
		if n := len(h.records(logs.String(), "stopped")); n != 1 {
			t.Errorf("%d stopped records, want 1; logs:\n%s", n, logs)
		}
	})
}

// callWatch is the worker's log output for a test outside a bubble: it
// keeps the records in logs and, without waiting, sends on calls for each
// "api call" record.
type callWatch struct {
	logs  *syncbuf.Buffer
	calls chan struct{}
}

func (w *callWatch) Write(p []byte) (int, error) {
	var r record
	if json.Unmarshal(p, &r) == nil && r.msg() == "api call" {
		select {
		case w.calls <- struct{}{}:
		default:
		}
	}
	return w.logs.Write(p)
}

func TestSIGTERM(t *testing.T) {
	// A real signal reaches the process, not a bubble: this test runs on
	// real time, and waits for events instead of for durations, under a
	// bound that only catches a hang.
	const hangGuard = time.Minute
	h := newHarness(t, authserver.Config{})
	logs := new(syncbuf.Buffer)
	w := &callWatch{logs: logs, calls: make(chan struct{}, 2)}
	done := make(chan int, 1)
	go func() { done <- run(context.Background(), h.args(), new(syncbuf.Buffer), w, os.Getenv) }()
	for range 2 {
		select {
		case <-w.calls:
		case code := <-done:
			t.Fatalf("the worker stopped before its second call: exit %d; logs:\n%s", code, logs)
		case <-time.After(hangGuard):
			t.Fatalf("no second call after %v; logs:\n%s", hangGuard, logs)
		}
	}
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Skipf("cannot signal this process: %v", err)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d; logs:\n%s", code, logs)
		}
	case <-time.After(hangGuard):
		t.Fatalf("still running %v after SIGTERM; logs:\n%s", hangGuard, logs)
	}
	if n := len(h.records(logs.String(), "stopped")); n != 1 {
		t.Errorf("%d stopped records, want 1; logs:\n%s", n, logs)
	}
}

func TestRevokedSession(t *testing.T) {
	inBubble(t, authserver.Config{Rotate: true}, func(t *testing.T, h *harness) {
		logs, done := h.start(context.Background(), h.args()...)
		time.Sleep(125 * time.Millisecond) // calls at 0, 50 and 100ms
		if n := len(h.records(logs.String(), "api call")); n != 3 {
			t.Fatalf("%d calls in the first 125ms, want 3; logs:\n%s", n, logs)
		}
		h.srv.RevokeFamilyOf(h.tok.RefreshToken)
		h.srv.ExpireAccessTokens()
		if code := h.wait(done, logs, time.Minute); code != exitReauth {
			t.Fatalf("exit %d, want %d; logs:\n%s", code, exitReauth, logs)
		}
		assertReauthLogged(t, h, logs)
	})
}

func TestNothingStored(t *testing.T) {
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		logs, done := h.start(context.Background(), h.args("-entry", "bob")...)
		if code := h.wait(done, logs, time.Minute); code != exitReauth {
			t.Fatalf("exit %d, want %d; logs:\n%s", code, exitReauth, logs)
		}
		assertReauthLogged(t, h, logs)
		if n := h.srv.Stats().ResourceRequests; n != 0 {
			t.Errorf("%d API requests without a token", n)
		}
	})
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
	inBubble(t, authserver.Config{}, func(t *testing.T, h *harness) {
		other := make([]byte, 32)
		rand.Read(other)
		t.Setenv(keyEnv, base64.StdEncoding.EncodeToString(other))
		logs, done := h.start(context.Background(), h.args()...)
		if code := h.wait(done, logs, time.Minute); code != exitError {
			t.Fatalf("exit %d, want %d; logs:\n%s", code, exitError, logs)
		}
		if !strings.Contains(logs.String(), "TOKENKEEP_KEY") {
			t.Errorf("the error does not point at the key; logs:\n%s", logs)
		}
	})
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
