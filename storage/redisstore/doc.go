// Package redisstore keeps OAuth2 sessions in Redis, for fleets of
// processes on many machines that share them: a [Store] is a storage.Store
// with conditional writes, a storage.LeaseLocker and a storage.Lister, so a
// tokensource.Source over it redeems each refresh token once across the
// whole fleet, and never rolls a session back.
//
// It works with any redis.UniversalClient of github.com/redis/go-redis/v9:
// a single node, a Sentinel-managed primary or a Cluster. TLS, the ACL user
// and its password are options of that client. It needs Redis 6.2 or later
// (ACL channel permissions; Lua scripts).
//
// Records are encrypted before they leave the process, with storage.Seal
// and the caller's storage.Key: Redis, its replicas, its persistence files
// and anyone who can read them see ciphertext only. The entry's name is
// bound to the ciphertext as associated data, so a value copied to another
// entry's key fails to load with an error matching storage.ErrCorrupt.
//
// # Key layout
//
// Each entry uses these keys, and one channel:
//
//	<prefix>{<hash>}:token   the sealed record, in the storage file format, no TTL
//	<prefix>{<hash>}:gen     the record's generation, in decimal
//	<prefix>{<hash>}:name    the entry's name, sealed with the same key (for List)
//	<prefix>{<hash>}:lease   the lock's owner token, with a TTL, while a refresh runs
//	<prefix>{<hash>}:gen     (channel) every new generation, as it is written
//
// where <prefix> is Options.Prefix ("tokenkeep:" by default) and <hash> is the
// first 16 bytes of the SHA-256 of the entry's name, in hex. Key names carry
// no secret and not the name itself, which is often a user's; nor does any
// value hold it in clear. The braces are a Cluster hash tag: an entry's keys
// live in one slot, as the scripts that touch several of them need.
//
// # Generations and conditional writes
//
// Every record carries a generation, authenticated inside the sealed value,
// that grows by one with every write. Save is one Lua script: it compares
// the generation key with the generation the record was derived from
// (r.Generation-1; 0 when the entry does not exist) and writes the record,
// the generation key and the sealed name together only if they match;
// otherwise nothing is written and Save fails with an error matching
// storage.ErrConflict. The generation is kept in a key of its own, in the
// clear, because the script cannot read the sealed one; Load checks that
// the two agree, and reports a disagreement as storage.ErrCorrupt.
//
// An ended session is an ordinary record in the ended state (a tombstone):
// a refresh derived from before it conflicts, and a new login, derived from
// it, replaces it. Delete purges an entry for good, whatever it holds.
//
// Values written by the previous release of this package — a sealed token
// (file format version 1) under the token key and no generation key — load
// as generation 1, and the next write, which must derive from generation 1,
// upgrades them. Run one release across a fleet: a process of the previous
// release cannot read records, and a value it writes over one fails to load
// with storage.ErrCorrupt (its generation disagrees) rather than roll the
// session back unseen.
//
// # The lease
//
// LockLease sets the lease key to a random owner token with SET NX PX
// LeaseTTL, retrying every LockPoll. While the lock is held, a goroutine
// extends the lease every RenewEvery with a script that sets its TTL only if
// the key still holds this owner's token, so a token endpoint slower than
// LeaseTTL does not let a second process redeem the same refresh token.
// Unlock stops the renewal and deletes the key with a compare-and-delete
// script: only the owner releases. A holder that dies stops renewing, and the
// others proceed once LeaseTTL has passed.
//
// The held context LockLease returns ends, with a cause matching
// [ErrLeaseLost], as soon as a renewal finds the lease gone, or once
// renewals have failed for LeaseTTL since the last one that succeeded: from
// then on the process cannot know that it holds the lease, and it must not
// send a refresh request under it. A failed renewal is retried sooner than
// RenewEvery and logged (Options.Logger), as is the loss.
//
// While this process holds an entry's lease, Save and Delete of that entry
// are fenced: the same script checks that the lease key still holds this
// owner's token, and otherwise the call fails with [ErrLeaseLost] and leaves
// the entry alone. A save retried after the lock was released is an
// ordinary conditional write: if another process wrote the entry in the
// meantime, the generation refuses it. (Earlier releases remembered, per
// process, the token that fencing had refused and refused it again without
// the lease; the generation now does that for every writer, in every
// process, for every later record.)
//
// What the lease does not guarantee:
//
//   - A holder stalled for longer than LeaseTTL — a stopped process, a long
//     GC or VM pause, a network partition from Redis — loses its lease while
//     it may still be talking to the provider. Another process may then redeem
//     the same refresh token, and a provider with reuse detection revokes the
//     session. Fencing and generations keep the stalled holder from
//     overwriting the newer record afterwards, but they cannot undo a
//     redemption. Choose LeaseTTL well above the slowest token request you
//     expect, pauses included.
//   - Redis replicates asynchronously. If the primary fails after granting a
//     lease and before a replica received it, the promoted replica has no
//     lease and grants it again; a write acknowledged by the old primary may
//     be lost with it. Redlock-style quorums are not used: they do not close
//     this gap either without fencing at the provider, which OAuth providers
//     do not offer.
//   - Clocks matter only through the TTL: Redis expires the lease by its own
//     clock, and holders renew by theirs, every RenewEvery, well inside the TTL.
//   - A holder that dies is noticed only when its lease expires. Redis can
//     tell that a connection closed, not that a process died: a live holder
//     whose connection dropped for a moment is still sending its request, and
//     taking its lease then would mean a second redemption. Asking Redis about
//     other clients (CLIENT LIST) would also need administrative permissions.
//     A shorter LeaseTTL, with RenewEvery shortened to match, is the way to
//     shorten the wait after a crash.
//
// Within one process, one goroutine at a time holds an entry's lock, so the
// Store knows which lease a Save belongs to. Several Stores in one process act
// as separate processes do.
//
// # Waiting for a new generation
//
// Every write publishes its generation on the entry's channel, inside the
// script that makes it. [Store.WaitGeneration] subscribes to that channel
// and returns as soon as the stored generation is other than the one the
// caller knows: a process waiting for the lock while another refreshes can
// load the new record the moment it is written, instead of taking the lock
// in turn after every other waiter. One subscription connection per Store
// serves all of its waiting calls. A tokensource.Source uses it while it
// waits for the lock.
//
// # Listing
//
// List walks the prefix with SCAN (never KEYS), on every primary of a
// Cluster, and decrypts each entry's sealed name. Entries last written by
// the previous release, which kept no name, are listed once saved again.
//
// # Bounded reads
//
// Load measures the record in Redis (STRLEN, in the reading script) and
// fetches it only when it is at most 1 MiB, the storage format's limit; List
// reads names with GETRANGE. A huge value planted in Redis costs the reader
// no allocation and loads as storage.ErrCorrupt. Save refuses a record that
// no load would accept, and names longer than [MaxNameLen].
//
// # Errors
//
// A Redis that cannot be reached within OpTimeout, or answers that it is
// loading, read-only, or without a primary, yields errors matching
// storage.ErrUnavailable: the failure is transient, nothing was changed or
// deleted if Redis could not be reached (a write whose answer came too late
// may have landed), and a tokensource.Source keeps serving a still-valid token
// from memory and retries later. A missing entry matches storage.ErrNotFound;
// a write derived from another generation, storage.ErrConflict; a value that
// fails authentication or disagrees with its generation key,
// storage.ErrCorrupt; a fenced write after the lease was lost,
// [ErrLeaseLost]. When the caller's own context ends first, errors wrap its
// error instead. No error or log record holds a token or a key.
//
// # Configuring a fleet
//
//   - Every process that shares a session needs the same Redis, the same
//     Prefix, the same entry name and the same key, typically a 32-byte key
//     from a secret manager through storage.KeyFromEnv. Rotating the key
//     makes the stored sessions unreadable: users log in again.
//   - Use the same LeaseTTL everywhere. The default 10 s covers slow token
//     endpoints; tokensource's own refresh timeout (30 s by default) should be
//     longer than the lock wait you allow with tokensource.WithLockTimeout.
//   - Pass Options.Logger: a renewal that fails is otherwise seen only
//     through the held context.
//   - With Sentinel or Cluster, pass the failover or cluster client; the lease
//     caveats above apply on failover. Persistence (appendonly) is what keeps
//     sessions across a Redis restart; without it a restart logs everyone out.
//
// # The Redis user
//
// Give the Redis user only what the store needs: the commands below, on
// keys and channels matching the prefix. Scripts run with the caller's
// permissions, so the commands they call are listed too: GET, SET, DEL,
// EXISTS, STRLEN, PEXPIRE (lease renewal) and PUBLISH; SCAN and GETRANGE
// serve List, SUBSCRIBE and UNSUBSCRIBE WaitGeneration. For the default
// prefix:
//
//	ACL SETUSER tokens reset on >password ~tokenkeep:* &tokenkeep:* +get +set +del +exists +strlen +pexpire +publish +getrange +scan +subscribe +unsubscribe +evalsha +eval +ping
//
// The package's tests run the whole protocol as a user created with exactly
// this line. A permission missing from it fails loudly: renewals are logged
// and end the held context, other calls return Redis's NOPERM error.
package redisstore
