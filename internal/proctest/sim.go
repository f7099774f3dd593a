package proctest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
)

// EnvSim makes a child a simulation process: it keeps a Source open on the
// shared file store and runs the commands it reads from standard input, one
// a line, each on its own goroutine, answering each on standard output.
//
// A command is "<id> <op> [argument]"; its answer "<id> <outcome>
// [detail]". The operations:
//
//	token             ask for a token: ok <access token>, reauth, backoff, closed or error <message>
//	invalidate        report the last token served as refused by a server: done
//	put <token JSON>  log in: put, notsaved <message> or error <message>
//	revoke            log out: revoked, revokepending <message> (not saved yet) or error <message>
//	reopen            Close the Source and open a new one: closed, or lost <message>
//	failsaves on|off  make the store's saves fail, or not: done
//	slow <ms>         make every store call take this long: done
const EnvSim = "TOKENKEEP_PROC_SIM"

// simStore is the shared file store with faults on demand.
type simStore struct {
	*storage.File
	failSaves atomic.Bool
	slow      atomic.Int64 // nanoseconds added to every load and save
}

var errSimDisk = errors.New("proctest: simulated write failure")

func (s *simStore) pause(ctx context.Context) error {
	d := time.Duration(s.slow.Load())
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *simStore) Load(ctx context.Context, key string) (*storage.Record, error) {
	if err := s.pause(ctx); err != nil {
		return nil, err
	}
	return s.File.Load(ctx, key)
}

func (s *simStore) Save(ctx context.Context, key string, r *storage.Record) error {
	if err := s.pause(ctx); err != nil {
		return err
	}
	if s.failSaves.Load() {
		return errSimDisk
	}
	return s.File.Save(ctx, key, r)
}

// SimUserAgent is the User-Agent of simulation child pid's requests, by
// which the provider tells whose request retired a refresh token.
func SimUserAgent(pid int) string { return "tokenkeep-sim/" + strconv.Itoa(pid) }

// userAgent sets the User-Agent of every request.
type userAgent struct {
	value string
	base  http.RoundTripper
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.value)
	return u.base.RoundTrip(r)
}

// sim is a simulation child.
type sim struct {
	store    *simStore
	tokenURL string
	mu       sync.Mutex          // guards src, last and out
	src      *tokensource.Source // the open Source
	last     *oauth2.Token       // the last token served
	out      io.Writer
}

// SimOptions are the Source options of simulation children: short
// timeouts, so that faults resolve within a schedule's step.
func SimOptions() []tokensource.Option {
	return []tokensource.Option{
		tokensource.WithLockTimeout(3 * time.Second),
		tokensource.WithRefreshTimeout(3 * time.Second),
		tokensource.WithAttemptTimeout(time.Second),
		tokensource.WithCloseGrace(3 * time.Second),
		tokensource.WithRevokeTimeout(3 * time.Second),
		tokensource.WithEarlyRefresh(250 * time.Millisecond),
	}
}

func (s *sim) open() error {
	hc := &http.Client{Transport: userAgent{SimUserAgent(os.Getpid()), http.DefaultTransport}}
	r, err := tokensource.NewConfigRefresher(Config(s.tokenURL), os.Getenv(EnvRevokeURL), hc)
	if err != nil {
		return err
	}
	src, err := tokensource.New(r, s.store, Entry, SimOptions()...)
	if err != nil {
		return err
	}
	s.src = src
	return nil
}

func (s *sim) say(id, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintln(s.out, id, outcome)
}

func (s *sim) source() *tokensource.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.src
}

func runSim(in io.Reader, out io.Writer) int {
	f, err := Store(ModeFile, os.Getenv(EnvDir))
	if err != nil {
		fmt.Fprintln(out, "0 error", err)
		return 1
	}
	s := &sim{store: &simStore{File: f.(*storage.File)}, tokenURL: os.Getenv(EnvTokenURL), out: out}
	if err := s.open(); err != nil {
		fmt.Fprintln(out, "0 error", err)
		return 1
	}
	var wg sync.WaitGroup
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		id, rest, _ := strings.Cut(sc.Text(), " ")
		op, arg, _ := strings.Cut(rest, " ")
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.say(id, s.do(op, arg))
		}()
	}
	wg.Wait()
	s.source().Close()
	return 0
}

// do runs one command and returns its answer.
func (s *sim) do(op, arg string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch op {
	case "token":
		t, err := s.source().TokenContext(ctx)
		var boe *tokensource.BackOffError
		switch {
		case err == nil:
			s.mu.Lock()
			s.last = t
			s.mu.Unlock()
			return OK + " " + t.AccessToken
		case errors.Is(err, tokensource.ErrReauthRequired):
			return Reauth
		case errors.As(err, &boe):
			return "backoff"
		case errors.Is(err, tokensource.ErrClosed):
			return Closed
		}
		return Failed + " " + oneLine(err)
	case "invalidate":
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		s.source().Invalidate(last)
		return "done"
	case "put":
		var t oauth2.Token
		if err := json.Unmarshal([]byte(arg), &t); err != nil {
			return Failed + " " + oneLine(err)
		}
		err := s.source().Put(ctx, &t)
		switch {
		case err == nil:
			return Put
		case errors.Is(err, tokensource.ErrNotSaved):
			return "notsaved " + oneLine(err)
		}
		return Failed + " " + oneLine(err)
	case "revoke":
		err := s.source().Revoke(ctx)
		switch {
		case err == nil:
			return Revoked
		case errors.Is(err, tokensource.ErrNotSaved):
			return "revokepending " + oneLine(err) // ended here; the store follows when a save succeeds
		}
		return Failed + " " + oneLine(err)
	case "reopen":
		s.mu.Lock()
		defer s.mu.Unlock()
		err := s.src.Close()
		if oerr := s.open(); oerr != nil {
			return Failed + " " + oneLine(oerr)
		}
		if err != nil {
			return "lost " + oneLine(err)
		}
		return Closed
	case "failsaves":
		s.store.failSaves.Store(arg == "on")
		return "done"
	case "slow":
		var ms int64
		fmt.Sscan(arg, &ms)
		s.store.slow.Store(int64(time.Duration(ms) * time.Millisecond))
		return "done"
	}
	return Failed + " unknown operation " + op
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
