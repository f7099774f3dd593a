// Command devicecode signs in to an OAuth 2.0 provider with the device
// authorization grant (RFC 8628), as a command-line tool on a machine without
// a browser does, and keeps the session with tokenkeep. It suits providers
// such as Okta and Auth0 that offer the device flow to native applications.
//
// Usage:
//
//	devicecode [flags] login|status|token|logout [flags]
//
// Flags may come before or after the command. The provider is named by
// -issuer, whose OpenID Connect discovery document supplies the endpoints, or
// by -device-url and -token-url (and -revoke-url) directly; explicit URLs win
// over discovered ones, and giving them all skips discovery.
//
//	devicecode -issuer https://example.okta.com/oauth2/default -client-id 0oa1b2c3 login
//	devicecode -issuer https://example.eu.auth0.com/ -client-id abc -audience https://api.example.com login
//	curl -H "Authorization: Bearer $(devicecode -issuer … -client-id … token)" https://api.example.com/
//
// Commands:
//
//	login   show a code and a link, wait until you approve it in a browser
//	        anywhere, and save the session
//	status  say who is logged in (from the ID token, unverified), until when
//	        the access token lasts and which scopes were granted; no network,
//	        and no token is printed
//	token   print a valid access token on stdout for scripts, refreshing it
//	        first if needed; the only command that prints a secret
//	logout  revoke the session at the provider and delete it here
//
// The session is kept in the OS keyring with -keyring, or otherwise in an
// encrypted file in -store (default: tokenkeep-devicecode in the user's
// configuration directory) under a key taken from TOKENKEEP_KEY (32 bytes as
// hex or base64, e.g. from "openssl rand -base64 32") or derived from the
// passphrase in TOKENKEEP_PASSPHRASE. Sessions are stored per client ID.
//
// Exit codes:
//
//	0  success
//	1  error
//	2  usage error (bad flags, missing client ID, endpoints or key)
//	3  not logged in, or the session can no longer be renewed: run login
//	4  login failed because the request was denied or the code expired
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNoLogin  = 3
	exitRejected = 4
)

// Environment variables that supply the file store's key.
const (
	keyEnv        = "TOKENKEEP_KEY"
	passphraseEnv = "TOKENKEEP_PASSPHRASE"
)

// appName names the keyring service and the default store directory.
const appName = "tokenkeep-devicecode"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// options are the command-line flags.
type options struct {
	issuer       string
	deviceURL    string
	tokenURL     string
	revokeURL    string
	clientID     string
	clientSecret string
	scopes       string
	audience     string
	storeDir     string
	keyring      bool
}

// usageError is a mistake in the command line or the environment.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// Login outcomes the user caused, reported with exitRejected.
var (
	errDenied  = errors.New("you denied the request")
	errExpired = errors.New("the code expired; run login again")
)

// run is the whole program: it parses args, runs one command and returns the
// exit code. env looks up environment variables; the key in TOKENKEEP_KEY is
// read from the process environment by storage.KeyFromEnv, so env should
// agree with it (os.Getenv does).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	o, cmd, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		err = dispatch(ctx, o, cmd, stdout, stderr, env)
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	switch code {
	case exitNoLogin:
		fmt.Fprintf(stderr, "devicecode: %v\nYou are not logged in, or the session can no longer be renewed: run \"devicecode login\".\n", err)
	case exitUsage:
		fmt.Fprintf(stderr, "devicecode: %v\nRun \"devicecode -h\" for help.\n", err)
	default:
		fmt.Fprintf(stderr, "devicecode: %v\n", err)
	}
	return code
}

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errDenied), errors.Is(err, errExpired):
		return exitRejected
	case errors.Is(err, tokensource.ErrReauthRequired), errors.Is(err, storage.ErrNotFound):
		return exitNoLogin
	}
	return exitError
}

const usageText = `Usage: devicecode [flags] login|status|token|logout [flags]

Sign in with the OAuth 2.0 device flow (RFC 8628) and keep the session.

Commands:
  login   show a code to approve in a browser, wait for it, save the session
  status  show who is logged in (unverified ID token claims), expiry, scopes
  token   print a valid access token on stdout, refreshing it if needed
  logout  revoke the session at the provider and delete it locally

The file store's key comes from TOKENKEEP_KEY (32 bytes, hex or base64) or is
derived from TOKENKEEP_PASSPHRASE; -keyring uses the OS keyring instead.

Exit codes: 0 ok, 1 error, 2 usage, 3 not logged in or re-authentication
required, 4 request denied or code expired.

Flags:
`

