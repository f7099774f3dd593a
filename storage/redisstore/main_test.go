package redisstore

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// envChild is set in the environment of the child processes that the
// multi-process tests start from this test binary.
const envChild = "REDISSTORE_TEST_CHILD"

// childMain runs a child process of the multi-process tests; nil when those
// tests are not built (see child_test.go).
var childMain func(in io.Reader, out io.Writer) int

// shared is the redis-server TestMain starts for the package's tests, or nil
// with noRedis saying why.
var (
	shared  *redisServer
	noRedis string
)

// TestMain starts one redis-server for the tests, or runs the test binary as
// a child process of the multi-process tests.
func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // outages are the point of some tests; go-redis would log each failed dial
	if os.Getenv(envChild) != "" && childMain != nil {
		os.Exit(childMain(os.Stdin, os.Stdout))
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		noRedis = "redis-server is not in PATH; install the Debian package redis-server"
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "redisstore-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	port, err := freePort()
	if err == nil {
		shared, err = startRedis(port, dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "redisstore test: start redis-server:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	shared.stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRedis skips t when there is no redis-server, and returns a new client
// of the shared one, closed when t ends.
func needRedis(t testing.TB) *redis.Client {
	t.Helper()
	if shared == nil {
		t.Skip(noRedis)
	}
	return newClient(t, shared.addr)
}

// newClient returns a client of addr, closed when t ends.
func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// freePort returns a loopback TCP port that nothing listens on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redisServer is a redis-server process on a loopback port.
type redisServer struct {
	addr   string
	port   int
	dir    string
	cmd    *exec.Cmd
	out    *strings.Builder // its output; read only after exited
	exited chan struct{}
}

// startRedis starts redis-server on port with its files in dir, with
// append-only persistence and no snapshots, and waits until it answers PING.
func startRedis(port int, dir string, extra ...string) (*redisServer, error) {
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--save", "",
	}, extra...)
	cmd := exec.Command("redis-server", args...)
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &redisServer{
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir,
		cmd: cmd, out: out, exited: make(chan struct{}),
	}
	go func() { cmd.Wait(); close(r.exited) }()
	c := redis.NewClient(&redis.Options{Addr: r.addr, Protocol: 2, MaxRetries: -1})
	defer c.Close()
	if err := waitPing(c, r.exited); err != nil {
		select {
		case <-r.exited:
			return nil, fmt.Errorf("redis-server exited: %s", out.String())
		default:
			r.kill()
			return nil, fmt.Errorf("redis-server %v", err)
		}
	}
	return r, nil
}

// waitPing waits until c answers PING, trying every 20 ms for up to bound,
// which only a server that never comes up reaches. It gives up at once when
// exited is closed (a nil exited never is). Waiting for another process to
// listen, or for go-redis to redial, can only be polling.
func waitPing(c redis.UniversalClient, exited <-chan struct{}) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before answering PING: %w", err)
		case <-deadline.C:
			return fmt.Errorf("did not answer PING within %v: %w", bound, err)
		case <-tick.C:
		}
	}
}

// stop shuts the server down cleanly (SIGTERM: the append-only file is
// flushed) and waits for it.
func (r *redisServer) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.kill()
	}
}

// kill stops the server at once, as a crash would.
func (r *redisServer) kill() {
	r.cmd.Process.Kill()
	<-r.exited
}

// quiet is a go-redis logger that drops everything.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
