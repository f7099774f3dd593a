// Command demo shows tokenkeep keeping a session alive, with no credentials
// and no network: it starts the embedded authorization server on loopback,
// logs in with the authorization code flow and PKCE (playing the browser
// itself), keeps the session in an encrypted file, and then lets access
// tokens expire every few seconds while it works.
//
//	go run ./examples/demo [-slow 2] [-keep] [-ttl 3s]
//
// It prints no token: tokens are numbered in the order they appear.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// settings are the demo's flags.
type settings struct {
	slow float64       // multiplies every pause
	keep bool          // keep the store directory and print where it is
	ttl  time.Duration // access token lifetime

	// inMemory serves the provider over an in-memory network instead of a
	// loopback port, so that a test can run the demo in a testing/synctest
	// bubble, where the pauses and token lifetimes pass on a fake clock.
	// The command keeps loopback: its requests are real HTTP on a socket.
	inMemory bool
}

func main() {
	var s settings
	flag.Float64Var(&s.slow, "slow", 1, "multiply every pause by this factor, to watch more closely")
	flag.BoolVar(&s.keep, "keep", false, "keep the encrypted store and print its directory")
	flag.DurationVar(&s.ttl, "ttl", 3*time.Second, "lifetime of access tokens")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, s); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo is one run's state.
type demo struct {
	settings
	outMu   sync.Mutex // guards out: refresh hooks print from other goroutines
	out     io.Writer
	srv     *authserver.Server
	dir     string
	key     storage.Key
	store   *storage.File
	src     *tokensource.Source
	client  *http.Client
	numbers tokenNumbers
	waits   atomic.Int32 // refreshes some call waited for: all but background ones
}