// parseArgs reads flags before and after the command.
func parseArgs(args []string, stderr io.Writer) (*options, string, error) {
	o := &options{}
	fs := flag.NewFlagSet("devicecode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.issuer, "issuer", "", "issuer URL; endpoints come from its /.well-known/openid-configuration")
	fs.StringVar(&o.deviceURL, "device-url", "", "device authorization endpoint (overrides discovery)")
	fs.StringVar(&o.tokenURL, "token-url", "", "token endpoint (overrides discovery)")
	fs.StringVar(&o.revokeURL, "revoke-url", "", "revocation endpoint, RFC 7009 (overrides discovery)")
	fs.StringVar(&o.clientID, "client-id", "", "OAuth client ID (required)")
	fs.StringVar(&o.clientSecret, "client-secret", "", "OAuth client secret, for confidential clients only")
	fs.StringVar(&o.scopes, "scopes", "openid profile offline_access", "space-separated scopes to request")
	fs.StringVar(&o.audience, "audience", "", "API audience to request (Auth0)")
	fs.StringVar(&o.storeDir, "store", "", "directory of the encrypted session file (default: "+appName+" in the user config directory)")
	fs.BoolVar(&o.keyring, "keyring", false, "keep the session in the OS keyring instead of a file")
	if err := fs.Parse(args); err != nil {
		return nil, "", flagError(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return nil, "", usagef("no command given")
	}
	cmd := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return nil, "", flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, "", usagef("unexpected argument %q", fs.Arg(0))
	}
	if o.clientID == "" {
		return nil, "", usagef("-client-id is required")
	}
	return o, cmd, nil
}

// flagError keeps flag.ErrHelp and makes other flag errors usage errors.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err.Error()}
}

// dispatch runs the command cmd.
func dispatch(ctx context.Context, o *options, cmd string, stdout, stderr io.Writer, env func(string) string) error {
	var command func(context.Context, *session, io.Writer, io.Writer) error
	switch cmd {
	case "login":
		command = login
	case "status":
		command = status
	case "token":
		command = printToken
	case "logout":
		command = logout
	default:
		return usagef("unknown command %q; want login, status, token or logout", cmd)
	}
	store, where, err := openStore(o, env)
	if err != nil {
		return err
	}
	s := &session{opts: o, store: store, where: where, hc: &http.Client{Transport: httpTransport, Timeout: 30 * time.Second}}
	return command(ctx, s, stdout, stderr)
}

// httpTransport sends the program's HTTP requests; nil means
// http.DefaultTransport. It is a seam for tests, which reach an in-memory
// provider through it.
var httpTransport http.RoundTripper

// session is what every command works with.
type session struct {
	opts  *options
	store storage.Store
	where string // describes the store, for messages
	hc    *http.Client
}

// entry is the store key of the session: one per client ID.
func (s *session) entry() string { return s.opts.clientID }

// openStore returns the keyring store or the encrypted file store.
func openStore(o *options, env func(string) string) (storage.Store, string, error) {
	if o.keyring {
		k, err := storage.NewKeyring(appName, nil)
		return k, "the OS keyring", err
	}
	key, err := fileKey(env)
	if err != nil {
		return nil, "", err
	}
	dir := o.storeDir
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return nil, "", usagef("no user config directory (%v); use -store", err)
		}
		dir = filepath.Join(base, appName)
	}
	f, err := storage.NewFile(dir, key)
	if err != nil {
		return nil, "", err
	}
	return f, f.Dir(), nil
}

// fileKey returns the file store's key from TOKENKEEP_KEY or
// TOKENKEEP_PASSPHRASE.
func fileKey(env func(string) string) (storage.Key, error) {
	switch {
	case env(keyEnv) != "":
		k, err := storage.KeyFromEnv(keyEnv)
		if err != nil {
			return nil, &usageError{err.Error()}
		}
		return k, nil
	case env(passphraseEnv) != "":
		return storage.Passphrase([]byte(env(passphraseEnv)))
	}
	return nil, usagef("set %s (32 bytes as hex or base64) or %s to encrypt the session file, or use -keyring", keyEnv, passphraseEnv)
}

// source returns a Source that refreshes and revokes at the provider.
func (s *session) source(ep *endpoints) (*tokensource.Source, error) {
	cfg := &oauth2.Config{
		ClientID:     s.opts.clientID,
		ClientSecret: s.opts.clientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: ep.token, AuthStyle: authStyle(s.opts.clientSecret)},
		Scopes:       strings.Fields(s.opts.scopes),
	}
	r, err := tokensource.NewConfigRefresher(cfg, ep.revoke, s.hc)
	if err != nil {
		return nil, err
	}
	return tokensource.New(r, s.store, s.entry())
}

// authStyle sends a secret with HTTP Basic, which every provider must
// accept, and a public client's ID in the body.
func authStyle(secret string) oauth2.AuthStyle {
	if secret == "" {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}
