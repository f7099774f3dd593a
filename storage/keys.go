package storage

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/sync/semaphore"
)

// A Key supplies the AES-256 key of a [File] store. Make one with [RawKey],
// [KeyFromEnv], [Passphrase] or [KeyringKey]. A Key is safe for concurrent
// use and may be shared by several stores.
type Key interface {
	// sealing returns the key and header fields for a new write.
	sealing(ctx context.Context, env keyEnv) (keyMaterial, error)
	// opening returns the key for an entry whose header is h.
	opening(ctx context.Context, env keyEnv, h *header) ([]byte, error)
}

// keyMaterial is what a write needs: the key and how the header describes it.
type keyMaterial struct {
	kind   keyKind
	params []byte
	key    []byte
}

// authenticator is implemented by keys that learn from a header once its
// entry's tag verified.
type authenticator interface {
	authenticated(h *header)
}

// keyEnv is what a store lends its key: a lock that serialises the creation
// of a new key across processes.
type keyEnv struct {
	lock func(ctx context.Context) (unlock func() error, err error)
}

// wrongKind explains a file written under another kind of key.
func wrongKind(h *header, have keyKind) error {
	return errFormat("entry was encrypted with a %s, but this store uses a %s", h.kind, have)
}

// RawKey returns a Key for a 32-byte key the caller keeps, for example in a
// secret manager. RawKey copies key; the caller may clear its copy.
func RawKey(key []byte) (Key, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("storage: raw key is %d bytes, want 32", len(key))
	}
	return &rawKey{key: append([]byte(nil), key...)}, nil
}

// KeyFromEnv returns a Key read from the environment variable name, which
// holds 32 bytes as 64 hex digits or as base64 (standard or URL alphabet,
// with or without padding). Errors name the variable, never its value. The
// variable is read once, when KeyFromEnv is called.
//
// Generate a key with, for example, "openssl rand -base64 32".
func KeyFromEnv(name string) (Key, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("storage: environment variable %s is not set", name)
	}
	key, err := decodeKeyText(strings.TrimSpace(v))
	if err != nil {
		return nil, fmt.Errorf("storage: environment variable %s: %w", name, err)
	}
	return &rawKey{key: key}, nil
}

