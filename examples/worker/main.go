// Command worker is a background job that acts for a user with access the
// user delegated earlier: it calls an API on a schedule, with tokens that
// tokenkeep refreshes ahead of expiry and keeps in an encrypted file.
//
// The worker does not log in. Some other program (an interactive login, an
// admin tool) stores the user's session, with refresh token, in the file
// store under -entry; the worker uses and renews it. When the provider no
// longer renews it (revoked, expired, password changed), the worker logs an
// ERROR telling the operator to log in again and exits with code 3.
//
// Usage:
//
//	TOKENKEEP_KEY=$(cat /run/secrets/tokenkeep-key) worker \
//		-store /var/lib/worker/sessions -entry alice \
//		-token-url https://example.okta.com/oauth2/default/v1/token -client-id 0oa1b2c3 \
//		-api https://api.example.com/v1/report -interval 1m
//
// TOKENKEEP_KEY holds the file store's 32-byte key as hex or base64 (for
// example from "openssl rand -base64 32"). The client secret, if the client
// has one, is best given in WORKER_CLIENT_SECRET rather than with
// -client-secret, which other users can see in the process list.
//
// Logs are JSON lines on stderr; they never contain a token or the key.
// SIGTERM or SIGINT lets the call in flight finish, then the worker stops.
//
// Exit codes:
//
//	0  stopped by a signal, or after -calls calls
//	1  error (the store cannot be opened or decrypted)
//	2  usage error (bad flags, TOKENKEEP_KEY missing or malformed)
//	3  the session can no longer be renewed: log in again
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitReauth = 3
)

// Environment variables.
const (
	keyEnv    = "TOKENKEEP_KEY"
	secretEnv = "WORKER_CLIENT_SECRET"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// options are the command-line flags.
type options struct {
	storeDir     string
	entry        string
	tokenURL     string
	clientID     string
	clientSecret string
	api          string
	interval     time.Duration
	calls        int
	earlyRefresh time.Duration
	timeout      time.Duration
}

// run is the whole program; it returns the exit code. It stops when ctx is
// done or on SIGTERM or SIGINT. env looks up environment variables; the key
// in TOKENKEEP_KEY is read from the process environment by
// storage.KeyFromEnv, so env should agree with it (os.Getenv does).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	o, err := parseFlags(args, stderr, env)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	key, err := fileKey(env)
	if err != nil {
		log.Error("cannot read the store key", "err", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := newWorker(o, key, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitError
	}
	log.Info("started", "store", w.store.Dir(), "entry", o.entry, "api", o.api, "interval", o.interval.String())
	code := w.loop(ctx)
	if err := w.src.Close(); err != nil {
		log.Error("the newest token could not be saved; the next start may need a new login", "err", err)
	}
	log.Info("stopped", "exit_code", code)
	return code
}

// parseFlags reads the flags and checks that the required ones are there.
func parseFlags(args []string, stderr io.Writer, env func(string) string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: TOKENKEEP_KEY=… worker -token-url URL -client-id ID -api URL [flags]\n\n"+
			"Call an API on a schedule with a stored, self-refreshing session.\n"+
			"Exit codes: 0 stopped, 1 error, 2 usage, 3 log in again.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.storeDir, "store", "", "directory of the encrypted session files (default: tokenkeep-worker in the user config directory)")
	fs.StringVar(&o.entry, "entry", "worker", "name of the stored session")
	fs.StringVar(&o.tokenURL, "token-url", "", "the provider's token endpoint (required)")
	fs.StringVar(&o.clientID, "client-id", "", "OAuth client ID (required)")
	fs.StringVar(&o.clientSecret, "client-secret", "", "OAuth client secret, if any (default $"+secretEnv+")")
	fs.StringVar(&o.api, "api", "", "URL of the API to call (required)")
	fs.DurationVar(&o.interval, "interval", time.Minute, "time between calls")
	fs.IntVar(&o.calls, "calls", 0, "stop after this many calls; 0 means run until stopped")
	fs.DurationVar(&o.earlyRefresh, "early-refresh", 5*time.Minute, "refresh tokens this long before they expire, in the background")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "limit for each API call")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.clientSecret = cmp.Or(o.clientSecret, env(secretEnv)) // not a flag default: -h would show it
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.tokenURL == "" || o.clientID == "" || o.api == "":
		return nil, errors.New("-token-url, -client-id and -api are required")
	case o.interval <= 0 || o.calls < 0 || o.timeout <= 0:
		return nil, errors.New("-interval and -timeout must be positive and -calls not negative")
	}
	if o.storeDir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("no user config directory (%v); use -store", err)
		}
		o.storeDir = filepath.Join(base, "tokenkeep-worker")
	}
	return o, nil
}

