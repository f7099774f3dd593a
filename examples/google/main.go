// Command google signs in to a Google account with the authorization code
// flow and PKCE, as a desktop application does, keeps the session in the OS
// keyring, and calls a Google API with it.
//
// On first use it opens the browser at Google's consent page and listens on
// a random loopback port (http://127.0.0.1:PORT/callback) for the redirect
// that carries the authorization code (RFC 8252). It asks for offline access
// with prompt=consent, so that Google issues a refresh token, and saves the
// session. Later runs reuse the session and refresh it silently; the browser
// opens again only if Google stops honouring it.
//
// Usage:
//
//	GOOGLE_CLIENT_ID=….apps.googleusercontent.com GOOGLE_CLIENT_SECRET=… google
//	google -no-browser                 # print the URL instead of opening it
//	google -file-store ~/.config/tokenkeep-google   # no keyring: encrypted file
//	google -api https://www.googleapis.com/drive/v3/about?fields=user -scopes "openid email https://www.googleapis.com/auth/drive.metadata.readonly"
//	google -logout                     # revoke the session and forget it
//
// Create the client as "Desktop app" in the Google Cloud console. Its secret
// is not confidential for desktop apps, but Google still wants it.
//
// The session is kept in the OS keyring (service "tokenkeep-google"). With
// -file-store DIR it is kept in an encrypted file instead, under a key from
// TOKENKEEP_KEY (32 bytes as hex or base64) or derived from
// TOKENKEEP_PASSPHRASE.
//
// The program prints the API's status and the email and name fields of its
// JSON answer. It never prints a token.
//
// Exit codes:
//
//	0  success
//	1  error
//	2  usage error (bad flags, no client ID, no key for -file-store)
//	4  sign-in refused (consent denied) or not completed in time
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitRefused = 4
)

// Environment variables.
const (
	clientIDEnv     = "GOOGLE_CLIENT_ID"
	clientSecretEnv = "GOOGLE_CLIENT_SECRET"
	keyEnv          = "TOKENKEEP_KEY"
	passphraseEnv   = "TOKENKEEP_PASSPHRASE"
)

// keyringService names the session's keyring items.
const keyringService = "tokenkeep-google"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// options are the command-line flags.
type options struct {
	clientID     string
	clientSecret string
	authURL      string
	tokenURL     string
	revokeURL    string
	api          string
	scopes       string
	fileStore    string
	noBrowser    bool
	logout       bool
	loginTimeout time.Duration
}

// usageError is a mistake in the command line or the environment.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errRefused is matched by sign-ins the user refused or did not complete.
var errRefused = errors.New("sign-in not completed")

// run is the whole program; it returns the exit code. env looks up
// environment variables; the key in TOKENKEEP_KEY is read from the process
// environment by storage.KeyFromEnv, so env should agree with it (os.Getenv
// does).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	o, err := parseFlags(args, stderr, env)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		err = execute(ctx, o, stdout, stderr, env)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "google: %v\nRun \"google -h\" for help.\n", err)
		return exitUsage
	case errors.Is(err, errRefused):
		fmt.Fprintf(stderr, "google: %v\n", err)
		return exitRefused
	}
	fmt.Fprintf(stderr, "google: %v\n", err)
	return exitError
}