func run(ctx context.Context, out io.Writer, s settings) error {
	d := &demo{settings: s, out: out}
	d.srv = authserver.New(authserver.Config{AccessTTL: s.ttl, Rotate: true, ReuseDetection: true, InMemory: s.inMemory})
	defer d.srv.Close()
	if err := d.setUp(); err != nil {
		return err
	}
	defer d.cleanUp()
	for _, step := range []func(context.Context) error{
		d.login,
		d.steadyCalls,
		d.restart,
		d.storm,
		d.outage,
		d.revoked,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) say(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) pause(x time.Duration) { time.Sleep(time.Duration(float64(x) * d.slow)) }

func (d *demo) setUp() error {
	dir, err := os.MkdirTemp("", "tokenkeep-demo-")
	if err != nil {
		return err
	}
	d.dir = filepath.Join(dir, "sessions")
	// A real program keeps this key in the OS keyring (storage.KeyringKey)
	// or gets it from its environment (storage.KeyFromEnv).
	raw := make([]byte, 32)
	rand.Read(raw)
	d.key, err = storage.RawKey(raw)
	return err
}

func (d *demo) cleanUp() {
	if d.src != nil {
		d.src.Close()
	}
	if d.keep {
		d.say("\nThe encrypted store is kept in %s", d.dir)
		return
	}
	os.RemoveAll(filepath.Dir(d.dir))
}

// open starts a Source on the file store, as a program does when it starts.
func (d *demo) open() error {
	store, err := storage.NewFile(d.dir, d.key)
	if err != nil {
		return err
	}
	d.store = store
	r, err := tokensource.NewConfigRefresher(d.srv.OAuth2Config("openid", "offline_access"), d.srv.RevocationURL(), d.srv.Client())
	if err != nil {
		return err
	}
	d.src, err = tokensource.New(r, store, "demo-user", tokensource.WithHook(d.onRefresh))
	if err != nil {
		return err
	}
	// The API calls go through the embedded server's transport, which
	// reaches it on loopback or in memory. Tokens here live seconds, not an
	// hour: the least time between two refreshes caused by 401 answers
	// shrinks with them.
	d.client = transport.NewClient(d.src, transport.WithBase(d.srv.Client().Transport), transport.WithRecoveryInterval(d.ttl))
	return nil
}

func (d *demo) onRefresh(e tokensource.Event) {
	switch {
	case e.Kind == tokensource.Refreshed && e.Background:
		d.say("    · background refresh (%d request): new token valid until %s", e.Attempts, e.NewExpiry.Format("15:04:05.0"))
	case e.Kind == tokensource.Refreshed:
		d.waits.Add(1)
		d.say("    · refresh (%d request%s): new token valid until %s", e.Attempts, plural(e.Attempts), e.NewExpiry.Format("15:04:05.0"))
	case e.Kind == tokensource.Failed:
		if !e.Background {
			d.waits.Add(1)
		}
		d.say("    · refresh failed after %d request%s", e.Attempts, plural(e.Attempts))
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (d *demo) login(ctx context.Context) error {
	d.say("1. Log in: authorization code with PKCE; the demo plays the browser.")
	cfg := d.srv.OAuth2Config("openid", "offline_access")
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("demo-state", oauth2.AccessTypeOffline, oauth2.S256ChallengeOption(verifier))
	code, err := authserver.FollowAuthorize(ctx, d.srv.Client(), authURL, "demo-state")
	if err != nil {
		return err
	}
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, d.srv.Client()), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return err
	}
	if err := d.open(); err != nil {
		return err
	}
	if err := d.src.Put(ctx, tok); err != nil {
		return err
	}
	d.say("   Logged in; the session is saved, encrypted, in %s", filepath.Base(d.dir)+string(filepath.Separator)+"demo-user.tok")
	return nil
}

// get calls the protected resource and describes the outcome.
func (d *demo) get(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.srv.ResourceURL(), nil)
	resp, err := d.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	tok, err := d.src.TokenContext(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s with token #%d", resp.Status, d.numbers.of(tok)), nil
}

func (d *demo) steadyCalls(ctx context.Context) error {
	d.say("\n2. Call the API every half second while access tokens live %v.", d.ttl)
	start := time.Now()
	slowest := time.Duration(0)
	waits := d.waits.Load()
	for i := 1; time.Since(start) < time.Duration(float64(2*d.ttl+d.ttl/2)*d.slow); i++ {
		t0 := time.Now()
		what, err := d.get(ctx)
		if err != nil {
			return err
		}
		slowest = max(slowest, time.Since(t0))
		d.say("   call %2d at +%4.1fs: %s", i, time.Since(start).Seconds(), what)
		d.pause(500 * time.Millisecond)
	}
	// The refresh hook, not the slowest call's time, tells whether a call
	// waited: a refresh from a nearby provider can be quicker than a call
	// on a busy machine.
	if n := int(d.waits.Load() - waits); n > 0 {
		d.say("   %d call%s waited for a refresh: the slowest took %v.", n, plural(n), slowest.Round(time.Millisecond))
		return nil
	}
	d.say("   No call waited for a refresh: the slowest took %v.", slowest.Round(time.Millisecond))
	return nil
}

func (d *demo) restart(ctx context.Context) error {
	d.say("\n3. Restart: a new process opens the same store.")
	d.src.Close()
	before := d.srv.Stats()
	if err := d.open(); err != nil {
		return err
	}
	what, err := d.get(ctx)
	if err != nil {
		return err
	}
	after := d.srv.Stats()
	d.say("   %s; logins: %d, refreshes: %d. No login needed.", what, after.CodeGrants-before.CodeGrants, after.RefreshGrants-before.RefreshGrants)
	return nil
}

func (d *demo) storm(ctx context.Context) error {
	d.say("\n4. Wait for the access token to expire, then make 100 calls at once.")
	// Wait out the latest token: a background refresh may have replaced the
	// one the last call used.
	for {
		tok, err := storage.LoadToken(ctx, d.store, "demo-user")
		if err != nil {
			return err
		}
		if time.Now().After(tok.Expiry) {
			break
		}
		time.Sleep(time.Until(tok.Expiry) + 100*time.Millisecond)
	}
	before := d.srv.Stats()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.get(ctx); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	after := d.srv.Stats()
	d.say("   %d of 100 calls succeeded; token endpoint requests: %d.", ok.Load(), after.TokenRequests-before.TokenRequests)
	return nil
}

func (d *demo) outage(ctx context.Context) error {
	d.say("\n5. The token endpoint fails: three 503 answers, then it recovers.")
	d.srv.Inject(authserver.EndpointToken,
		authserver.Fault{Status: http.StatusServiceUnavailable},
		authserver.Fault{Status: http.StatusServiceUnavailable},
		authserver.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "1"})
	d.srv.ExpireAccessTokens() // the API now refuses the current access token
	start := time.Now()
	what, err := d.get(ctx)
	if err != nil {
		return err
	}
	d.say("   The API refused the old token; after backoff: %s, %.1fs later.", what, time.Since(start).Seconds())
	return nil
}

func (d *demo) revoked(ctx context.Context) error {
	d.say("\n6. The user revokes the app's access at the provider.")
	tok, err := d.src.TokenContext(ctx)
	if err != nil {
		return err
	}
	d.srv.RevokeFamilyOf(tok.RefreshToken)
	d.srv.ExpireAccessTokens()
	// A token refreshed because of a 401 is not refreshed again for a
	// 401 within the recovery interval: the first calls may just get 401.
	deadline := time.Now().Add(4 * d.ttl)
	for {
		what, err := d.get(ctx)
		if errors.Is(err, tokensource.ErrReauthRequired) {
			d.say("   The call fails with tokensource.ErrReauthRequired: time to log in again.")
			d.say("   (error: %v)", err)
			return nil
		}
		if err != nil || time.Now().After(deadline) {
			return fmt.Errorf("want ErrReauthRequired, got %q, %v", what, err)
		}
		d.say("   The API answers %s; the transport waits out its recovery interval before refreshing again.", what)
		time.Sleep(d.ttl / 2)
	}
}

// tokenNumbers numbers access tokens in the order they are seen, so that
// the demo can tell them apart without printing them.
type tokenNumbers struct {
	mu   sync.Mutex // guards seen
	seen map[string]int
}

func (n *tokenNumbers) of(t *oauth2.Token) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = make(map[string]int)
	}
	if _, ok := n.seen[t.AccessToken]; !ok {
		n.seen[t.AccessToken] = len(n.seen) + 1
	}
	return n.seen[t.AccessToken]
}
