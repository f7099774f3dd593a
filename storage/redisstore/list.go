package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeep/tokenkeep/storage"
)

// listBatch is the COUNT hint of each SCAN call, and so the most names one
// pipelined read fetches.
const listBatch = 512

// List implements storage.Lister: it calls yield with the name of every
// entry under the store's prefix, found with SCAN (never KEYS) on every
// primary, and read in one pipelined, size-bounded call per batch. Entries
// last written by the previous release, which kept no name, are listed once
// this release has saved them. An entry whose name cannot be read (another
// key, tampering) is skipped, and List then returns an error matching
// storage.ErrCorrupt that counts them, after visiting the others.
//
// Each Redis call is bounded by OpTimeout; List as a whole by ctx only.
func (s *Store) List(ctx context.Context, yield func(name string) bool) error {
	nodes, err := s.primaries(ctx)
	if err != nil {
		return classify(ctx, "list", s.opt.Prefix, err)
	}
	match := globEscape(s.opt.Prefix) + "{*}:name"
	seen := make(map[string]struct{})
	var bad int
	var firstBad error
	for _, c := range nodes {
		var cursor uint64
		for {
			var keys []string
			err := s.do(ctx, func(ctx context.Context) (err error) {
				keys, cursor, err = c.Scan(ctx, cursor, match, listBatch).Result()
				return err
			})
			if err != nil {
				return classify(ctx, "list", s.opt.Prefix, err)
			}
			hashes, blobs, err := s.readNames(ctx, c, keys, seen)
			if err != nil {
				return err
			}
			for i, b := range blobs {
				var name string
				if b.err == nil {
					if len(b.val) == 0 {
						continue // deleted since SCAN saw it
					}
					name, b.err = s.openName(ctx, hashes[i], []byte(b.val))
				}
				if b.err != nil {
					bad++
					if firstBad == nil {
						firstBad = b.err
					}
					continue
				}
				if !yield(name) {
					return nil
				}
			}
			if cursor == 0 {
				break
			}
		}
	}
	if bad > 0 {
		return fmt.Errorf("redisstore: list %q: %d entries skipped, their names unreadable: %w (first: %v)",
			s.opt.Prefix, bad, storage.ErrCorrupt, firstBad)
	}
	return nil
}

// blob is one name key's content, or the error Redis answered for it.
type blob struct {
	val string
	err error
}

// readNames reads, in one pipeline, at most maxSealedName+1 bytes of each
// name key among keys that has the store's layout and was not seen yet,
// and returns their hashes and contents ("" for a key deleted since).
func (s *Store) readNames(ctx context.Context, c redis.Cmdable, keys []string, seen map[string]struct{}) ([]string, []blob, error) {
	var hashes, names []string
	for _, k := range keys {
		h, ok := s.hashOf(k)
		if !ok {
			continue
		}
		if _, dup := seen[h]; dup {
			continue // SCAN may return a key twice
		}
		seen[h] = struct{}{}
		hashes = append(hashes, h)
		names = append(names, k)
	}
	if len(names) == 0 {
		return nil, nil, nil
	}
	var cmds []redis.Cmder
	err := s.do(ctx, func(ctx context.Context) (err error) {
		cmds, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range names {
				p.GetRange(ctx, k, 0, maxSealedName)
			}
			return nil
		})
		return err
	})
	if err != nil && (len(cmds) != len(names) || transient(err)) {
		return nil, nil, classify(ctx, "list", s.opt.Prefix, err)
	}
	blobs := make([]blob, len(cmds))
	for i, cmd := range cmds {
		v, err := cmd.(*redis.StringCmd).Result()
		blobs[i] = blob{val: v, err: err}
	}
	return hashes, blobs, nil
}

// hashOf returns the hash in key when key is an entry's name key,
// "<prefix>{<hash>}:name".
func (s *Store) hashOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.opt.Prefix+"{")
	if !ok {
		return "", false
	}
	h, ok := strings.CutSuffix(rest, "}:name")
	if !ok || len(h) != 2*hashBytes {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil || strings.ToLower(h) != h {
		return "", false
	}
	return h, true
}

// primaries returns the clients to SCAN: every primary of a Cluster, every
// shard of a Ring, or the client itself.
func (s *Store) primaries(ctx context.Context) ([]redis.Cmdable, error) {
	var (
		mu    sync.Mutex
		nodes []redis.Cmdable
	)
	collect := func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		nodes = append(nodes, c)
		mu.Unlock()
		return nil
	}
	var err error
	switch c := s.c.(type) {
	case *redis.ClusterClient:
		err = s.do(ctx, func(ctx context.Context) error { return c.ForEachMaster(ctx, collect) })
	case *redis.Ring:
		err = s.do(ctx, func(ctx context.Context) error { return c.ForEachShard(ctx, collect) })
	default:
		return []redis.Cmdable{s.c}, nil
	}
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(nodes) == 0 {
		return nil, errors.New("no primary to scan")
	}
	return nodes, nil
}

// globEscape quotes the characters SCAN's MATCH gives a meaning to.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
