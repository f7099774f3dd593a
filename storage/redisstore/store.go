package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/storage"
)

// Defaults for the zero fields of [Options].
const (
	DefaultPrefix    = "tokenkeep:"          // Options.Prefix
	DefaultLeaseTTL  = 10 * time.Second      // Options.LeaseTTL
	DefaultLockPoll  = 20 * time.Millisecond // Options.LockPoll
	DefaultOpTimeout = 3 * time.Second       // Options.OpTimeout
)

// MaxNameLen is the longest entry name, in bytes, that Save accepts: the
// name is kept, sealed, beside the record so that List can return it.
const MaxNameLen = 4096

// maxValue bounds the sealed record a load reads, as the storage format's
// own limit (1 MiB) does for files. Redis measures a value before sending
// it, so a larger one planted in Redis costs the reader no allocation.
const maxValue = 1 << 20

// maxSealedName bounds the sealed name List reads: a name of MaxNameLen
// bytes, in base64, inside a sealed record with the largest key header.
const maxSealedName = 8192

// ErrLeaseLost is matched by the error of a Save or Delete made while this
// process held the entry's lock, when Redis no longer holds that lease for
// it: the lease expired (the process stalled for longer than its TTL, or
// renewals could not reach Redis) or was lost in a failover, and another
// process may have taken it and refreshed the token since. Nothing was
// written. It is also the cause (see context.Cause) of the held context
// that [Store.LockLease] returns, once that context is done because the
// lease is known lost.
//
// Release the lock after this error: while it is held, every Save of the
// entry is fenced by the lost lease and fails the same way. A Save retried
// after that is an ordinary conditional write, refused with an error
// matching storage.ErrConflict if anyone wrote the entry since.
var ErrLeaseLost = errors.New("redisstore: lease lost")

// Options configure a [Store]. A nil *Options means all defaults.
type Options struct {
	// Prefix starts every key and channel name the store uses. If empty,
	// DefaultPrefix is used. Give each application (or each tenant sharing
	// a Redis) its own prefix. A prefix with braces would become the
	// Cluster hash tag and put every entry in one slot.
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

	// Logger receives what nobody else would see: lease renewals that
	// failed, and leases lost while held. If nil, nothing is logged.
	Logger *slog.Logger
}

// Store is a storage.Store, storage.LeaseLocker and storage.Lister that
// keeps each entry's sealed record in Redis, writes it conditionally, and
// serialises refreshes with a fenced, renewed lease. It also implements
// [storage.GenerationWaiter]. See the package documentation for the key layout and
// the guarantees.
//
// A Store is safe for concurrent use. Several Stores, in one process or in
// many, may share one Redis.
type Store struct {
	c   redis.UniversalClient
	key storage.Key
	opt Options      // defaults applied
	log *slog.Logger // never nil

	mu   sync.Mutex               // guards sems and held
	sems map[string]chan struct{} // one-slot semaphore per entry, within this process
	held map[string]*lease        // the lease this process holds, per entry

	watch watcher // the subscription WaitGeneration listens on

	pause     atomic.Bool     // tests: skip renewals, as a stalled process would
	onRenew   func(err error) // tests: called after every renewal attempt; set before the first Lock
	onRelease func()          // tests: called when an abandoned lease attempt was undone
}

// Static checks: what a Store implements.
var (
	_ storage.Store            = (*Store)(nil)
	_ storage.LeaseLocker      = (*Store)(nil)
	_ storage.Lister           = (*Store)(nil)
	_ storage.GenerationWaiter = (*Store)(nil)
)

// New returns a Store that keeps records in the Redis that client reaches,
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
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{c: client, key: key, opt: o, log: log}, nil
}

// entryKeys are the names of the keys and the channel of one entry, all in
// the slot of its hash tag.
type entryKeys struct {
	hash    string // hex of the first hashBytes of SHA-256(name)
	token   string // the sealed record
	gen     string // its generation, in decimal, for the scripts to compare
	name    string // the sealed entry name, for List
	lease   string // the lock's owner token, with a TTL
	channel string // every new generation is published here
}

// hashBytes is how much of the name's SHA-256 a key name carries.
const hashBytes = 16

// keys returns the names entry name uses: "<prefix>{<hash>}:token" and so
// on.
func (s *Store) keys(name string) entryKeys {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:hashBytes])
	base := s.opt.Prefix + "{" + h + "}:"
	return entryKeys{
		hash: h, token: base + "token", gen: base + "gen", name: base + "name",
		lease: base + "lease", channel: base + "gen",
	}
}

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

