// Package storage keeps OAuth2 sessions at rest: in memory ([Memory]), in
// encrypted files ([File]) or in the OS keyring ([Keyring]).
//
// Every store keeps the whole token the provider sent — access token, type,
// refresh token, expiry and extra fields such as id_token and scope — and
// implements [Locker], so that a tokensource.Source sharing it with other
// goroutines or processes redeems each refresh token once. Memory and File
// also implement [GenerationWaiter], so that processes waiting for the lock
// while one refreshes learn its new token at once (File polls a stat of the
// entry's file every [WaitPoll]); the keyring has no cheap way to tell, and
// its waiters take the lock in turn.
//
// # Choosing a store
//
//   - Keyring: the OS keeps the token, encrypted with the user's login
//     secret. Best for desktop CLIs. Needs a running Secret Service on Linux.
//   - File with [KeyringKey]: the token in a file, its key in the keyring.
//     For tokens too large or too numerous for the keyring.
//   - File with [Passphrase]: for machines without a keyring where a person
//     types a passphrase.
//   - File with [KeyFromEnv] or [RawKey]: for headless jobs whose key comes
//     from the environment or a secret manager.
//
// None of them protects a token from malware running as the same user, or
// from root: both can read the keyring or the key as the application does.
// The file store protects against a stolen disk or backup, as long as the
// key is not stored beside the files.
//
// # Records, generations and conditional writes
//
// A store keeps, under each key, a [Record]: one version of a session. Its
// Generation counts the writes of the entry (the first is 1), its State is
// [Live] (it holds the token) or [Ended] (revoked, logged out or refused by
// the provider; it holds no token, only a Reason), and it carries the
// session's metadata: the lifetime the provider granted, a provider back-off
// deadline (RetryAfter) and the refresh token's idle deadline
// (RefreshExpiry).
//
// Every write is conditional. Save(ctx, key, r) writes r only if the stored
// generation is r.Generation-1 (nothing stored counts as 0), and otherwise
// fails with an error matching [ErrConflict] and changes nothing. The stored
// generation therefore only grows, each generation is written by exactly
// one writer, and a writer that started from an older state — a late retry,
// a slow save, a rival process — loses and must read again; it never
// overwrites. File and Keyring compare and write under the entry's lock
// file (see Locking), Memory under its mutex.
//
// An ended record is a tombstone: it stays, so that every process that
// loads it knows the session ended, and no write derived from before the end
// can replace it. A new login is a live record of the next generation.
//
// [SaveToken] and [LoadToken] store and read a bare token for tools and
// tests; a tokensource.Source writes records itself.
//
// # Purging an entry
//
// Delete removes an entry for good, whatever it holds, and with it its
// generation: what is saved next starts again at generation 1 (a
// tokensource.Source that had seen the entry reports the session deleted).
// Use Delete to forget a user; for the file store it also removes the
// entry's temporary, name and lock files. End a session that may still be
// in use elsewhere with an ended record instead, which every process sees.
//
// # Stores written for bare tokens
//
// [FromTokenStore] turns a [TokenStore] — one that loads and saves bare
// oauth2 tokens, such as a database table written before records existed —
// into a Store. The record's generation, state and metadata travel in an
// extra field of the token ("tokenkeep_record"); a token without it reads
// as generation 1. The guarantee is weaker: the TokenStore cannot compare
// and write in one step, so the adapter compares and then saves. Writes of
// one key are serialised within the process; across processes only while
// the writers hold the TokenStore's lock (a tokensource.Source takes it for
// every write when the TokenStore is a Locker). A writer that does not hold
// it can overwrite a newer record.
//
// # File format
//
// Each entry is one file, "<name>.tok" (or a hash of the name when it holds
// characters other than letters, digits and ".-_@", with the name itself
// in a "~<hash>.name" file beside it, for [File.List]), mode 0600, in a
// directory of mode 0700. Its layout, version 2:
//
//	"TKKF" | version 2 | key kind | key id (8) | params length (2) | params | nonce (12) | AES-256-GCM ciphertext and tag
//
// The key kind is 1 for a raw key, 2 for a key kept in the keyring and 3 for
// a passphrase, whose argon2id parameters and salt are the params. The nonce
// is random for every write. The whole header and the entry's name are the
// associated data, so that a changed header, or a file copied to another
// entry's name, fails authentication. Argon2id parameters read from a file
// are capped by [MaxArgon2Params] before any work is done. The plaintext is
// the record, as JSON: {"v":2,"gen":…,"state":"live"|"ended","reason":…,
// "token":{…},"lifetime_ms":…,"retry_after":…,"refresh_expiry":…}.
//
// Version 1 files, written before records, hold a bare token in the same
// envelope; they load as a live record of generation 1, and the next save
// writes version 2. Keyring values follow the same rule ("tk1:" values are
// tokens, "tk2:" values records). The golden files in the repository's
// testdata directory, of both versions, are checked by the tests; version 1
// ones are never regenerated.
//
// A sealed entry is at most 1 MiB: a load refuses anything larger before
// decrypting it, and a save refuses a record whose sealed form would be
// larger, with an error matching [ErrTooLarge], writing nothing.
//
// Writes go to the entry's temporary file (".<name>.tok.tmp") in the same
// directory, which is synced and renamed over the entry, and the directory
// is then synced: after a crash the entry holds the old record or the new
// one. Only the holder of the entry's lock writes it, so one temporary name
// per entry is enough: the next save replaces what a killed writer left, and
// Delete removes it. NewFile also sweeps temporary files older than ten
// minutes, at most once every ten minutes for all the processes sharing the
// directory (the ".swept" file records when). No load or save reads the
// directory: their cost does not grow with the number of entries.
//
// # File permissions
//
// On Unix, the file store checks, with no more than an fstat and a stat:
//
//   - On every load, save, delete and list: the store's directory (held
//     open since NewFile) is still owned by the user, still has mode 0700,
//     and is still the directory at its path (not moved or replaced).
//   - On every load: the entry is a regular file — not a symbolic link, a
//     FIFO or a device; it is opened with O_NOFOLLOW|O_NONBLOCK, so the open
//     never waits, and its type is checked on the open handle before
//     anything is read — owned by the user and not accessible to group or
//     others.
//   - In NewFile: the directory is created with mode 0700; an existing one
//     that group or others may only read or search (0755, 0750, 0711) is set
//     to 0700, and one they may write to is refused. Every directory above
//     it, from the root down, on the path as given and on the path with
//     symbolic links resolved, must be owned by root or the user, and must
//     not be writable by group or others unless it has the sticky bit (as
//     /tmp has, which stops others from renaming or removing what they do
//     not own) — OpenSSH's StrictModes rule.
//
// Ancestors are checked in NewFile only; the store keeps using the
// directory it opened, and its path is checked to still name it. On
// Windows, files rely on the access list inherited from the user's profile
// directory, and none of these checks is made.
//
// # Errors
//
// Errors match, with [errors.Is]: [ErrNotFound] when nothing is stored;
// [ErrConflict] when a conditional write was refused; [ErrCorrupt] when a
// file or keyring value fails to decode or authenticate — truncated,
// altered, copied from another entry, written by an unknown version, or
// encrypted with another key or passphrase (authenticated encryption cannot
// tell these apart; the message says which check failed); [ErrKeyLost]
// when the keyring entry holding a file's key is gone or holds another key,
// so the user must log in again; [ErrTooLarge] when a record is too large to
// store; and [ErrUnavailable] when the keyring cannot be reached within its
// deadline. No error holds a token, a key or a passphrase.
//
// # Locking
//
// [File] and [Keyring] lock an entry with an in-process semaphore and an
// flock(2) (LockFileEx on Windows) on a lock file. The operating system
// drops the lock of a process that dies, so a crashed holder does not block
// the others. A save or delete takes the entry's lock for the length of its
// read-compare-write, unless a goroutine of the same process holds it (then
// the process's writes of the entry are serialised in memory), so a holder
// never waits for itself.
//
// Delete removes the entry's lock file too (not on Windows, where a file
// open elsewhere cannot be removed cleanly). That is safe because a lock
// file is only removed by a holder of its lock, as the last thing before
// unlocking, and a locker checks after taking the lock that the path still
// names the file it locked, and tries again if not.
//
// On NFS, Linux emulates flock with byte-range locks, which need a server
// with a lock manager (NFSv4, or NFSv3 with lockd); without one, processes
// on different machines are not serialised, and neither are their writes.
// Use a store with a distributed lock for fleets.
package storage
