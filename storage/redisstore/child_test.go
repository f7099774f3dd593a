package redisstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/internal/proctest"
	"github.com/tokenkeep/tokenkeep/internal/syncbuf"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// Environment of a child process.
const (
	envAddr       = "REDISSTORE_TEST_ADDR"       // the redis-server's address
	envKey        = "REDISSTORE_TEST_KEY"        // the store's key, for storage.KeyFromEnv
	envPrefix     = "REDISSTORE_TEST_PREFIX"     // Options.Prefix
	envLeaseTTL   = "REDISSTORE_TEST_LEASE_TTL"  // Options.LeaseTTL, as time.ParseDuration reads it
	envTokenURL   = "REDISSTORE_TEST_TOKEN_URL"  // the authorization server's token endpoint
	envGoroutines = "REDISSTORE_TEST_GOROUTINES" // Sources per child, each asking once per round
	envDir        = "REDISSTORE_TEST_DIR"        // if set, the children share a File store in this directory instead
	envNoWait     = "REDISSTORE_TEST_NO_WAIT"    // if set, the store is used without its GenerationWaiter
)

// entry is the name every child uses for the shared session.
const entry = proctest.Entry

// runChild is a child process: for every line on stdin it runs one round —
// every goroutine opens its own Source over the process's Store and asks
// for a token once — and prints one line: "ok <access token>" when all got
// the same token, "reauth" when all were told to log in again, "error ..."
// otherwise. It exits when stdin closes.
func init() { childMain = runChild }

func runChild(in io.Reader, out io.Writer) int {
	st, r, n, err := childSetup()
	if err != nil {
		fmt.Fprintln(out, proctest.Failed, err)
		return 1
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fmt.Fprintln(out, childRound(st, r, n))
	}
	return 0
}

func childSetup() (storage.Store, tokensource.Refresher, int, error) {
	key, err := storage.KeyFromEnv(envKey)
	if err != nil {
		return nil, nil, 0, err
	}
	ttl, err := time.ParseDuration(os.Getenv(envLeaseTTL))
	if err != nil {
		return nil, nil, 0, err
	}
	n, err := strconv.Atoi(os.Getenv(envGoroutines))
	if err != nil {
		return nil, nil, 0, err
	}
	var st storage.Store
	if dir := os.Getenv(envDir); dir != "" {
		st, err = storage.NewFile(dir, key)
	} else {
		c := redis.NewClient(&redis.Options{Addr: os.Getenv(envAddr)})
		st, err = New(c, key, &Options{Prefix: os.Getenv(envPrefix), LeaseTTL: ttl})
	}
	if err != nil {
		return nil, nil, 0, err
	}
	if os.Getenv(envNoWait) != "" {
		st = withoutWaiter(st)
	}
	r, err := tokensource.NewConfigRefresher(proctest.Config(os.Getenv(envTokenURL)), "", nil)
	if err != nil {
		return nil, nil, 0, err
	}
	return st, r, n, nil
}

// withoutWaiter hides st's GenerationWaiter, as stores were before they had
// one: a Source waiting for the lock then takes it in turn.
func withoutWaiter(st storage.Store) storage.Store {
	if l, ok := st.(storage.LeaseLocker); ok {
		return struct {
			storage.Store
			storage.LeaseLocker
		}{st, l}
	}
	return struct {
		storage.Store
		storage.Locker
	}{st, st.(storage.Locker)}
}

func childRound(st storage.Store, r tokensource.Refresher, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ats := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			src, err := tokensource.New(r, st, entry, tokensource.WithLockTimeout(20*time.Second))
			if err != nil {
				errs[i] = err
				return
			}
			defer src.Close()
			tok, err := src.TokenContext(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			ats[i] = tok.AccessToken
		})
	}
	wg.Wait()
	var ok, reauth int
	var other error
	for i, err := range errs {
		switch {
		case err == nil && ats[i] == ats[0]:
			ok++
		case err == nil:
			other = errors.New("goroutines got different tokens")
		case errors.Is(err, tokensource.ErrReauthRequired):
			reauth++
		default:
			other = err
		}
	}
	switch {
	case ok == n:
		return proctest.OK + " " + ats[0]
	case reauth == n:
		return proctest.Reauth
	}
	return fmt.Sprintf("%s %d ok, %d reauth, last other error: %v", proctest.Failed, ok, reauth, other)
}

// fleet is a set of child processes sharing one session.
type fleet struct {
	t     testing.TB
	procs []*child
}

type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string     // its output lines
	errs  *syncbuf.Buffer // its standard error
	done  chan struct{}   // closed when it has exited
}

// session is what children need to share one entry.
type session struct {
	addr     string
	keyHex   string
	prefix   string
	tokenURL string
	leaseTTL time.Duration
	dir      string // if set, a File store's directory, used instead of Redis
	noWait   bool   // the children use their store without its GenerationWaiter
}