// readEntry reads an entry's generation key and, if it is at most limit
// bytes, its sealed record, in one step. A value over limit is measured,
// not sent: the reply then holds its size alone. KEYS: token, gen. ARGV:
// limit (-1 for the generation only). Reply: {gen or "", size or -1 when
// there is no record, record}.
var readEntry = redis.NewScript(`
local g = redis.call('GET', KEYS[2]) or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
	return {g, -1}
end
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then
	return {g, n}
end
return {g, n, redis.call('GET', KEYS[1])}`)

// stored is what readEntry found.
type stored struct {
	gen   string // the generation key, "" if absent
	size  int64  // the record's size, -1 when there is none
	value []byte // the record, nil when not read
}

// read runs readEntry for k.
func (s *Store) read(ctx context.Context, op, name string, k entryKeys, limit int) (stored, error) {
	var res []any
	err := s.do(ctx, func(ctx context.Context) (err error) {
		res, err = readEntry.Run(ctx, s.c, []string{k.token, k.gen}, limit).Slice()
		return err
	})
	if err != nil {
		return stored{}, classify(ctx, op, name, err)
	}
	var v stored
	ok := len(res) >= 2
	if ok {
		v.gen, ok = res[0].(string)
	}
	if ok {
		v.size, ok = res[1].(int64)
	}
	if ok && len(res) == 3 {
		var b string
		b, ok = res[2].(string)
		v.value = []byte(b)
	}
	if !ok {
		return stored{}, fmt.Errorf("redisstore: %s %q: unexpected reply from Redis", op, name)
	}
	return v, nil
}

// generation returns the generation v describes: the generation key's, 1
// for a record written by a release without generation keys (format 1),
// and 0 when there is nothing.
func (v stored) generation() (uint64, error) {
	switch {
	case v.gen != "" && v.size < 0:
		return 0, errors.New("generation key without a record")
	case v.gen != "":
		g, err := strconv.ParseUint(v.gen, 10, 64)
		if err != nil || g == 0 || strconv.FormatUint(g, 10) != v.gen {
			return 0, errors.New("generation key is not a positive decimal number")
		}
		return g, nil
	case v.size >= 0:
		return 1, nil
	}
	return 0, nil
}

// Load implements storage.Store. The record's generation, authenticated
// inside the sealed value, must agree with the generation key the scripts
// compare; a value that fails authentication — altered, or copied from
// another entry's key —, a generation key that disagrees, or a value larger
// than the storage format allows (1 MiB, measured in Redis before anything
// is sent) yields an error matching storage.ErrCorrupt. A value written by
// the previous release, a sealed token without a generation key, loads as
// generation 1.
func (s *Store) Load(ctx context.Context, name string) (*storage.Record, error) {
	v, err := s.read(ctx, "load", name, s.keys(name), maxValue)
	if err != nil {
		return nil, err
	}
	if v.size < 0 && v.gen == "" {
		return nil, fmt.Errorf("redisstore: load %q: %w", name, storage.ErrNotFound)
	}
	gen, err := v.generation()
	if err != nil {
		return nil, fmt.Errorf("redisstore: load %q: %v: %w", name, err, storage.ErrCorrupt)
	}
	if v.value == nil {
		return nil, fmt.Errorf("redisstore: load %q: value of %d bytes is larger than the %d a record may have: %w",
			name, v.size, maxValue, storage.ErrCorrupt)
	}
	r, err := storage.Open(ctx, s.key, name, v.value)
	if err != nil {
		return nil, fmt.Errorf("redisstore: load %q: %w", name, err)
	}
	if r.Generation != gen {
		return nil, fmt.Errorf("redisstore: load %q: generation key says %d, the sealed record %d: %w",
			name, gen, r.Generation, storage.ErrCorrupt)
	}
	return r, nil
}

// generation returns the generation stored under name without reading the
// record: 0 when there is no entry, 1 for a value written by the previous
// release. Errors are Load's, less those of the record itself.
func (s *Store) generation(ctx context.Context, name string) (uint64, error) {
	v, err := s.read(ctx, "generation", name, s.keys(name), -1)
	if err != nil {
		return 0, err
	}
	gen, err := v.generation()
	if err != nil {
		return 0, fmt.Errorf("redisstore: generation %q: %v: %w", name, err, storage.ErrCorrupt)
	}
	return gen, nil
}

