// Package proctest is tokenkeep's multi-process test harness. Its child side
// is a process that opens a shared store, asks for a token once, prints what
// it got and exits; its parent side primes the store, starts many children
// at once against the embedded authorization server and checks what they
// printed. The process tests and the procbench program share it.
package proctest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// Environment of a child process.
const (
	EnvMode      = "TOKENKEEP_PROC_MODE"       // one of the Mode constants
	EnvTokenURL  = "TOKENKEEP_PROC_TOKEN_URL"  // the authorization server's token endpoint
	EnvDir       = "TOKENKEEP_PROC_DIR"        // the shared store's directory
	EnvKey       = "TOKENKEEP_PROC_KEY"        // the file store's key, for storage.KeyFromEnv
	EnvChild     = "TOKENKEEP_PROC_CHILD"      // set in children; its value is unused
	EnvOp        = "TOKENKEEP_PROC_OP"         // what a tokenkeep child does: one of the Op constants
	EnvPut       = "TOKENKEEP_PROC_PUT"        // with OpPut: the login's token, as JSON
	EnvRevokeURL = "TOKENKEEP_PROC_REVOKE_URL" // the server's revocation endpoint, for OpRevoke
)

// Operations a tokenkeep child performs once released.
const (
	OpToken  = ""       // ask for a token (the default)
	OpRevoke = "revoke" // log out: Source.Revoke
	OpPut    = "put"    // log in: Source.Put of the token in EnvPut
	OpTerm   = "term"   // ask for a token, and on SIGTERM Close the Source and report
)

// Modes: how a child keeps its session.
const (
	ModeFile    = "tokenkeep-file"    // tokensource.Source over storage.File
	ModeKeyring = "tokenkeep-keyring" // tokensource.Source over storage.Keyring
	ModeXOAuth2 = "x-oauth2"          // oauth2.Config.TokenSource, saving to a JSON file
)

// Entry is the name every child uses for the shared session.
const Entry = "session"

// KeyringService is the keyring service name of ModeKeyring.
const KeyringService = "tokenkeep-proctest"

// Outcomes a child prints as the first word of its one line of output.
const (
	OK      = "ok"      // followed by the access token
	Reauth  = "reauth"  // the session is gone: ErrReauthRequired
	Failed  = "error"   // followed by the error
	Revoked = "revoked" // OpRevoke succeeded
	Put     = "put"     // OpPut succeeded
	Closed  = "closed"  // OpTerm: Close returned nil after SIGTERM
)

// Store opens the shared store of a tokenkeep mode.
func Store(mode, dir string) (storage.Store, error) {
	switch mode {
	case ModeFile:
		key, err := storage.KeyFromEnv(EnvKey)
		if err != nil {
			return nil, err
		}
		return storage.NewFile(dir, key)
	case ModeKeyring:
		return storage.NewKeyring(KeyringService, &storage.KeyringOptions{LockDir: dir})
	}
	return nil, fmt.Errorf("proctest: no store for mode %q", mode)
}

