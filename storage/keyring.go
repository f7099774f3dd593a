package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/zalando/go-keyring"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// KeyringBackend is the small part of an OS keyring that tokenkeep uses. The
// default is the platform's keyring through github.com/zalando/go-keyring
// (Secret Service on Linux and BSD, Keychain on macOS, Credential Manager on
// Windows). Tests and unusual platforms may supply their own.
//
// Get returns an error matching ErrNotFound when the item does not exist;
// Delete of a missing item may return such an error too. A backend need not
// bound its calls in time: the store does.
type KeyringBackend interface {
	Get(service, user string) (string, error)
	Set(service, user, secret string) error
	Delete(service, user string) error
}

// KeyringOptions configure a [Keyring] store or a [KeyringKey]. A nil
// *KeyringOptions means all defaults.
type KeyringOptions struct {
	// Backend is the keyring. If nil, the OS keyring is used.
	Backend KeyringBackend

	// Timeout bounds every keyring call, whatever the caller's context:
	// backends can hang on a locked collection or a prompt nobody answers.
	// A call that runs out of time fails with an error matching
	// ErrUnavailable. If zero, DefaultKeyringTimeout is used.
	Timeout time.Duration

	// ChunkSize is the largest value written to one keyring item; larger
	// tokens are split over several items (see [Keyring]). If zero, the
	// platform's limit is used (2,000 bytes on Windows and macOS, none
	// elsewhere); negative means no limit.
	ChunkSize int

	// LockDir is the directory of the lock files that serialise refreshes
	// across processes. If empty, a "tokenkeep/locks" directory in
	// os.UserCacheDir is used.
	LockDir string
}

// DefaultKeyringTimeout bounds each keyring call when KeyringOptions.Timeout is
// zero.
const DefaultKeyringTimeout = 5 * time.Second

func (o *KeyringOptions) withDefaults() KeyringOptions {
	var v KeyringOptions
	if o != nil {
		v = *o
	}
	if v.Backend == nil {
		v.Backend = osKeyring{}
	}
	if v.Timeout <= 0 {
		v.Timeout = DefaultKeyringTimeout
	}
	if v.ChunkSize == 0 {
		v.ChunkSize = platformChunkSize()
	}
	return v
}

// platformChunkSize stays under the item limits of Windows Credential Manager
// (2,560 bytes) and of the macOS security tool (about 3,000 bytes with the
// service and account names).
func platformChunkSize() int {
	switch runtime.GOOS {
	case "windows", "darwin", "ios":
		return 2000
	}
	return -1
}

// osKeyring is the OS keyring through go-keyring.
type osKeyring struct{}

// errNoSessionBus is what osKeyring returns, before any D-Bus call, where
// the Secret Service is found on a D-Bus session bus and there is none
// (see sessionBusReachable).
var errNoSessionBus = fmt.Errorf("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set), so no Secret Service: %w", ErrUnavailable)

func (osKeyring) Get(service, user string) (string, error) {
	if err := sessionBusReachable(); err != nil {
		return "", err
	}
	v, err := keyring.Get(service, user)
	if errors.Is(err, keyring.ErrNotFound) {
		return "", ErrNotFound
	}
	return v, err
}

func (osKeyring) Set(service, user, secret string) error {
	if err := sessionBusReachable(); err != nil {
		return err
	}
	return keyring.Set(service, user, secret)
}

