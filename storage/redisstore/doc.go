// Package redisstore keeps OAuth2 tokens in Redis, for fleets of processes
// on many machines that share one session: a [Store] is a storage.Store and
// a storage.Locker, so a tokensource.Source over it redeems each refresh
// token once across the whole fleet.
//
// It works with any redis.UniversalClient of github.com/redis/go-redis/v9:
// a single node, a Sentinel-managed primary or a Cluster. TLS, the ACL user
// and its password are options of that client.
//
// Tokens are encrypted before they leave the process, with storage.Seal
// and the caller's storage.Key: Redis, its replicas, its persistence files
// and anyone who can read them see ciphertext only. The entry's name is
// bound to the ciphertext as associated data, so a value copied to another
// entry's key fails to load with an error matching storage.ErrCorrupt.
//
// # Key layout
//
// Each entry uses two keys:
//
//	<prefix>{<hash>}:token   the sealed token, in the storage file format, no TTL
//	<prefix>{<hash>}:lease   the lock's owner token, with a TTL, while a refresh runs
//
// where <prefix> is Options.Prefix ("tokenkeep:" by default) and <hash> is the
// first 16 bytes of the SHA-256 of the entry's name, in hex. Key names carry
// no secret and not the name itself, which is often a user's. The braces are
// a Cluster hash tag: both keys of an entry live in one slot, as the scripts
// that touch both need.
//
// # The lease
//
// Lock sets the lease key to a random owner token with SET NX PX LeaseTTL,
// retrying every LockPoll. While the lock is held, a goroutine extends the
// lease every RenewEvery with a script that sets its TTL only if the key still
// holds this owner's token, so a token endpoint slower than LeaseTTL does not
// let a second process redeem the same refresh token. Unlock stops the
// renewal and deletes the key with a compare-and-delete script: only the
// owner releases. A holder that dies stops renewing, and the others proceed
// once LeaseTTL has passed.
//
// While this process holds an entry's lease, Save (and Delete) of that entry
// is fenced: one script writes the token only if the lease key still holds
// this owner's token, and otherwise the call fails with [ErrLeaseLost] and
// leaves the newer token in Redis alone.
//
// What the lease does not guarantee:
//
//   - A holder stalled for longer than LeaseTTL — a stopped process, a long
//     GC or VM pause, a network partition from Redis — loses its lease while
//     it may still be talking to the provider. Another process may then redeem
//     the same refresh token, and a provider with reuse detection revokes the
//     session. The fenced save keeps the stalled holder from overwriting the
//     newer token afterwards, but it cannot undo a redemption. Choose LeaseTTL
//     well above the slowest token request you expect, pauses included.
//   - Redis replicates asynchronously. If the primary fails after granting a
//     lease and before a replica received it, the promoted replica has no
//     lease and grants it again. Fencing again limits the damage to the stored
//     token; it does not stop the second redemption. Redlock-style quorums are
//     not used: they do not close this gap either without fencing at the
//     provider, which OAuth providers do not offer.
//   - Clocks matter only through the TTL: Redis expires the lease by its own
//     clock, and holders renew by theirs, every RenewEvery, well inside the TTL.
//
// Within one process, one goroutine at a time holds an entry's lock, so the
// Store knows which lease a Save belongs to. Several Stores in one process act
// as separate processes do.
//
// # Errors
//
// A Redis that cannot be reached within OpTimeout, or answers that it is
// loading, read-only, or without a primary, yields errors matching
// storage.ErrUnavailable: the failure is transient, nothing was changed or
// deleted if Redis could not be reached (a write whose answer came too late
// may have landed), and a tokensource.Source keeps serving a still-valid token
// from memory and retries later. A missing entry matches storage.ErrNotFound; a
// value that fails authentication, storage.ErrCorrupt. When the caller's own
// context ends first, errors wrap its error instead. No error holds a token
// or a key.
//
// # Configuring a fleet
//
//   - Every process that shares a session needs the same Redis, the same
//     Prefix, the same entry name and the same key, typically a 32-byte key
//     from a secret manager through storage.KeyFromEnv. Rotating the key
//     makes the stored tokens unreadable: users log in again.
//   - Use the same LeaseTTL everywhere. The default 10 s covers slow token
//     endpoints; tokensource's own refresh timeout (30 s by default) should be
//     longer than the lock wait you allow with tokensource.WithLockTimeout.
//   - Give the Redis user only what the store needs: GET, SET, DEL, EVALSHA and
//     EVAL on keys matching the prefix, for example
//     "ACL SETUSER tokens on >secret ~tokenkeep:* +get +set +del +evalsha +eval +ping".
//   - With Sentinel or Cluster, pass the failover or cluster client; the lease
//     caveats above apply on failover. Persistence (appendonly) is what keeps
//     sessions across a Redis restart; without it a restart logs everyone out.
package redisstore
