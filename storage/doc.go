// Package storage keeps OAuth2 tokens at rest: in memory ([Memory]), in
// encrypted files ([File]) or in the OS keyring ([Keyring]).
//
// Every store keeps the whole token the provider sent — access token, type,
// refresh token, expiry and extra fields such as id_token and scope — and
// implements [Locker], so that a tokensource.Source sharing it with other
// goroutines or processes redeems each refresh token once.
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
// # File format
//
// Each entry is one file, "<name>.tok" (or a hash of the name when it holds
// characters other than letters, digits and ".-_@"), mode 0600, in a
// directory of mode 0700. Its layout, version 1:
//
//	"TKKF" | version 1 | key kind | key id (8) | params length (2) | params | nonce (12) | AES-256-GCM ciphertext and tag
//
// The key kind is 1 for a raw key, 2 for a key kept in the keyring and 3 for
// a passphrase, whose argon2id parameters and salt are the params. The nonce
// is random for every write. The whole header and the entry's name are the
// associated data, so that a changed header, or a file copied to another
// entry's name, fails authentication. Argon2id parameters read from a file
// are capped by [MaxArgon2Params] before any work is done. Later versions of
// tokenkeep will read version 1 files; the golden files in the repository's
// testdata directory are checked by the tests.
//
// Writes go to a temporary file in the same directory, which is synced and
// renamed over the entry, and the directory is then synced: after a crash
// the entry holds the old token or the new one. A writer killed before the
// rename leaves its temporary file (encrypted like the entry); the next save
// of that entry removes such files once they are ten minutes old.
//
// A file owned by another user, or accessible to group or others, is
// refused on Unix. On Windows, files rely on the access list inherited from
// the user's profile directory.
//
// # Errors
//
// Errors match, with [errors.Is]: [ErrNotFound] when nothing is stored;
// [ErrCorrupt] when a file or keyring value fails to decode or authenticate
// — truncated, altered, copied from another entry, written by an unknown
// version, or encrypted with another key or passphrase (authenticated
// encryption cannot tell these apart; the message says which check failed);
// [ErrKeyLost] when the keyring entry holding a file's key is gone or holds
// another key, so the user must log in again; and [ErrUnavailable] when the
// keyring cannot be reached within its deadline. No error holds a token, a
// key or a passphrase.
//
// # Locking
//
// [File] and [Keyring] lock an entry with an in-process semaphore and an
// flock(2) (LockFileEx on Windows) on a lock file that is never deleted.
// The operating system drops the lock of a process that dies, so a crashed
// holder does not block the others. On NFS, Linux emulates flock with
// byte-range locks, which need a server with a lock manager (NFSv4, or NFSv3
// with lockd); without one, processes on different machines are not
// serialised. Use a store with a distributed lock for fleets.
package storage
