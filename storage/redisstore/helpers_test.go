package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/storage"
)

// newKeyHex returns a random 32-byte key in hex, as KeyFromEnv reads it,
// and the same key as a storage.Key.
func newKeyHex(t testing.TB) (string, storage.Key) {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k, err := storage.RawKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b), k
}

// testPrefix is a key prefix of t's own, so that tests do not see each
// other's entries.
func testPrefix(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "test:" + t.Name() + ":" + hex.EncodeToString(b) + ":"
}

// newStore returns a Store over c with a fresh key and prefix.
func newStore(t testing.TB, c redis.UniversalClient, opts *Options) *Store {
	t.Helper()
	_, key := newKeyHex(t)
	o := Options{Prefix: testPrefix(t)}
	if opts != nil {
		o = *opts
		if o.Prefix == "" {
			o.Prefix = testPrefix(t)
		}
	}
	s, err := New(c, key, &o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// twin returns another Store with s's key and options over a client of its
// own, as another process would have.
func twin(t testing.TB, s *Store) *Store {
	t.Helper()
	o := s.opt
	st, err := New(newClient(t, shared.addr), s.key, &o)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// renewals counts the renewals of s that succeeded. Call it before s's
// first Lock.
func renewals(s *Store) *atomic.Int64 {
	n := new(atomic.Int64)
	s.onRenew = func(err error) {
		if err == nil {
			n.Add(1)
		}
	}
	return n
}

// bound is how long a test waits for something that happens in real time
// against a real redis-server: far more than it takes on a busy machine, so
// that only a bug reaches it.
const bound = 30 * time.Second

// within waits for c to be closed or to deliver, up to bound.
func within[T any](t testing.TB, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(bound):
		t.Fatalf("%s did not happen within %v", what, bound)
		panic("unreachable")
	}
}

// logSink is a slog.Handler that keeps every record's message and the
// text of its attributes.
type logSink struct {
	mu    sync.Mutex // guards lines
	lines []string
}

func (h *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (h *logSink) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logSink) WithGroup(string) slog.Handler            { return h }

func (h *logSink) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, line)
	h.mu.Unlock()
	return nil
}

// count returns how many records had message msg.
func (h *logSink) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.lines {
		if strings.HasPrefix(l, msg+" ") || strings.Contains(l, " "+msg+" ") || strings.HasSuffix(l, " "+msg) {
			n++
		}
	}
	return n
}

// text returns every line logged.
func (h *logSink) text() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.lines, "\n")
}

// aclUser creates a Redis user with rules (as ACL SETUSER takes them, after
// reset) and returns a client that logs in as that user. The user is
// deleted when t ends.
func aclUser(t testing.TB, admin *redis.Client, rules ...string) *redis.Client {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name, pw := "tokens-"+hex.EncodeToString(b), "pw-"+hex.EncodeToString(b)
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + pw}
	for _, r := range rules {
		for _, f := range strings.Fields(r) {
			args = append(args, f)
		}
	}
	ctx := context.Background()
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { admin.Do(ctx, "ACL", "DELUSER", name) })
	c := redis.NewClient(&redis.Options{Addr: shared.addr, Username: name, Password: pw})
	t.Cleanup(func() { c.Close() })
	return c
}

func itoa(i int) string { return strconv.Itoa(i) }
