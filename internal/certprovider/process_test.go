package certprovider_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/certprovider"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// Environment of a child process of TestProcessesShareFileStore.
const (
	envChild  = "TOKENKEEP_CERT_CHILD"  // set in children
	envIssuer = "TOKENKEEP_CERT_ISSUER" // the provider's issuer
	envDir    = "TOKENKEEP_CERT_DIR"    // the shared file store's directory
	envKey    = "TOKENKEEP_CERT_KEY"    // its key, for storage.KeyFromEnv
)

// TestMain lets the test binary act as a child process.
func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child waits for its parent's go (stdin closed), asks a Source over the
// shared file store for a token once, and prints "ok <access token>",
// "reauth" or "error <error>".
func child() int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok, err := childToken(ctx)
	switch {
	case err == nil:
		fmt.Println(proctest.OK, tok.AccessToken)
	case errors.Is(err, tokensource.ErrReauthRequired):
		fmt.Println(proctest.Reauth)
	default:
		fmt.Println(proctest.Failed, err)
		return 1
	}
	return 0
}

func childToken(ctx context.Context) (*oauth2.Token, error) {
	store, err := fileStore(os.Getenv(envDir))
	if err != nil {
		return nil, err
	}
	cfg := childConfig(os.Getenv(envIssuer))
	r, err := tokensource.NewConfigRefresher(cfg, "", nil)
	if err != nil {
		return nil, err
	}
	src, err := tokensource.New(r, store, "alice", tokensource.WithLockTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var buf [1]byte
	os.Stdin.Read(buf[:]) // returns at EOF: the parent lets every child go at once
	return src.TokenContext(ctx)
}

// childConfig is the confidential client every process uses.
func childConfig(issuer string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     certprovider.BasicClientID,
		ClientSecret: certprovider.BasicClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: issuer + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
}

func fileStore(dir string) (*storage.File, error) {
	key, err := storage.KeyFromEnv(envKey)
	if err != nil {
		return nil, err
	}
	return storage.NewFile(dir, key)
}

// newFileStore returns an encrypted file store in a new directory.
func newFileStore(t *testing.T) *storage.File {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	k, err := storage.RawKey(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.NewFile(t.TempDir(), k)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// expireStored makes the stored access token look expired, keeping its
// refresh token, as if its lifetime had passed: every process that reads it
// must refresh.
func expireStored(ctx context.Context, st storage.Store) error {
	r, err := st.Load(ctx, "alice")
	if err != nil {
		return err
	}
	if r.Token == nil {
		return errors.New("the stored session ended")
	}
	r.Token.Expiry = time.Now().Add(-time.Minute)
	r.Generation++
	return st.Save(ctx, "alice", r)
}

func isInvalidGrant(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_grant"
}

// TestProcessesShareFileStore starts 8 processes at once on an expired
// session in one file store, 5 times. Each time the provider must see
// exactly one refresh and no reuse of a spent refresh token, and every
// process must get the same token, which the provider honours.
func TestProcessesShareFileStore(t *testing.T) {
	const procs, rounds = 8, 5
	p := certprovider.Start(t)
	ctx := testContext(t)
	cfg := p.Config(certprovider.BasicClientID)
	login, err := p.Login(ctx, cfg)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, p.Output())
	}
	grant, err := p.GrantOf(ctx, login.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	t.Setenv(envKey, hex.EncodeToString(key))
	store, err := fileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.SaveToken(ctx, store, "alice", login); err != nil {
		t.Fatal(err)
	}
	children := proctest.Child{
		Path: os.Args[0],
		Args: []string{"-test.run=^$"},
		Env:  []string{envChild + "=1", envIssuer + "=" + p.Issuer, envDir + "=" + dir},
	}
	for round := range rounds {
		if err := expireStored(ctx, store); err != nil {
			t.Fatal(err)
		}
		before, err := p.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		g, err := children.Start(procs)
		if err != nil {
			t.Fatal(err)
		}
		g.Release()
		lines := g.Wait()
		after, err := p.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := after.RefreshGrants - before.RefreshGrants; got != 1 {
			t.Errorf("round %d: %d processes made %d refreshes, want 1", round, procs, got)
		}
		if after.ReuseDetections != 0 {
			t.Fatalf("round %d: %d reuse detections", round, after.ReuseDetections)
		}
		if err := sameLatestToken(ctx, p, grant.ID, lines); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	st, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rounds of %d processes: %d refresh grants, %d reuse detections, %d token requests",
		rounds, procs, st.RefreshGrants, st.ReuseDetections, st.TokenRequests)
}

// sameLatestToken checks that every child printed the same access token
// and that it is the latest the provider issued from grantID: the children
// shared one refresh, and nobody refreshed again behind their back. Its
// errors name outcomes, never tokens.
func sameLatestToken(ctx context.Context, p *certprovider.Provider, grantID string, lines []string) error {
	for i, l := range lines {
		if l != lines[0] {
			return fmt.Errorf("child %d said %q, child 0 said %q", i, proctest.Redact(l), proctest.Redact(lines[0]))
		}
	}
	at, ok := strings.CutPrefix(lines[0], proctest.OK+" ")
	if !ok {
		return fmt.Errorf("children said %q", proctest.Redact(lines[0]))
	}
	info, err := p.AccessTokenInfo(ctx, at)
	if err != nil {
		return fmt.Errorf("the children's access token: %w", err)
	}
	if info.GrantID != grantID || !info.Latest {
		return fmt.Errorf("the children's access token is from the session's grant: %v; the latest issued: %v", info.GrantID == grantID, info.Latest)
	}
	return nil
}
