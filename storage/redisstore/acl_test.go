package redisstore

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeep/tokenkeep/storage"
)

// documentedACL returns the rules of the ACL SETUSER line in the package
// documentation, after its user name and password, so that the test runs
// with exactly what users are told to grant.
func documentedACL(t testing.TB) string {
	t.Helper()
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(doc)) {
		_, rest, ok := strings.Cut(line, "ACL SETUSER ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		// <user> reset on ><password> <rules>…
		if len(f) < 4 || f[1] != "reset" || f[2] != "on" || !strings.HasPrefix(f[3], ">") {
			t.Fatalf("the documented ACL line is not \"ACL SETUSER <user> reset on ><password> <rules>\": %q", line)
		}
		return strings.Join(f[4:], " ")
	}
	t.Fatal("no ACL SETUSER line in doc.go")
	return ""
}

// TestDocumentedACL runs the whole protocol — save, lock, renewals across
// several RenewEvery periods, fenced conditional saves, load, delete,
// unlock, list, and a wait for a new generation — as a Redis user with
// exactly the ACL that the package documentation gives, under the
// documented default prefix. A renewal refused for want of a permission
// fails the test at once (issue 13: the documented ACL lacked PEXPIRE, so
// every renewal failed unseen and the lease expired under a slow refresh).
func TestDocumentedACL(t *testing.T) {
	admin := needRedis(t)
	rules := documentedACL(t)
	c := aclUser(t, admin, rules)
	ctx := context.Background()
	_, key := newKeyHex(t)
	sink := new(logSink)
	opts := &Options{
		Prefix:   DefaultPrefix + strings.TrimPrefix(testPrefix(t), "test:"),
		LeaseTTL: 900 * time.Millisecond, // renewed every 300 ms; outlives a 600 ms stall
		Logger:   slog.New(sink),
	}
	s, err := New(c, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	renewed := make(chan error, 100)
	s.onRenew = func(err error) { renewed <- err }

	if err := storage.SaveToken(ctx, s, "alice", testToken("v1")); err != nil {
		t.Fatalf("save as the documented user: %v", err)
	}
	held, unlock, err := s.LockLease(ctx, "alice")
	if err != nil {
		t.Fatalf("lock as the documented user: %v", err)
	}
	defer unlock()
	for i := range 4 {
		if err := within(t, renewed, "a renewal"); err != nil {
			t.Fatalf("renewal %d as the documented user (ACL %q): %v", i, rules, err)
		}
	}
	if held.Err() != nil {
		t.Fatalf("held ended: %v", context.Cause(held))
	}
	if err := s.Save(ctx, "alice", record(2, "v2")); err != nil {
		t.Fatalf("fenced save as the documented user: %v", err)
	}
	if err := s.Save(ctx, "alice", record(2, "rival")); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("conflicting fenced save as the documented user: got %v, want ErrConflict", err)
	}
	storedIs(t, s, "alice", 2, "v2")
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatalf("fenced delete as the documented user: %v", err)
	}
	if _, err := s.Load(ctx, "alice"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("load after delete: got %v, want ErrNotFound", err)
	}
	if err := s.Save(ctx, "alice", record(1, "v1")); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatalf("unlock as the documented user: %v", err)
	}
	if names, err := list(t, s); err != nil || !slices.Equal(names, []string{"alice"}) {
		t.Fatalf("list as the documented user: %q, %v", names, err)
	}

	w, err := New(aclUser(t, admin, rules), key, opts)
	if err != nil {
		t.Fatal(err)
	}
	ready := subscribed(w)
	res := goWait(ctx, w, "alice", 1)
	within(t, ready, "the documented user's subscription")
	if err := s.Save(ctx, "alice", record(2, "v2")); err != nil {
		t.Fatal(err)
	}
	if got := within(t, res, "a wait as the documented user"); got.err != nil || got.gen != 2 {
		t.Fatalf("wait as the documented user: %d, %v", got.gen, got.err)
	}

	if n := sink.count("lease renewal failed"); n != 0 {
		t.Fatalf("log: %s", sink.text())
	}
	other, err := New(c, key, &Options{Prefix: "elsewhere:"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Save(ctx, "alice", record(1, "x")); err == nil {
		t.Fatal("the user wrote outside its prefix")
	}
}