// parseFlags reads the flags, with the client from the environment by
// default.
func parseFlags(args []string, stderr io.Writer, env func(string) string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("google", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: google [flags]\n\n"+
			"Sign in to Google (authorization code + PKCE, loopback redirect), keep the\n"+
			"session in the OS keyring, and call a Google API with it.\n"+
			"Exit codes: 0 ok, 1 error, 2 usage, 4 sign-in refused or not completed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.clientID, "client-id", env(clientIDEnv), "OAuth client ID (default $"+clientIDEnv+")")
	fs.StringVar(&o.clientSecret, "client-secret", "", "OAuth client secret (default $"+clientSecretEnv+")")
	fs.StringVar(&o.authURL, "auth-url", "https://accounts.google.com/o/oauth2/v2/auth", "authorization endpoint")
	fs.StringVar(&o.tokenURL, "token-url", "https://oauth2.googleapis.com/token", "token endpoint")
	fs.StringVar(&o.revokeURL, "revoke-url", "https://oauth2.googleapis.com/revoke", "revocation endpoint")
	fs.StringVar(&o.api, "api", "https://openidconnect.googleapis.com/v1/userinfo", "API URL to GET")
	fs.StringVar(&o.scopes, "scopes", "openid email profile", "space-separated scopes to request")
	fs.StringVar(&o.fileStore, "file-store", "", "keep the session in an encrypted file in this directory instead of the OS keyring")
	fs.BoolVar(&o.noBrowser, "no-browser", false, "print the sign-in URL instead of opening a browser")
	fs.BoolVar(&o.logout, "logout", false, "revoke the stored session at Google and delete it, then exit")
	fs.DurationVar(&o.loginTimeout, "login-timeout", 5*time.Minute, "how long to wait for the browser sign-in")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	o.clientSecret = cmp.Or(o.clientSecret, env(clientSecretEnv)) // not a flag default: -h would show it
	switch {
	case fs.NArg() > 0:
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	case o.clientID == "":
		return nil, usagef("no client ID: set %s or use -client-id", clientIDEnv)
	case o.loginTimeout <= 0:
		return nil, usagef("-login-timeout must be positive")
	}
	return o, nil
}

// execute signs in if needed and calls the API, or logs out.
func execute(ctx context.Context, o *options, stdout, stderr io.Writer, env func(string) string) error {
	store, err := openStore(o, env)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	cfg := oauthConfig(o)
	r, err := tokensource.NewConfigRefresher(cfg, o.revokeURL, hc)
	if err != nil {
		return err
	}
	src, err := tokensource.New(r, store, o.clientID)
	if err != nil {
		return err
	}
	defer src.Close()
	if o.logout {
		return logout(ctx, src, store, o.clientID, stdout)
	}
	lg := &loginFlow{cfg: cfg, hc: hc, out: stdout, noBrowser: o.noBrowser, timeout: o.loginTimeout}
	if _, err := storage.LoadToken(ctx, store, o.clientID); errors.Is(err, storage.ErrNotFound) {
		if err := lg.signIn(ctx, src); err != nil {
			return err
		}
	} else if errors.Is(err, storage.ErrUnavailable) && o.fileStore == "" {
		return fmt.Errorf("%w\nThe OS keyring cannot be reached; use -file-store DIR with %s set to keep the session in a file", err, keyEnv)
	} else if err != nil {
		return err
	}
	api := transport.NewClient(src)
	err = callAPI(ctx, api, o.api, stdout)
	if errors.Is(err, tokensource.ErrReauthRequired) {
		fmt.Fprintln(stderr, "Google no longer honours the saved session; signing in again.")
		if err := lg.signIn(ctx, src); err != nil {
			return err
		}
		err = callAPI(ctx, api, o.api, stdout)
	}
	return err
}

// oauthConfig describes the client. Google takes the client's credentials
// in the request body.
func oauthConfig(o *options) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     o.clientID,
		ClientSecret: o.clientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   o.authURL,
			TokenURL:  o.tokenURL,
			AuthStyle: oauth2.AuthStyleInParams,
		},
		Scopes: strings.Fields(o.scopes),
	}
}

// openStore returns the OS keyring store, or the encrypted file store with
// -file-store.
func openStore(o *options, env func(string) string) (storage.Store, error) {
	if o.fileStore == "" {
		return storage.NewKeyring(keyringService, nil)
	}
	var key storage.Key
	var err error
	switch {
	case env(keyEnv) != "":
		if key, err = storage.KeyFromEnv(keyEnv); err != nil {
			return nil, &usageError{err.Error()}
		}
	case env(passphraseEnv) != "":
		if key, err = storage.Passphrase([]byte(env(passphraseEnv))); err != nil {
			return nil, err
		}
	default:
		return nil, usagef("-file-store needs %s (32 bytes as hex or base64) or %s", keyEnv, passphraseEnv)
	}
	return storage.NewFile(o.fileStore, key)
}

// logout revokes the session at the provider and deletes it.
func logout(ctx context.Context, src *tokensource.Source, store storage.Store, entry string, stdout io.Writer) error {
	if _, err := storage.LoadToken(ctx, store, entry); errors.Is(err, storage.ErrNotFound) {
		fmt.Fprintln(stdout, "Not signed in; nothing to do.")
		return nil
	}
	err := src.Revoke(ctx)
	if errors.Is(err, tokensource.ErrNoRevocationEndpoint) {
		fmt.Fprintln(stdout, "Signed out here; without a revocation endpoint the provider still honours the refresh token until it expires.")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Signed out: the session was revoked and deleted.")
	return nil
}
