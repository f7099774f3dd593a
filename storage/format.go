package storage

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// The encrypted entry format, versions 1 and 2. All integers are big-endian.
//
//	offset  size  field
//	0       4     magic "TKKF"
//	4       1     format version (2; 1 is still read)
//	5       1     key kind: 1 raw key, 2 key kept in the OS keyring, 3 passphrase (argon2id)
//	6       8     key id: the first 8 bytes of SHA-256("tokenkeep key id v1" || key)
//	14      2     length L of the key parameters
//	16      L     key parameters (passphrase: time u32, memory KiB u32, threads u8, salt 16 bytes)
//	16+L    12    nonce, fresh and random for every write
//	28+L    ...   AES-256-GCM ciphertext, with its 16-byte tag, of the encoded
//	              record (version 2) or of the encoded token (version 1)
//
// The associated data is the whole header (bytes 0 to 28+L, nonce included)
// followed by a zero byte and the entry's name, so that no header field can be
// altered and a file copied to another entry's name does not open.
//
// The key id lets a reader tell "another key" from "tampered" in its error
// message; it reveals nothing that the tag does not already let an attacker
// test, and it costs a passphrase guesser the same KDF run.
const (
	formatMagic   = "TKKF"
	formatVersion = recordVersion // written; version 1 is read too
	fixedHeader   = 16
	nonceSize     = 12
	tagSize       = 16
	keyIDSize     = 8

	// maxEntrySize bounds what a reader accepts before decrypting anything.
	// Tokens are a few kilobytes; 1 MiB leaves room for large id_tokens.
	maxEntrySize = 1 << 20
)

// keyKind says where a file's key comes from.
type keyKind byte

const (
	kindRaw        keyKind = 1
	kindKeyring    keyKind = 2
	kindPassphrase keyKind = 3
)

func (k keyKind) String() string {
	switch k {
	case kindRaw:
		return "raw key"
	case kindKeyring:
		return "keyring-held key"
	case kindPassphrase:
		return "passphrase"
	}
	return fmt.Sprintf("unknown key kind %d", byte(k))
}

// header is the parsed, not yet authenticated, header of an entry.
type header struct {
	version byte
	kind    keyKind
	keyID   [keyIDSize]byte
	params  []byte
	nonce   []byte
	raw     []byte // the header bytes, nonce included
}

// errFormat wraps ErrCorrupt with the check that failed.
func errFormat(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// parseHeader splits b into header and ciphertext. It checks structure only;
// nothing is trusted until the tag is.
func parseHeader(b []byte) (*header, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errFormat("empty file")
	}
	if len(b) > maxEntrySize {
		return nil, nil, errFormat("file larger than %d bytes", maxEntrySize)
	}
	if len(b) < fixedHeader {
		return nil, nil, errFormat("file truncated to %d bytes, shorter than a header", len(b))
	}
	if string(b[:4]) != formatMagic {
		return nil, nil, errFormat("not a tokenkeep file (bad magic)")
	}
	v := b[4]
	if v != 1 && v != formatVersion {
		return nil, nil, errFormat("format version %d is not supported by this version of tokenkeep (it reads versions 1 to %d)", v, formatVersion)
	}
	h := &header{version: v, kind: keyKind(b[5])}
	copy(h.keyID[:], b[6:14])
	n := int(binary.BigEndian.Uint16(b[14:16]))
	end := fixedHeader + n + nonceSize
	if len(b) < end+tagSize {
		return nil, nil, errFormat("file truncated to %d bytes", len(b))
	}
	h.params = b[fixedHeader : fixedHeader+n]
	h.nonce = b[fixedHeader+n : end]
	h.raw = b[:end]
	return h, b[end:], nil
}

// keyID identifies a key without revealing it.
func keyID(key []byte) (id [keyIDSize]byte) {
	h := sha256.New()
	h.Write([]byte("tokenkeep key id v1"))
	h.Write(key)
	copy(id[:], h.Sum(nil))
	return id
}

// associatedData binds the header and the entry's name.
func associatedData(hdr []byte, name string) []byte {
	ad := make([]byte, 0, len(hdr)+1+len(name))
	ad = append(ad, hdr...)
	ad = append(ad, 0)
	return append(ad, name...)
}

