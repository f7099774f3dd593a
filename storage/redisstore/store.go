package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
)

// Defaults for the zero fields of [Options].
const (
	DefaultPrefix    = "tokenkeep:"          // Options.Prefix
	DefaultLeaseTTL  = 10 * time.Second      // Options.LeaseTTL
	DefaultLockPoll  = 20 * time.Millisecond // Options.LockPoll
	DefaultOpTimeout = 3 * time.Second       // Options.OpTimeout
)

// ErrLeaseLost is matched by the error of a Save or Delete made while this
// process held the entry's lease, when Redis no longer holds that lease for
// it: the lease expired (the process stalled for longer than its TTL, or
// renewals could not reach Redis) or was lost in a failover, and another
// process may have taken it and refreshed the token since. The token in
// Redis was left as it was: the caller's token is older than, or a rival
// of, the one stored and must not overwrite it.
//
// A later Save of the same token without the lease is refused the same
// way, so that a retry cannot undo the fencing.
var ErrLeaseLost = errors.New("redisstore: lease lost; the stored token was not replaced")

// Options configure a [Store]. A nil *Options means all defaults.
type Options struct {
	// Prefix starts every key name the store uses. If empty, DefaultPrefix
	// is used. Give each application (or each tenant sharing a Redis) its
	// own prefix. A prefix with braces would become the Cluster hash tag and
	// put every entry in one slot.
	Prefix string

	// LeaseTTL is how long a lock's lease lives in Redis without renewal:
	// how long the others wait after a holder dies. If zero,
	// DefaultLeaseTTL is used.
	LeaseTTL time.Duration

	// RenewEvery is how often a held lease is extended back to LeaseTTL.
	// It must be shorter than LeaseTTL. If zero, LeaseTTL/3 is used.
	RenewEvery time.Duration

	// LockPoll is how often Lock tries again to take a lease held by
	// another process. If zero, DefaultLockPoll is used.
	LockPoll time.Duration

	// OpTimeout bounds every Redis call, whatever the caller's context.
	// A call that runs out of time fails with an error matching
	// storage.ErrUnavailable. If zero, DefaultOpTimeout is used.
	OpTimeout time.Duration
}

// Store is a storage.Store and storage.Locker that keeps each entry's
// encrypted token in Redis and serialises refreshes with a fenced lease.
// See the package documentation for the key layout and the guarantees.
//
// A Store is safe for concurrent use. Several Stores, in one process or in
// many, may share one Redis.
type Store struct {
	c   redis.UniversalClient
	key storage.Key
	opt Options // defaults applied

	mu     sync.Mutex               // guards sems, held and lost
	sems   map[string]chan struct{} // one-slot semaphore per entry, within this process
	held   map[string]*lease        // the lease this process holds, per entry
	lost   map[string][32]byte      // per entry, the fingerprint of a token refused by fencing
	pause  atomic.Bool              // tests: skip renewals, as a stalled process would
	renews atomic.Int64             // tests: successful renewals
}