func (osKeyring) Delete(service, user string) error {
	if err := sessionBusReachable(); err != nil {
		return err
	}
	err := keyring.Delete(service, user)
	if errors.Is(err, keyring.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// callBackend runs f with a deadline. A backend that does not answer in time
// is left running in its goroutine (a keyring call cannot be interrupted) and
// the caller gets an error matching ErrUnavailable. Errors other than
// ErrNotFound are reported as ErrUnavailable too: from the store's point of
// view the backend failed, and nothing stored was lost.
func callBackend(ctx context.Context, timeout time.Duration, f func() (string, error)) (string, error) {
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		switch {
		case r.err == nil, errors.Is(r.err, ErrNotFound), errors.Is(r.err, ErrUnavailable):
			return r.v, r.err
		case errors.Is(r.err, keyring.ErrSetDataTooBig):
			return "", fmt.Errorf("value too large for this keyring; set KeyringOptions.ChunkSize: %w", r.err)
		default:
			return "", fmt.Errorf("%v: %w", r.err, ErrUnavailable)
		}
	case <-timer.C:
		return "", fmt.Errorf("keyring did not answer within %v: %w", timeout, ErrUnavailable)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Keyring is a Store and Locker that keeps tokens in the OS keyring, one
// item per entry under a service name, and locks through a lock file per
// entry in the user's cache directory.
//
// Values are the token's encoding in base64. A value longer than the chunk
// size is split: its chunks are written first, as items named
// "<key>#<generation>.<i>", and then the entry's own item is replaced by a
// manifest naming the generation, the chunk count and a hash of the whole.
// The manifest is the commit point: a crash part-way leaves the previous
// value readable, and orphaned chunks are removed by the next save.
//
// A Keyring is safe for concurrent use.
type Keyring struct {
	service string
	opts    KeyringOptions
	locks   lockSet
}

// NewKeyring returns a Keyring store for service (for example your
// application's name). opts may be nil.
func NewKeyring(service string, opts *KeyringOptions) (*Keyring, error) {
	if service == "" {
		return nil, errors.New("storage: keyring store needs a service name")
	}
	o := opts.withDefaults()
	if o.LockDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("storage: keyring lock directory: %w", err)
		}
		o.LockDir = filepath.Join(dir, "tokenkeep", "locks")
	}
	return &Keyring{service: service, opts: o}, nil
}

// Value prefixes: "tk2:" is a record (version 2), "tk1:" a bare token
// written before records had generations (read as generation 1); "tk2c:"
// and "tk1c:" are the manifests of chunked values of either.
const (
	singlePrefix     = "tk2:"
	manifestPrefix   = "tk2c:"
	singlePrefixV1   = "tk1:"
	manifestPrefixV1 = "tk1c:"
)

func (k *Keyring) call(ctx context.Context, f func() (string, error)) (string, error) {
	return callBackend(ctx, k.opts.Timeout, f)
}

func (k *Keyring) errorf(key, op string, err error) error {
	return fmt.Errorf("storage: keyring %s entry %q: %s: %w", k.service, key, op, err)
}

// Load implements Store.
func (k *Keyring) Load(ctx context.Context, key string) (*Record, error) {
	v, err := k.call(ctx, func() (string, error) { return k.opts.Backend.Get(k.service, key) })
	if err != nil {
		return nil, k.errorf(key, "read", err)
	}
	var enc string
	legacy := false
	switch {
	case strings.HasPrefix(v, singlePrefix):
		enc = v[len(singlePrefix):]
	case strings.HasPrefix(v, singlePrefixV1):
		enc, legacy = v[len(singlePrefixV1):], true
	case strings.HasPrefix(v, manifestPrefix), strings.HasPrefix(v, manifestPrefixV1):
		legacy = strings.HasPrefix(v, manifestPrefixV1)
		if enc, err = k.loadChunks(ctx, key, v); err != nil {
			return nil, err
		}
	default:
		return nil, k.errorf(key, "decode", errFormat("not a tokenkeep value"))
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, k.errorf(key, "decode", errFormat("bad base64"))
	}
	if !legacy {
		r, err := decodeRecord(b)
		if err != nil {
			return nil, k.errorf(key, "decode", err)
		}
		return r, nil
	}
	t, err := tokencodec.Decode(b)
	if err != nil {
		return nil, k.errorf(key, "decode", fmt.Errorf("%v: %w", err, ErrCorrupt))
	}
	return legacyRecord(t), nil
}

// manifest describes a chunked value.
type manifest struct {
	gen  string
	n    int
	hash string
}

func parseManifest(v string) (manifest, bool) {
	if !strings.HasPrefix(v, manifestPrefix) && !strings.HasPrefix(v, manifestPrefixV1) {
		return manifest{}, false
	}
	parts := strings.Split(v[strings.IndexByte(v, ':')+1:], ":")
	if len(parts) != 3 {
		return manifest{}, false
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < 1 || n > 1024 || parts[0] == "" {
		return manifest{}, false
	}
	return manifest{gen: parts[0], n: n, hash: parts[2]}, true
}

func (m manifest) String() string {
	return fmt.Sprintf("%s%s:%d:%s", manifestPrefix, m.gen, m.n, m.hash)
}

func chunkUser(key, gen string, i int) string {
	return fmt.Sprintf("%s#%s.%d", key, gen, i)
}

func valueHash(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:16])
}

func (k *Keyring) loadChunks(ctx context.Context, key, v string) (string, error) {
	m, ok := parseManifest(v)
	if !ok {
		return "", k.errorf(key, "decode", errFormat("bad chunk manifest"))
	}
	var sb strings.Builder
	for i := range m.n {
		c, err := k.call(ctx, func() (string, error) { return k.opts.Backend.Get(k.service, chunkUser(key, m.gen, i)) })
		if errors.Is(err, ErrNotFound) {
			return "", k.errorf(key, "read", errFormat("chunk %d of %d is missing", i+1, m.n))
		}
		if err != nil {
			return "", k.errorf(key, "read", err)
		}
		sb.WriteString(c)
	}
	if valueHash(sb.String()) != m.hash {
		return "", k.errorf(key, "decode", errFormat("chunks do not match their manifest"))
	}
	return sb.String(), nil
}

// previous returns the manifest currently stored under key, if any.
func (k *Keyring) previous(ctx context.Context, key string) (manifest, bool) {
	v, err := k.call(ctx, func() (string, error) { return k.opts.Backend.Get(k.service, key) })
	if err != nil {
		return manifest{}, false
	}
	return parseManifest(v)
}