// sealBytes encrypts plaintext for the entry name under key, described by kind and
// params in the header.
func sealBytes(kind keyKind, params, key []byte, name string, plaintext []byte) ([]byte, error) {
	if len(params) > 0xffff {
		return nil, errors.New("storage: key parameters too long")
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, fixedHeader, fixedHeader+len(params)+nonceSize+len(plaintext)+tagSize)
	copy(out, formatMagic)
	out[4] = formatVersion
	out[5] = byte(kind)
	id := keyID(key)
	copy(out[6:14], id[:])
	binary.BigEndian.PutUint16(out[14:16], uint16(len(params)))
	out = append(out, params...)
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("storage: nonce: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, associatedData(out, name)), nil
}

// openBytes authenticates and decrypts ciphertext whose header h was read from the
// entry name.
func openBytes(h *header, ciphertext, key []byte, name string) ([]byte, error) {
	if keyID(key) != h.keyID {
		return nil, errFormat("encrypted with another key or passphrase")
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, h.nonce, ciphertext, associatedData(h.raw, name))
	if err != nil {
		return nil, errFormat("message authentication failed: the file was altered or belongs to another entry")
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("storage: key is %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return cipher.NewGCM(block)
}

// seal encodes and encrypts r for the entry name.
func seal(ctx context.Context, k Key, env keyEnv, name string, r *Record) ([]byte, error) {
	pt, err := encodeRecord(r)
	if err != nil {
		return nil, err
	}
	m, err := k.sealing(ctx, env)
	if err != nil {
		return nil, err
	}
	b, err := sealBytes(m.kind, m.params, m.key, name, pt)
	if err == nil && len(b) > maxEntrySize {
		return nil, fmt.Errorf("%w: sealed, it is %d bytes; a load accepts at most %d", ErrTooLarge, len(b), maxEntrySize)
	}
	return b, err
}

// unseal authenticates, decrypts and decodes what seal wrote for name. A
// version 1 entry, which held a bare token, is read as generation 1.
func unseal(ctx context.Context, k Key, env keyEnv, name string, b []byte) (*Record, error) {
	h, ct, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	kb, err := k.opening(ctx, env, h)
	if err != nil {
		return nil, err
	}
	pt, err := openBytes(h, ct, kb, name)
	if err != nil {
		return nil, err
	}
	if a, ok := k.(authenticator); ok {
		a.authenticated(h) // only now may the header's parameters be trusted
	}
	if h.version == formatVersion {
		return decodeRecord(pt)
	}
	t, err := tokencodec.Decode(pt)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	return legacyRecord(t), nil
}

// processKeyLocks serialises key creation for Seal callers, which have no
// lock file: within one process only.
var processKeyLocks lockSet

func processEnv() keyEnv {
	return keyEnv{lock: func(ctx context.Context) (func() error, error) {
		return processKeyLocks.lockLocal(ctx, "\x00key")
	}}
}

// Seal encodes r and encrypts it for the entry name in the file store's
// format (see the package documentation), for stores that keep the bytes
// elsewhere, such as a shared database. Only Open with the same name and key
// recovers it.
//
// A [KeyringKey] used through Seal is created, on first use, under an
// in-process lock only: create it once, before several machines or
// processes seal with it, or share a raw key instead.
func Seal(ctx context.Context, key Key, name string, r *Record) ([]byte, error) {
	if err := checkArgs(ctx, key); err != nil {
		return nil, fmt.Errorf("storage: seal %q: %w", name, err)
	}
	b, err := seal(ctx, key, processEnv(), name, r)
	if err != nil {
		return nil, fmt.Errorf("storage: seal %q: %w", name, err)
	}
	return b, nil
}

// Open authenticates, decrypts and decodes what Seal produced for name. Its
// errors match ErrCorrupt, ErrKeyLost or ErrUnavailable as the file store's
// do.
func Open(ctx context.Context, key Key, name string, b []byte) (*Record, error) {
	if err := checkArgs(ctx, key); err != nil {
		return nil, fmt.Errorf("storage: open %q: %w", name, err)
	}
	r, err := unseal(ctx, key, processEnv(), name, b)
	if err != nil {
		return nil, fmt.Errorf("storage: open %q: %w", name, err)
	}
	return r, nil
}

// checkArgs refuses what Seal and Open cannot work with.
func checkArgs(ctx context.Context, key Key) error {
	switch {
	case ctx == nil:
		return errors.New("nil context")
	case key == nil:
		return errors.New("nil key")
	}
	return nil
}