// New returns a Store that keeps tokens in the Redis that client reaches,
// sealed with key (typically from storage.KeyFromEnv or storage.RawKey;
// every process sharing the entries needs the same key). client may be a
// *redis.Client, a Sentinel-backed failover client or a *redis.ClusterClient;
// TLS, ACL user and password are set in its options. opts may be nil.
//
// New does no I/O. The Store does not close client.
func New(client redis.UniversalClient, key storage.Key, opts *Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	if key == nil {
		return nil, errors.New("redisstore: nil key")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.RenewEvery == 0 {
		o.RenewEvery = o.LeaseTTL / 3
	}
	if o.LockPoll == 0 {
		o.LockPoll = DefaultLockPoll
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	switch {
	case o.LeaseTTL < time.Millisecond:
		return nil, fmt.Errorf("redisstore: LeaseTTL %v is shorter than Redis's 1 ms resolution", o.LeaseTTL)
	case o.RenewEvery <= 0 || o.RenewEvery >= o.LeaseTTL:
		return nil, fmt.Errorf("redisstore: RenewEvery %v must be positive and shorter than LeaseTTL %v", o.RenewEvery, o.LeaseTTL)
	case o.LockPoll < 0:
		return nil, fmt.Errorf("redisstore: negative LockPoll %v", o.LockPoll)
	case o.OpTimeout < 0:
		return nil, fmt.Errorf("redisstore: negative OpTimeout %v", o.OpTimeout)
	}
	return &Store{c: client, key: key, opt: o}, nil
}

// keys returns the names of the token and lease keys of entry name:
// "<prefix>{<hash>}:token" and "<prefix>{<hash>}:lease".
func (s *Store) keys(name string) (token, lease string) {
	sum := sha256.Sum256([]byte(name))
	base := s.opt.Prefix + "{" + hex.EncodeToString(sum[:hashBytes]) + "}:"
	return base + "token", base + "lease"
}

// hashBytes is how much of the name's SHA-256 a key name carries.
const hashBytes = 16

// do runs one Redis call bounded by OpTimeout and ctx. go-redis honours a
// context's deadline only when the client was built with
// ContextTimeoutEnabled, and its handshake on a new connection not even
// then, so the call runs on its own goroutine and is abandoned when time is
// up; it ends by itself when the client's own timeouts fire. An abandoned
// write may still reach Redis: its outcome is unknown, which is what a lost
// reply means anyway.
func (s *Store) do(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.OpTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Load implements storage.Store. A value that fails authentication — altered,
// or copied from another entry's key — yields an error matching
// storage.ErrCorrupt.
func (s *Store) Load(ctx context.Context, name string) (*oauth2.Token, error) {
	tk, _ := s.keys(name)
	var b []byte
	err := s.do(ctx, func(ctx context.Context) (err error) {
		b, err = s.c.Get(ctx, tk).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: load %q: %w", name, storage.ErrNotFound)
	}
	if err != nil {
		return nil, classify(ctx, "load", name, err)
	}
	t, err := storage.Open(ctx, s.key, name, b)
	if err != nil {
		return nil, fmt.Errorf("redisstore: load %q: %w", name, err)
	}
	return t, nil
}

// fencedSet replaces the token only while the lease holds the caller's
// owner token. KEYS: lease, token. ARGV: owner, sealed value.
var fencedSet = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('SET', KEYS[2], ARGV[2])
	return 1
end
return 0`)

// fencedDel deletes the token only while the lease holds the caller's owner
// token. KEYS: lease, token. ARGV: owner.
var fencedDel = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[2])
	return 1
end
return 0`)

// Save implements storage.Store. The token is sealed before it leaves the
// process. While this process holds name's lock, the write is fenced: it
// happens only if Redis still holds this process's lease, and otherwise
// fails with an error matching [ErrLeaseLost]. Without the lock (a new
// login, say) it is a plain write.
//
// An error matching storage.ErrUnavailable means the write was not
// confirmed: it did not happen if Redis could not be reached, and may have
// if Redis was reached but answered too late.
func (s *Store) Save(ctx context.Context, name string, t *oauth2.Token) error {
	if t == nil {
		return fmt.Errorf("redisstore: save %q: refusing to save a nil token", name)
	}
	b, err := storage.Seal(ctx, s.key, name, t)
	if err != nil {
		return fmt.Errorf("redisstore: save %q: %w", name, err)
	}
	fp := fingerprint(t)
	tk, lk := s.keys(name)
	l := s.holding(name)
	if l == nil && s.refused(name, fp) {
		return fmt.Errorf("redisstore: save %q: %w", name, ErrLeaseLost)
	}
	if l == nil {
		err := s.do(ctx, func(ctx context.Context) error { return s.c.Set(ctx, tk, b, 0).Err() })
		if err != nil {
			return classify(ctx, "save", name, err)
		}
		s.forget(name)
		return nil
	}
	var n int
	err = s.do(ctx, func(ctx context.Context) (err error) {
		n, err = fencedSet.Run(ctx, s.c, []string{lk, tk}, l.owner, b).Int()
		return err
	})
	if err != nil {
		return classify(ctx, "save", name, err)
	}
	if n == 0 {
		s.refuse(name, fp)
		return fmt.Errorf("redisstore: save %q: %w", name, ErrLeaseLost)
	}
	s.forget(name)
	return nil
}

// Delete implements storage.Store. Like Save, it is fenced while this process
// holds name's lock. Nothing is deleted when Redis cannot be reached; as for
// Save, an answer that came too late leaves the outcome unknown.
func (s *Store) Delete(ctx context.Context, name string) error {
	tk, lk := s.keys(name)
	l := s.holding(name)
	if l == nil {
		if err := s.do(ctx, func(ctx context.Context) error { return s.c.Del(ctx, tk).Err() }); err != nil {
			return classify(ctx, "delete", name, err)
		}
		return nil
	}
	var n int
	err := s.do(ctx, func(ctx context.Context) (err error) {
		n, err = fencedDel.Run(ctx, s.c, []string{lk, tk}, l.owner).Int()
		return err
	})
	if err != nil {
		return classify(ctx, "delete", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redisstore: delete %q: %w", name, ErrLeaseLost)
	}
	return nil
}

// fingerprint identifies a token's secrets without keeping them.
func fingerprint(t *oauth2.Token) [32]byte {
	return sha256.Sum256([]byte(t.AccessToken + "\x00" + t.RefreshToken))
}

// refuse remembers that fencing refused the token with fingerprint fp.
func (s *Store) refuse(name string, fp [32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = make(map[string][32]byte)
	}
	s.lost[name] = fp
}

// refused reports whether fencing refused the token with fingerprint fp.
func (s *Store) refused(name string, fp [32]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.lost[name]
	return ok && got == fp
}

// forget drops name's refused fingerprint once another token was saved.
func (s *Store) forget(name string) {
	s.mu.Lock()
	delete(s.lost, name)
	s.mu.Unlock()
}

// classify wraps a failed Redis call. Unreachable, timed-out, loading or
// read-only servers are transient and match storage.ErrUnavailable; when the
// caller's own context ended, its error is wrapped instead; errors Redis
// answered otherwise (authentication, permissions) are returned as they are.
func classify(ctx context.Context, op, name string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("redisstore: %s %q: %w", op, name, ctx.Err())
	case transient(err):
		return fmt.Errorf("redisstore: %s %q: %w: %w", op, name, storage.ErrUnavailable, err)
	default:
		return fmt.Errorf("redisstore: %s %q: %w", op, name, err)
	}
}

// transient reports whether err says Redis could not serve the call now,
// rather than that it refused it.
func transient(err error) bool {
	if errors.Is(err, redis.ErrClosed) {
		return false // the client was closed: a bug, not an outage
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // network errors, timeouts, a full pool
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.HasErrorPrefix(err, "BUSY")
}