// Save implements Store. The stored generation is read and compared, and
// the value replaced, under the entry's lock file (taken for the write
// unless this process holds it), so that no other process writes in
// between. A record whose encoding is larger than 1 MiB is refused with an
// error matching ErrTooLarge, as the file store does.
func (k *Keyring) Save(ctx context.Context, key string, r *Record) error {
	b, err := encodeRecord(r)
	if err != nil {
		return k.errorf(key, "save", fmt.Errorf("refusing to save: %w", err))
	}
	if len(b) > maxEntrySize {
		return k.errorf(key, "save", fmt.Errorf("%w: encoded, it is %d bytes; at most %d are kept", ErrTooLarge, len(b), maxEntrySize))
	}
	path, err := k.lockPath(key)
	if err != nil {
		return k.errorf(key, "save", err)
	}
	return k.locks.write(ctx, key, path, false, func() error {
		cur, err := generationOf(k.Load(ctx, key))
		if err != nil {
			return err
		}
		if err := checkGeneration(cur, r); err != nil {
			return k.errorf(key, "save", err)
		}
		return k.replace(ctx, key, base64.StdEncoding.EncodeToString(b))
	})
}

// replace writes the encoded value enc under key, in chunks if it is long.
func (k *Keyring) replace(ctx context.Context, key, enc string) error {
	old, hadOld := k.previous(ctx, key)

	value := singlePrefix + enc
	if size := k.opts.ChunkSize; size > 0 && len(value) > size {
		m, err := k.saveChunks(ctx, key, enc, size)
		if err != nil {
			return err
		}
		value = m.String()
	}
	if _, err := k.call(ctx, func() (string, error) { return "", k.opts.Backend.Set(k.service, key, value) }); err != nil {
		return k.errorf(key, "save", err)
	}
	if hadOld {
		k.deleteChunks(ctx, key, old)
	}
	return nil
}

func (k *Keyring) saveChunks(ctx context.Context, key, enc string, size int) (manifest, error) {
	var g [6]byte
	if _, err := rand.Read(g[:]); err != nil {
		return manifest{}, k.errorf(key, "save", err)
	}
	m := manifest{gen: hex.EncodeToString(g[:]), n: (len(enc) + size - 1) / size, hash: valueHash(enc)}
	if m.n > 1024 {
		return manifest{}, k.errorf(key, "save", fmt.Errorf("token needs %d chunks of %d bytes; at most 1024", m.n, size))
	}
	for i := range m.n {
		chunk := enc[i*size : min(len(enc), (i+1)*size)]
		_, err := k.call(ctx, func() (string, error) { return "", k.opts.Backend.Set(k.service, chunkUser(key, m.gen, i), chunk) })
		if err != nil {
			k.deleteChunks(ctx, key, manifest{gen: m.gen, n: i})
			return manifest{}, k.errorf(key, "save chunk", err)
		}
	}
	return m, nil
}

// deleteChunks removes a value's chunks, best effort: an orphaned chunk
// holds part of an old token in the keyring, no worse than the token itself.
func (k *Keyring) deleteChunks(ctx context.Context, key string, m manifest) {
	for i := range m.n {
		k.call(ctx, func() (string, error) { return "", k.opts.Backend.Delete(k.service, chunkUser(key, m.gen, i)) })
	}
}

// Delete implements Store, under the entry's lock file like Save.
func (k *Keyring) Delete(ctx context.Context, key string) error {
	path, err := k.lockPath(key)
	if err != nil {
		return k.errorf(key, "delete", err)
	}
	return k.locks.write(ctx, key, path, true, func() error {
		old, hadOld := k.previous(ctx, key)
		_, err := k.call(ctx, func() (string, error) { return "", k.opts.Backend.Delete(k.service, key) })
		if err != nil && !errors.Is(err, ErrNotFound) {
			return k.errorf(key, "delete", err)
		}
		if hadOld {
			k.deleteChunks(ctx, key, old)
		}
		return nil
	})
}

// lockPath returns the path of key's lock file, creating its directory.
func (k *Keyring) lockPath(key string) (string, error) {
	if err := os.MkdirAll(k.opts.LockDir, 0o700); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(k.service + "\x00" + key))
	return filepath.Join(k.opts.LockDir, "keyring-"+hex.EncodeToString(sum[:12])+".lock"), nil
}

// Lock implements Locker with a lock file named after the service and key
// in KeyringOptions.LockDir; see [File.Lock] for its behaviour.
func (k *Keyring) Lock(ctx context.Context, key string) (func() error, error) {
	path, err := k.lockPath(key)
	if err != nil {
		return nil, k.errorf(key, "lock", err)
	}
	unlock, err := k.locks.lock(ctx, key, path)
	if err != nil {
		return nil, k.errorf(key, "lock", err)
	}
	return unlock, nil
}