// writeEntry is Save's conditional write, fenced by the caller's lease when
// it holds one: it writes the record, its generation and its sealed name
// only if the lease (when an owner is given) is still the caller's and the
// stored generation is the one the record was derived from, and publishes
// the new generation. A record without a generation key (the previous
// release's) counts as generation 1.
//
// KEYS: token, gen, name, lease. ARGV: owner ("" when the caller holds no
// lease), derived-from generation, new generation, sealed record, sealed
// name, channel. Reply: {1, new} written; {0, stored} lease lost; {-1,
// stored} generation conflict.
var writeEntry = redis.NewScript(`
local lost = ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1]
local cur = redis.call('GET', KEYS[2])
if not cur then
	cur = redis.call('EXISTS', KEYS[1]) == 1 and '1' or '0'
end
if lost then
	return {0, cur}
end
if cur ~= ARGV[2] then
	return {-1, cur}
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return {1, ARGV[3]}`)

// Save implements storage.Store: it writes r only if the stored generation
// is r.Generation-1 (0 for no entry, 1 for a value of the previous release,
// which the write upgrades), and otherwise fails with an error matching
// storage.ErrConflict and writes nothing. The record is sealed before it
// leaves the process; a sealed record over 1 MiB, which no load would
// accept, is refused. Comparison and write are one script in Redis.
//
// While this process holds name's lock, the write is also fenced: it
// happens only if Redis still holds this process's lease, and otherwise
// fails with an error matching [ErrLeaseLost] (and storage.ErrConflict too
// if the generation moved). Without the lock (a new login, say) the
// generation alone decides.
//
// An error matching storage.ErrUnavailable means the write was not
// confirmed: it did not happen if Redis could not be reached, and may have
// if Redis was reached but answered too late; a later Load says which.
func (s *Store) Save(ctx context.Context, name string, r *storage.Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("redisstore: save %q: refusing to save: %w", name, err)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("redisstore: save %q: name is %d bytes, longer than %d", name[:32]+"...", len(name), MaxNameLen)
	}
	k := s.keys(name)
	b, err := storage.Seal(ctx, s.key, name, r)
	if err != nil {
		return fmt.Errorf("redisstore: save %q: %w", name, err)
	}
	if len(b) > maxValue {
		return fmt.Errorf("redisstore: save %q: sealed record is %d bytes, more than the %d a load accepts", name, len(b), maxValue)
	}
	nb, err := s.sealName(ctx, k, name)
	if err != nil {
		return fmt.Errorf("redisstore: save %q: %w", name, err)
	}
	var owner string
	if l := s.holding(name); l != nil {
		owner = l.owner
	}
	prev := strconv.FormatUint(r.Generation-1, 10)
	var res []any
	err = s.do(ctx, func(ctx context.Context) (err error) {
		res, err = writeEntry.Run(ctx, s.c, []string{k.token, k.gen, k.name, k.lease},
			owner, prev, strconv.FormatUint(r.Generation, 10), b, nb, k.channel).Slice()
		return err
	})
	if err != nil {
		return classify(ctx, "save", name, err)
	}
	var code int64
	var cur string
	ok := len(res) == 2
	if ok {
		code, ok = res[0].(int64)
	}
	if ok {
		cur, ok = res[1].(string)
	}
	switch {
	case !ok:
		return fmt.Errorf("redisstore: save %q: unexpected reply from Redis", name)
	case code == 1:
		return nil
	case code == 0 && cur == prev:
		return fmt.Errorf("redisstore: save %q: %w; nothing was written", name, ErrLeaseLost)
	case code == 0:
		return fmt.Errorf("redisstore: save %q: %w, and %w: stored generation %s, write derived from %s",
			name, ErrLeaseLost, storage.ErrConflict, cur, prev)
	default:
		return fmt.Errorf("redisstore: save %q: %w: stored generation %s, write derived from %s",
			name, storage.ErrConflict, cur, prev)
	}
}

// deleteEntry purges an entry, fenced by the caller's lease when it holds
// one, and publishes generation 0. KEYS: token, gen, name, lease. ARGV:
// owner ("" when the caller holds no lease), channel. Reply: 1 deleted, 0
// lease lost.
var deleteEntry = redis.NewScript(`
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], '0')
return 1`)

// Delete implements storage.Store: it removes the entry for good, whatever
// generation it holds. To end a session and keep it ended, Save an ended
// record instead. Like Save, Delete is fenced while this process holds
// name's lock. Nothing is deleted when Redis cannot be reached; as for
// Save, an answer that came too late leaves the outcome unknown.
func (s *Store) Delete(ctx context.Context, name string) error {
	k := s.keys(name)
	var owner string
	if l := s.holding(name); l != nil {
		owner = l.owner
	}
	var n int
	err := s.do(ctx, func(ctx context.Context) (err error) {
		n, err = deleteEntry.Run(ctx, s.c, []string{k.token, k.gen, k.name, k.lease}, owner, k.channel).Int()
		return err
	})
	if err != nil {
		return classify(ctx, "delete", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redisstore: delete %q: %w; nothing was deleted", name, ErrLeaseLost)
	}
	return nil
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