// decodeKeyText decodes 32 bytes written as hex or base64.
func decodeKeyText(s string) ([]byte, error) {
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("key decodes to %d bytes, want 32", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("key is neither 64 hex digits nor base64 of 32 bytes")
}

type rawKey struct{ key []byte }

func (k *rawKey) sealing(context.Context, keyEnv) (keyMaterial, error) {
	return keyMaterial{kind: kindRaw, key: k.key}, nil
}

func (k *rawKey) opening(_ context.Context, _ keyEnv, h *header) ([]byte, error) {
	if h.kind != kindRaw {
		return nil, wrongKind(h, kindRaw)
	}
	return k.key, nil
}

// Argon2Params are the argon2id parameters (RFC 9106) that turn a passphrase
// into a key. They are stored in each entry's header, so a store can read
// entries written with other parameters, within [MaxArgon2Params].
type Argon2Params struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

var (
	// DefaultArgon2Params are the second recommended option of RFC 9106
	// (3 passes, 64 MiB, 4 lanes): 0.13 s to 0.35 s on a two-core virtual
	// machine, paid once per store.
	DefaultArgon2Params = Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

	// MaxArgon2Params caps what a header may ask for: a tampered header must
	// not make a reader spend minutes or gigabytes before the tag check
	// rejects it.
	MaxArgon2Params = Argon2Params{Time: 10, MemoryKiB: 256 << 10, Threads: 16}
)

const saltSize = 16

func (p Argon2Params) check() error {
	switch {
	case p.Time < 1 || p.Time > MaxArgon2Params.Time:
		return fmt.Errorf("argon2id time %d outside 1..%d", p.Time, MaxArgon2Params.Time)
	case p.Threads < 1 || p.Threads > MaxArgon2Params.Threads:
		return fmt.Errorf("argon2id threads %d outside 1..%d", p.Threads, MaxArgon2Params.Threads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxArgon2Params.MemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB outside %d..%d", p.MemoryKiB, 8*uint32(p.Threads), MaxArgon2Params.MemoryKiB)
	}
	return nil
}

// encode lays out the parameters and salt as stored in a header.
func (p Argon2Params) encode(salt []byte) []byte {
	b := make([]byte, 9, 9+len(salt))
	binary.BigEndian.PutUint32(b[0:4], p.Time)
	binary.BigEndian.PutUint32(b[4:8], p.MemoryKiB)
	b[8] = p.Threads
	return append(b, salt...)
}

func decodeArgon2(b []byte) (Argon2Params, []byte, error) {
	if len(b) != 9+saltSize {
		return Argon2Params{}, nil, errFormat("passphrase parameters are %d bytes, want %d", len(b), 9+saltSize)
	}
	p := Argon2Params{
		Time:      binary.BigEndian.Uint32(b[0:4]),
		MemoryKiB: binary.BigEndian.Uint32(b[4:8]),
		Threads:   b[8],
	}
	if err := p.check(); err != nil {
		return Argon2Params{}, nil, errFormat("refusing passphrase parameters: %v", err)
	}
	return p, b[9:], nil
}

// Passphrase returns a Key derived from a passphrase with argon2id and
// DefaultArgon2Params. See [PassphraseWithParams].
func Passphrase(passphrase []byte) (Key, error) {
	return PassphraseWithParams(passphrase, DefaultArgon2Params)
}

// PassphraseWithParams returns a Key derived from passphrase with argon2id.
//
// Writes use p, whatever the headers of the entries read carry, and one
// salt: that of the first entry written, or of the first entry read whose
// header has parameters p and whose tag verified. So a store costs one
// derivation per process. Entries written with other parameters or salts,
// by other processes or with other settings, are read at the cost of one
// derivation each per process, within [MaxArgon2Params]. Derivations run
// outside any lock: an entry whose key is derived already is never held up
// by another entry's derivation. Together they use no more memory at a time
// than the largest one allowed.
//
// The Key keeps a copy of the passphrase for as long as it is reachable,
// because entries written by other processes may carry other salts; the
// caller may clear its own copy.
func PassphraseWithParams(passphrase []byte, p Argon2Params) (Key, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("storage: empty passphrase")
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	budget := int64(max(MaxArgon2Params.MemoryKiB, p.MemoryKiB))
	return &passphraseKey{pass: append([]byte(nil), passphrase...), params: p, idKey: argon2.IDKey,
		kdf: semaphore.NewWeighted(budget), kdfBudget: budget, derived: make(map[string]*derivation)}, nil
}

type passphraseKey struct {
	pass      []byte
	params    Argon2Params
	kdf       *semaphore.Weighted // KiB of memory for derivations under way
	kdfBudget int64               // kdf's size

	// idKey is argon2.IDKey, the one place a key is derived. Tests of
	// this package replace it on the Key they made, to count the
	// derivations or to watch one under way.
	idKey func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

	mu      sync.Mutex             // guards derived and current; never held while deriving
	derived map[string]*derivation // encoded params and salt → key, derived or under way
	current string                 // encoded params and salt for writes; empty until the first write or authenticated read
}

// derivation is the derivation of one key, under way or done.
type derivation struct {
	done chan struct{} // closed when it ends
	key  []byte        // set before done is closed; nil if it was given up
}

// derive returns the key for p and salt, whose encoding is encoded,
// deriving it once per Key: a caller asking for a key under way waits for
// it, or for ctx; callers asking for other keys do not.
func (k *passphraseKey) derive(ctx context.Context, encoded string, p Argon2Params, salt []byte) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background() // deriving ignored ctx before it could wait: keep nil harmless
	}
	for {
		k.mu.Lock()
		d, ok := k.derived[encoded]
		if !ok {
			d = &derivation{done: make(chan struct{})}
			k.derived[encoded] = d
		}
		k.mu.Unlock()
		if !ok {
			return k.run(ctx, d, encoded, p, salt)
		}
		select {
		case <-d.done:
			if d.key != nil {
				return d.key, nil
			}
			// Its caller gave up waiting for memory: take its place.
		case <-ctx.Done():
			return nil, fmt.Errorf("derive key from passphrase: %w", ctx.Err())
		}
	}
}

