package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/tokenkeep/tokenkeep/storage"
)

// Key names carry a hash of the entry's name, which is often a user's
// address; List needs the name itself. Each write keeps it beside the
// record, sealed with the store's key like the record, so that Redis holds
// no name in clear. storage.Seal is the only authenticated encryption a
// storage.Key offers outside package storage, so the name travels as the
// reason of an ended record (in base64, which JSON keeps byte for byte) that
// nothing else reads, under an associated name of its own.

// nameAD is the name storage.Seal binds a sealed entry name to.
func nameAD(hash string) string { return "redisstore entry name " + hash }

// sealName returns name sealed for the entry whose keys are k.
func (s *Store) sealName(ctx context.Context, k entryKeys, name string) ([]byte, error) {
	r := &storage.Record{Generation: 1, State: storage.Ended, Reason: base64.RawURLEncoding.EncodeToString([]byte(name))}
	return storage.Seal(ctx, s.key, nameAD(k.hash), r)
}

// openName returns the name sealed in b for the entry whose hash is hash,
// after checking that the name hashes to it.
func (s *Store) openName(ctx context.Context, hash string, b []byte) (string, error) {
	if len(b) > maxSealedName {
		return "", fmt.Errorf("sealed name larger than %d bytes: %w", maxSealedName, storage.ErrCorrupt)
	}
	r, err := storage.Open(ctx, s.key, nameAD(hash), b)
	if err != nil {
		return "", err
	}
	raw, err := base64.RawURLEncoding.DecodeString(r.Reason)
	if err != nil {
		return "", fmt.Errorf("sealed name is not base64: %w", storage.ErrCorrupt)
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:hashBytes]) != hash {
		return "", fmt.Errorf("sealed name belongs to another entry: %w", storage.ErrCorrupt)
	}
	return string(raw), nil
}