// fileKey reads the store key from TOKENKEEP_KEY.
func fileKey(env func(string) string) (storage.Key, error) {
	if env(keyEnv) == "" {
		return nil, fmt.Errorf("%s is not set: it must hold the store's 32-byte key as hex or base64", keyEnv)
	}
	return storage.KeyFromEnv(keyEnv)
}

// worker is a running job.
type worker struct {
	opts   *options
	log    *slog.Logger
	store  *storage.File
	src    *tokensource.Source
	client *http.Client
}

// httpTransport sends the worker's HTTP requests, to the provider and the
// API; nil means http.DefaultTransport. It is a seam for tests, which reach
// an in-memory provider through it.
var httpTransport http.RoundTripper

// newWorker opens the store and builds the token source and HTTP client.
func newWorker(o *options, key storage.Key, log *slog.Logger) (*worker, error) {
	store, err := storage.NewFile(o.storeDir, key)
	if err != nil {
		return nil, err
	}
	style := oauth2.AuthStyleInHeader
	if o.clientSecret == "" {
		style = oauth2.AuthStyleInParams
	}
	cfg := &oauth2.Config{
		ClientID:     o.clientID,
		ClientSecret: o.clientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: o.tokenURL, AuthStyle: style},
	}
	r, err := tokensource.NewConfigRefresher(cfg, "", &http.Client{Transport: httpTransport, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	src, err := tokensource.New(r, store, o.entry,
		tokensource.WithEarlyRefresh(o.earlyRefresh),
		tokensource.WithLogger(log))
	if err != nil {
		return nil, err
	}
	return &worker{
		opts:   o,
		log:    log,
		store:  store,
		src:    src,
		client: transport.NewClient(src, transport.WithBase(httpTransport), transport.WithTimeout(o.timeout)),
	}, nil
}

// loop calls the API every interval until ctx is done, -calls calls were
// made, or the session needs a new login. It returns the exit code.
func (w *worker) loop(ctx context.Context) int {
	tick := time.NewTicker(w.opts.interval)
	defer tick.Stop()
	for n := 1; ctx.Err() == nil; n++ {
		if code, stop := w.outcome(n, w.call(ctx, n)); stop {
			return code
		}
		if w.opts.calls > 0 && n >= w.opts.calls {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return exitOK
}

// outcome logs the failure of call n, if any, and says whether the worker
// must stop, with which exit code.
func (w *worker) outcome(n int, err error) (code int, stop bool) {
	switch {
	case err == nil:
		return exitOK, false
	case errors.Is(err, storage.ErrCorrupt):
		w.log.Error("the stored session cannot be decrypted: TOKENKEEP_KEY is not the key it was saved with, or the file was damaged (then log in again)",
			"store", w.store.Dir(), "entry", w.opts.entry, "err", err)
		return exitError, true
	case errors.Is(err, tokensource.ErrReauthRequired):
		w.log.Error("the session can no longer be renewed: log in again to store a new session, then restart the worker",
			"store", w.store.Dir(), "entry", w.opts.entry, "err", err)
		return exitReauth, true
	}
	w.log.Warn("api call failed", "call", n, "err", err)
	return exitOK, false
}

// call makes one API call and logs its answer; it returns the error of a
// call that got none. A call already sent runs to its end even if ctx is
// cancelled meanwhile: stopping waits for it.
func (w *worker) call(ctx context.Context, n int) error {
	start := time.Now()
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, w.opts.api, nil)
	if err != nil {
		return err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	size, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<20))
	attrs := []any{"call", n, "status", resp.StatusCode, "bytes", size, "duration_ms", time.Since(start).Milliseconds()}
	switch {
	case err != nil:
		w.log.Warn("api call failed", append(attrs, "err", err)...)
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		w.log.Info("api call", attrs...)
	default:
		w.log.Warn("api call failed", attrs...)
	}
	return nil
}