// run derives d's key, once the memory it needs is free.
func (k *passphraseKey) run(ctx context.Context, d *derivation, encoded string, p Argon2Params, salt []byte) ([]byte, error) {
	defer close(d.done)
	w := min(int64(p.MemoryKiB), k.kdfBudget)
	if err := k.kdf.Acquire(ctx, w); err != nil {
		k.mu.Lock()
		delete(k.derived, encoded)
		k.mu.Unlock()
		return nil, fmt.Errorf("derive key from passphrase: %w", err)
	}
	defer k.kdf.Release(w)
	d.key = k.idKey(k.pass, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	return d.key, nil
}

func (k *passphraseKey) sealing(ctx context.Context, _ keyEnv) (keyMaterial, error) {
	k.mu.Lock()
	if k.current == "" {
		salt := make([]byte, saltSize)
		if _, err := rand.Read(salt); err != nil {
			k.mu.Unlock()
			return keyMaterial{}, fmt.Errorf("storage: salt: %w", err)
		}
		k.current = string(k.params.encode(salt))
	}
	encoded := k.current
	k.mu.Unlock()
	key, err := k.derive(ctx, encoded, k.params, []byte(encoded[len(encoded)-saltSize:]))
	if err != nil {
		return keyMaterial{}, err
	}
	return keyMaterial{kind: kindPassphrase, params: []byte(encoded), key: key}, nil
}

func (k *passphraseKey) opening(ctx context.Context, _ keyEnv, h *header) ([]byte, error) {
	if h.kind != kindPassphrase {
		return nil, wrongKind(h, kindPassphrase)
	}
	p, salt, err := decodeArgon2(h.params)
	if err != nil {
		return nil, err
	}
	return k.derive(ctx, string(h.params), p, salt)
}

// authenticated hears that the tag of an entry with header h verified. If
// h has the Key's own parameters and writes have no salt yet, they take
// h's: its key is derived already. Nothing in a header is used for writes
// before its tag verifies.
func (k *passphraseKey) authenticated(h *header) {
	if p, _, err := decodeArgon2(h.params); err != nil || p != k.params {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current == "" {
		k.current = string(h.params)
	}
}

// KeyringKey returns a Key that is a random 256-bit key kept in the OS
// keyring under service and user, created on the first write. The key is
// read from the keyring once and then kept in memory.
//
// If the keyring entry is deleted, or replaced, entries written under the old
// key cannot be read: loading them fails with an error matching ErrKeyLost,
// and the user must log in again. If the keyring cannot be reached, errors
// match ErrUnavailable. opts may be nil; its Backend and Timeout are used.
func KeyringKey(service, user string, opts *KeyringOptions) (Key, error) {
	if service == "" || user == "" {
		return nil, errors.New("storage: keyring key needs a service and a user name")
	}
	o := opts.withDefaults()
	return &keyringKey{service: service, user: user, backend: o.Backend, timeout: o.Timeout}, nil
}

type keyringKey struct {
	service, user string
	backend       KeyringBackend
	timeout       time.Duration

	mu  sync.Mutex // guards key
	key []byte
}

// fetch reads the key from the keyring: (nil, nil) when there is none.
func (k *keyringKey) fetch(ctx context.Context) ([]byte, error) {
	v, err := callBackend(ctx, k.timeout, func() (string, error) { return k.backend.Get(k.service, k.user) })
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: read key %s/%s from keyring: %w", k.service, k.user, err)
	}
	key, err := decodeKeyText(v)
	if err != nil {
		return nil, fmt.Errorf("storage: key %s/%s in keyring is unusable (%v): %w", k.service, k.user, err, ErrKeyLost)
	}
	return key, nil
}

func (k *keyringKey) sealing(ctx context.Context, env keyEnv) (keyMaterial, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key == nil {
		key, err := k.fetchOrCreate(ctx, env)
		if err != nil {
			return keyMaterial{}, err
		}
		k.key = key
	}
	return keyMaterial{kind: kindKeyring, key: k.key}, nil
}

// fetchOrCreate creates the key under the store's lock, so that two processes
// writing their first entry at once do not each create a key.
func (k *keyringKey) fetchOrCreate(ctx context.Context, env keyEnv) ([]byte, error) {
	if key, err := k.fetch(ctx); key != nil || err != nil {
		return key, err
	}
	unlock, err := env.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if key, err := k.fetch(ctx); key != nil || err != nil {
		return key, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("storage: key: %w", err)
	}
	_, err = callBackend(ctx, k.timeout, func() (string, error) {
		return "", k.backend.Set(k.service, k.user, base64.StdEncoding.EncodeToString(key))
	})
	if err != nil {
		return nil, fmt.Errorf("storage: save new key %s/%s in keyring: %w", k.service, k.user, err)
	}
	return key, nil
}

func (k *keyringKey) opening(ctx context.Context, _ keyEnv, h *header) ([]byte, error) {
	if h.kind != kindKeyring {
		return nil, wrongKind(h, kindKeyring)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil && keyID(k.key) == h.keyID {
		return k.key, nil
	}
	key, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("storage: the keyring entry %s/%s holding the key is gone: %w", k.service, k.user, ErrKeyLost)
	}
	k.key = key
	if keyID(key) != h.keyID {
		return nil, fmt.Errorf("storage: the keyring entry %s/%s holds another key than the one this entry was encrypted with: %w", k.service, k.user, ErrKeyLost)
	}
	return key, nil
}