// startFleet starts n children of this test binary with goroutines Sources
// each. They are killed when t ends.
func startFleet(t testing.TB, s session, n, goroutines int) *fleet {
	t.Helper()
	f := &fleet{t: t}
	t.Cleanup(f.stop)
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			envChild+"=1",
			envAddr+"="+s.addr,
			envKey+"="+s.keyHex,
			envPrefix+"="+s.prefix,
			envTokenURL+"="+s.tokenURL,
			envLeaseTTL+"="+s.leaseTTL.String(),
			envGoroutines+"="+strconv.Itoa(goroutines),
			envDir+"="+s.dir,
		)
		if s.noWait {
			cmd.Env = append(cmd.Env, envNoWait+"=1")
		}
		cmd.SysProcAttr = dieWithParent()
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		outp, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd, in: in, lines: make(chan string, 16), errs: new(syncbuf.Buffer), done: make(chan struct{})}
		cmd.Stderr = c.errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(outp)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
			cmd.Wait()
			close(c.done)
			close(c.lines)
		}()
		f.procs = append(f.procs, c)
	}
	return f
}

// start lets children idx (all when none is given) begin a round.
func (f *fleet) start(idx ...int) {
	if len(idx) == 0 {
		for i := range f.procs {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		io.WriteString(f.procs[i].in, "go\n")
	}
}

// results waits for one line from each of children idx (all when none is
// given).
func (f *fleet) results(idx ...int) []string {
	f.t.Helper()
	if len(idx) == 0 {
		for i := range f.procs {
			idx = append(idx, i)
		}
	}
	lines := make([]string, len(idx))
	timeout := time.After(60 * time.Second)
	for k, i := range idx {
		select {
		case l, ok := <-f.procs[i].lines:
			if !ok {
				f.t.Fatalf("child %d exited: %s", i, f.procs[i].errs.String())
			}
			lines[k] = l
		case <-timeout:
			f.t.Fatalf("child %d did not answer in time: %s", i, f.procs[i].errs.String())
		}
	}
	return lines
}

// round runs one round in every child and returns their lines.
func (f *fleet) round() []string {
	f.t.Helper()
	f.start()
	return f.results()
}

// kill SIGKILLs child i and waits for it to exit.
func (f *fleet) kill(i int) {
	f.procs[i].cmd.Process.Kill()
	<-f.procs[i].done
}

// stop ends every child.
func (f *fleet) stop() {
	for _, c := range f.procs {
		c.in.Close()
	}
	for _, c := range f.procs {
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
}

// procServer behaves like Okta or Auth0 with rotation on.
func procServer(t testing.TB) *authserver.Server {
	srv := authserver.New(authserver.Config{Rotate: true, ReuseDetection: true})
	t.Cleanup(srv.Close)
	return srv
}

// newSession primes a session from srv in the shared redis-server and
// returns what children need to share it, and a Store of the parent's on it.
func newSession(t testing.TB, srv *authserver.Server, leaseTTL time.Duration) (session, *Store) {
	t.Helper()
	c := needRedis(t)
	keyHex, key := newKeyHex(t)
	s := session{addr: shared.addr, keyHex: keyHex, prefix: testPrefix(t), tokenURL: srv.Endpoint().TokenURL, leaseTTL: leaseTTL}
	st, err := New(c, key, &Options{Prefix: s.prefix, LeaseTTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.SaveToken(context.Background(), st, entry, srv.Mint("openid", "offline_access")); err != nil {
		t.Fatal(err)
	}
	return s, st
}

// expire makes the stored session's access token look expired, keeping its
// refresh token, as if its lifetime had passed.
func expire(t testing.TB, st storage.Store) {
	t.Helper()
	ctx := context.Background()
	r, err := st.Load(ctx, entry)
	if err != nil {
		t.Fatal(err)
	}
	r.Token.Expiry = time.Now().Add(-time.Minute)
	r.Generation++
	if err := st.Save(ctx, entry, r); err != nil {
		t.Fatal(err)
	}
}

// shareOneRefresh runs expiries rounds of procs children with goroutines
// Sources each on an expired session, checks that each round made exactly
// one refresh, no reuse detection and no failed call, and returns the
// refresh grants per expiry.
func shareOneRefresh(t testing.TB, procs, goroutines, expiries int, leaseTTL time.Duration) []int64 {
	srv := procServer(t)
	sess, st := newSession(t, srv, leaseTTL)
	f := startFleet(t, sess, procs, goroutines)
	var grants []int64
	for round := range expiries {
		expire(t, st)
		before := srv.Stats()
		lines := f.round()
		after := srv.Stats()
		got := after.RefreshGrants - before.RefreshGrants
		grants = append(grants, got)
		if got != 1 {
			t.Fatalf("expiry %d: %d processes × %d goroutines made %d refreshes, want 1", round, procs, goroutines, got)
		}
		if after.ReuseDetections != 0 {
			t.Fatalf("expiry %d: %d reuse detections", round, after.ReuseDetections)
		}
		if err := proctest.SameValidToken(srv, lines); err != nil {
			t.Fatalf("expiry %d: %v", round, err)
		}
	}
	return grants
}