// Config is the embedded server's confidential client at tokenURL.
func Config(tokenURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     authserver.ClientID,
		ClientSecret: authserver.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// Main runs one child from its environment, writes its outcome line to w
// and returns the exit status.
func Main(w io.Writer) int {
	if os.Getenv(EnvSim) != "" {
		return runSim(os.Stdin, w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mode, dir, tokenURL := os.Getenv(EnvMode), os.Getenv(EnvDir), os.Getenv(EnvTokenURL)
	io.Copy(io.Discard, os.Stdin) // the parent closes stdin to start all children at once
	var tok *oauth2.Token
	var err error
	switch op := os.Getenv(EnvOp); {
	case mode == ModeXOAuth2:
		tok, err = plain(ctx, dir, tokenURL)
	case op != OpToken:
		out, err := operate(ctx, op, mode, dir, tokenURL)
		if err != nil {
			fmt.Fprintln(w, Failed, err)
			return 1
		}
		fmt.Fprintln(w, out)
		return 0
	default:
		tok, err = managed(ctx, mode, dir, tokenURL)
	}
	switch {
	case err == nil:
		fmt.Fprintln(w, OK, tok.AccessToken)
	case errors.Is(err, tokensource.ErrReauthRequired), isInvalidGrant(err):
		fmt.Fprintln(w, Reauth)
	default:
		fmt.Fprintln(w, Failed, err)
		return 1
	}
	return 0
}

func managed(ctx context.Context, mode, dir, tokenURL string) (*oauth2.Token, error) {
	src, err := open(mode, dir, tokenURL)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return src.TokenContext(ctx)
}

// open returns the child's Source on the shared store.
func open(mode, dir, tokenURL string) (*tokensource.Source, error) {
	st, err := Store(mode, dir)
	if err != nil {
		return nil, err
	}
	r, err := tokensource.NewConfigRefresher(Config(tokenURL), os.Getenv(EnvRevokeURL), nil)
	if err != nil {
		return nil, err
	}
	return tokensource.New(r, st, Entry, tokensource.WithLockTimeout(20*time.Second))
}

// operate performs an operation other than asking for a token and returns
// the line to print.
func operate(ctx context.Context, op, mode, dir, tokenURL string) (string, error) {
	src, err := open(mode, dir, tokenURL)
	if err != nil {
		return "", err
	}
	defer src.Close()
	switch op {
	case OpRevoke:
		if err := src.Revoke(ctx); err != nil {
			return "", err
		}
		return Revoked, nil
	case OpPut:
		var t oauth2.Token
		if err := json.Unmarshal([]byte(os.Getenv(EnvPut)), &t); err != nil {
			return "", fmt.Errorf("proctest: the login to put: %w", err)
		}
		if err := src.Put(ctx, &t); err != nil {
			return "", err
		}
		return Put, nil
	case OpTerm:
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go src.TokenContext(ctx)
		select {
		case <-term:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if err := src.Close(); err != nil {
			return "", err
		}
		return Closed, nil
	}
	return "", fmt.Errorf("proctest: unknown operation %q", op)
}

// PlainPath is where ModeXOAuth2 children keep the session, as the
// x/oauth2 documentation suggests: the token's JSON in a file.
func PlainPath(dir string) string { return filepath.Join(dir, "plain.json") }

// plain is what a program using x/oauth2 alone does: read the saved token,
// let Config.TokenSource refresh it, save it if it changed.
func plain(ctx context.Context, dir, tokenURL string) (*oauth2.Token, error) {
	b, err := os.ReadFile(PlainPath(dir))
	if err != nil {
		return nil, err
	}
	var saved oauth2.Token
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, err
	}
	tok, err := Config(tokenURL).TokenSource(ctx, &saved).Token()
	if err != nil {
		return nil, err
	}
	if tok.AccessToken != saved.AccessToken {
		b, _ := json.Marshal(tok)
		if err := os.WriteFile(PlainPath(dir), b, 0o600); err != nil {
			return nil, err
		}
	}
	return tok, nil
}

func isInvalidGrant(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_grant"
}

// Prime stores tok as the session of mode in dir.
func Prime(ctx context.Context, mode, dir string, tok *oauth2.Token) error {
	if mode == ModeXOAuth2 {
		b, err := json.Marshal(tok)
		if err != nil {
			return err
		}
		return os.WriteFile(PlainPath(dir), b, 0o600)
	}
	st, err := Store(mode, dir)
	if err != nil {
		return err
	}
	return storage.SaveToken(ctx, st, Entry, tok)
}

// Expire makes the stored session's access token look expired to its
// clients, keeping its refresh token, as if its lifetime had passed.
func Expire(ctx context.Context, mode, dir string) error {
	if mode == ModeXOAuth2 {
		b, err := os.ReadFile(PlainPath(dir))
		if err != nil {
			return err
		}
		var t oauth2.Token
		if err := json.Unmarshal(b, &t); err != nil {
			return err
		}
		t.Expiry = time.Now().Add(-time.Minute)
		return Prime(ctx, mode, dir, &t)
	}
	st, err := Store(mode, dir)
	if err != nil {
		return err
	}
	r, err := st.Load(ctx, Entry)
	if err != nil {
		return err
	}
	if r.Token == nil {
		return fmt.Errorf("proctest: the stored session ended (%s)", r.Reason)
	}
	r.Token.Expiry = time.Now().Add(-time.Minute)
	r.Generation++
	return st.Save(ctx, Entry, r)
}

// Child describes how to start a child: the executable, its arguments, and
// the environment added to the parent's.
type Child struct {
	Path string
	Args []string
	Env  []string
}

// Start starts n children, which wait until Release is called.
func (c Child) Start(n int) (*Group, error) {
	g := &Group{lines: make([]string, n)}
	for i := range n {
		cmd := exec.Command(c.Path, c.Args...)
		cmd.Env = append(os.Environ(), append(c.Env, EnvChild+"=1")...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			g.Release()
			g.Wait()
			return nil, err
		}
		g.cmds = append(g.cmds, cmd)
		g.stdins = append(g.stdins, stdin)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			cmd.Wait()
			g.lines[i] = strings.TrimSpace(out.String())
		}()
	}
	return g, nil
}

// Group is a set of started children.
type Group struct {
	cmds   []*exec.Cmd
	stdins []io.WriteCloser
	wg     sync.WaitGroup
	lines  []string
}

// Release lets every child go.
func (g *Group) Release() {
	for _, in := range g.stdins {
		in.Close()
	}
}

// Wait waits for every child and returns their output lines.
func (g *Group) Wait() []string {
	g.wg.Wait()
	return g.lines
}

// Process returns the i-th child's process, to signal it.
func (g *Group) Process(i int) *os.Process { return g.cmds[i].Process }

// SameValidToken checks that every child printed the same access token and
// that srv honours it. Its errors name outcomes, never tokens.
func SameValidToken(srv *authserver.Server, lines []string) error {
	if len(lines) == 0 {
		return errors.New("no child said anything")
	}
	for i, l := range lines {
		if l != lines[0] {
			return fmt.Errorf("child %d said %q, child 0 said %q", i, Redact(l), Redact(lines[0]))
		}
	}
	at, ok := strings.CutPrefix(lines[0], OK+" ")
	if !ok {
		return fmt.Errorf("children said %q", Redact(lines[0]))
	}
	if !srv.AccessTokenActive(at) {
		return errors.New("the children's access token is not valid at the server")
	}
	return nil
}

// Redact keeps a child's outcome and drops its token.
func Redact(line string) string {
	if strings.HasPrefix(line, OK+" ") {
		return OK + " <token>"
	}
	return line
}

// A Kill is a moment at which a child holding the refresh lock is killed,
// and what the children after it must then print.
type Kill struct {
	Name    string
	Fault   authserver.Fault            // injected at the token endpoint, to hold the victim there
	Reached func(authserver.Stats) bool // the victim's refresh has got this far
	Want    string                      // what every survivor prints first: OK or Reauth
}

// Kills are the two moments that matter. Before the server processed the
// refresh, the old refresh token is still good, so the survivors refresh once
// and carry on. After it processed the refresh but before the answer arrived,
// the rotated refresh token died with the victim and the old one is retired,
// so presenting it trips reuse detection and the survivors must re-login.
var Kills = []Kill{
	{
		Name:    "refresh not processed",
		Fault:   authserver.Fault{Delay: 5 * time.Second},
		Reached: func(s authserver.Stats) bool { return s.TokenRequests > 0 },
		Want:    OK,
	},
	{
		Name:    "refresh processed, answer lost",
		Fault:   authserver.Fault{SlowBody: 5 * time.Second},
		Reached: func(s authserver.Stats) bool { return s.RefreshGrants > 0 },
		Want:    Reauth,
	},
}

// Await waits, for up to 10 seconds, until the victim's refresh has reached
// the moment k kills it at.
func (k Kill) Await(srv *authserver.Server) error {
	deadline := time.Now().Add(10 * time.Second)
	for !k.Reached(srv.Stats()) {
		if time.Now().After(deadline) {
			return errors.New("the victim never reached the token endpoint")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// CheckSurvivors checks that every survivor printed k.Want and, when that is
// OK, that they all hold the same valid token.
func (k Kill) CheckSurvivors(srv *authserver.Server, lines []string) error {
	for i, l := range lines {
		if !strings.HasPrefix(l, k.Want) {
			return fmt.Errorf("survivor %d said %q, want %q", i, Redact(l), k.Want)
		}
	}
	if k.Want == OK {
		return SameValidToken(srv, lines)
	}
	return nil
}
