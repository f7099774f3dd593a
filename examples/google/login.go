package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/tokensource"
)

// loginFlow signs the user in through the browser (RFC 8252): authorization
// code with PKCE, redirected to a loopback listener.
type loginFlow struct {
	cfg       *oauth2.Config
	hc        *http.Client // for the code exchange
	out       io.Writer
	noBrowser bool
	timeout   time.Duration
}

// callback is what the redirect to the loopback listener brought.
type callback struct {
	code string
	err  error
}

// signIn runs the browser flow and stores the new session with src.Put.
func (l *loginFlow) signIn(ctx context.Context, src *tokensource.Source) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the browser's redirect: %w", err)
	}
	cfg := *l.cfg
	cfg.RedirectURL = fmt.Sprintf("http://127.0.0.1:%d/callback", ln.Addr().(*net.TCPAddr).Port)
	state := randomString()
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL(state,
		oauth2.AccessTypeOffline, // a refresh token, for later runs
		oauth2.ApprovalForce,     // prompt=consent: Google sends the refresh token again
		oauth2.S256ChallengeOption(verifier))

	results := make(chan callback, 1)
	srv := &http.Server{Handler: callbackHandler(state, results), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	l.show(authURL)
	code, err := l.await(ctx, results)
	if err != nil {
		return err
	}
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, l.hc), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return fmt.Errorf("exchange the authorization code: %w", describe(err))
	}
	if tok.RefreshToken == "" {
		fmt.Fprintln(l.out, "Note: no refresh token was issued; the next run will ask you to sign in again.")
	}
	if err := src.Put(ctx, tok); err != nil {
		return fmt.Errorf("save the session: %w", err)
	}
	fmt.Fprintln(l.out, "Signed in; the session is saved.")
	return nil
}

// show opens the browser at authURL, or prints the URL.
func (l *loginFlow) show(authURL string) {
	if !l.noBrowser {
		if err := openBrowser(authURL); err == nil {
			fmt.Fprintf(l.out, "Your browser has been opened to sign in. If it did not open, visit:\n\n  %s\n\n", authURL)
			return
		}
	}
	fmt.Fprintf(l.out, "Open this URL in your browser to sign in:\n\n  %s\n\n", authURL)
}

// await waits for the redirect, the timeout or ctx.
func (l *loginFlow) await(ctx context.Context, results <-chan callback) (string, error) {
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	select {
	case r := <-results:
		return r.code, r.err
	case <-t.C:
		return "", fmt.Errorf("%w: no answer from the browser within %v", errRefused, l.timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// callbackHandler answers the browser's redirect to /callback. A request
// whose state does not match is refused and otherwise ignored: it did not
// come from this sign-in, and the real redirect may still come.
func callbackHandler(state string, results chan<- callback) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("state") != state {
			http.Error(w, "This sign-in link is stale or was not started here.", http.StatusBadRequest)
			return
		}
		var res callback
		switch {
		case q.Get("error") == "access_denied":
			res.err = fmt.Errorf("%w: you denied access", errRefused)
		case q.Get("error") != "":
			res.err = fmt.Errorf("%w: Google answered %s", errRefused, q.Get("error"))
		case q.Get("code") == "":
			res.err = fmt.Errorf("%w: the redirect carried no code", errRefused)
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "<p>Sign-in failed: %s.</p>", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprint(w, "<p>Signed in. You can close this window and return to the terminal.</p>")
		}
		select {
		case results <- res:
		default: // a second redirect for the same sign-in: the first counts
		}
	})
	return mux
}

// describe turns an *oauth2.RetrieveError into a message without the
// provider's raw answer.
func describe(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return err
	}
	if re.ErrorCode != "" {
		return fmt.Errorf("the provider answered %s (HTTP %d)", re.ErrorCode, re.Response.StatusCode)
	}
	return fmt.Errorf("the provider answered HTTP %d", re.Response.StatusCode)
}

// randomString returns 32 random bytes in base64url, for state.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// openBrowser asks the desktop to open u.
func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait() // reap it; xdg-open returns at once
	return nil
}
