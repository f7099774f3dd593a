package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File is a Store and Locker that keeps each entry in its own encrypted file
// in one directory. See the package documentation for the format and the
// guarantees.
//
// One file per entry, rather than one file for all: a write replaces one
// small file atomically, so entries never contend with each other, a corrupt
// or tampered file costs one session and not all of them, and each entry's
// lock file serialises exactly the processes that share that entry.
//
// A File is safe for concurrent use, by goroutines and by processes sharing
// the directory.
type File struct {
	dir   string
	key   Key
	locks lockSet
}

// NewFile returns a File store in dir, which is created with mode 0700 if
// it does not exist. A directory that others can write to is refused: they
// could replace the files in it.
func NewFile(dir string, key Key) (*File, error) {
	if dir == "" {
		return nil, errors.New("storage: file store needs a directory")
	}
	if key == nil {
		return nil, errors.New("storage: file store needs a key")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create directory: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("storage: %s is not a directory", abs)
	}
	if err := checkDir(abs, fi); err != nil {
		return nil, err
	}
	return &File{dir: abs, key: key}, nil
}

// Dir returns the store's directory.
func (f *File) Dir() string { return f.dir }

// fileName maps an entry's name to a file name. Names made of letters,
// digits and ".-_@" (not starting with a dot) are used as they are, so that
// a directory listing is readable; others become a hash, which cannot collide
// with a plain name because it starts with "~".
func fileName(key string) string {
	plain := key != "" && len(key) <= 128 && key[0] != '.'
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '@') {
			plain = false
			break
		}
	}
	if plain {
		return key + ".tok"
	}
	sum := sha256.Sum256([]byte(key))
	return "~" + hex.EncodeToString(sum[:20]) + ".tok"
}

// Path returns the path of the file that holds key.
func (f *File) Path(key string) string { return filepath.Join(f.dir, fileName(key)) }

func (f *File) errorf(key, op string, err error) error {
	return fmt.Errorf("storage: file entry %q: %s: %w", key, op, err)
}

func (f *File) keyEnv() keyEnv {
	return keyEnv{lock: func(ctx context.Context) (func() error, error) {
		return f.locks.lock(ctx, "\x00key", filepath.Join(f.dir, ".key.lock"))
	}}
}

// Load implements Store. A file that is not the user's own, or that others
// can read, is refused; a file that fails authentication yields an error
// matching ErrCorrupt; a keyring-held key that is gone, ErrKeyLost. A
// version 1 file, written before records had generations, loads as
// generation 1; the next save writes version 2.
func (f *File) Load(ctx context.Context, key string) (*Record, error) {
	b, err := f.read(key)
	if err != nil {
		return nil, err
	}
	r, err := unseal(ctx, f.key, f.keyEnv(), key, b)
	if err != nil {
		return nil, f.errorf(key, "decrypt", err)
	}
	return r, nil
}

// generation returns the generation stored under key: 0 when there is no
// entry. An entry that cannot be read has no known generation, and no
// conditional write can follow it.
func (f *File) generation(ctx context.Context, key string) (uint64, error) {
	r, err := f.Load(ctx, key)
	switch {
	case err == nil:
		return r.Generation, nil
	case errors.Is(err, ErrNotFound):
		return 0, nil
	default:
		return 0, err
	}
}

// read returns the file's bytes after checking what it is and who owns it.
func (f *File) read(key string) ([]byte, error) {
	path := f.Path(key)
	fd, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, f.errorf(key, "read", ErrNotFound)
	}
	if err != nil {
		return nil, f.errorf(key, "read", err)
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, f.errorf(key, "read", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, f.errorf(key, "read", fmt.Errorf("%s is not a regular file", path))
	}
	if err := checkFile(path, fi); err != nil {
		return nil, f.errorf(key, "read", err)
	}
	b, err := io.ReadAll(io.LimitReader(fd, maxEntrySize+1))
	if err != nil {
		return nil, f.errorf(key, "read", err)
	}
	return b, nil
}

// Save implements Store. It reads the stored generation and replaces the
// entry only if r follows it, all under the entry's lock file (taken for
// the write unless this process holds it), so that no other process writes
// in between. The file is replaced atomically and durably: the new content
// is written to a temporary file in the same directory, synced, renamed over
// the old file, and the directory is synced. A crash at any moment leaves
// the old record or the new one, never a mixture.
func (f *File) Save(ctx context.Context, key string, r *Record) error {
	if err := r.Validate(); err != nil {
		return f.errorf(key, "save", fmt.Errorf("refusing to save: %w", err))
	}
	b, err := seal(ctx, f.key, f.keyEnv(), key, r)
	if err != nil {
		return f.errorf(key, "encrypt", err)
	}
	name := fileName(key)
	return f.locks.write(ctx, key, f.lockPath(key), false, func() error {
		cur, err := f.generation(ctx, key)
		if err != nil {
			return err
		}
		if err := checkGeneration(cur, r); err != nil {
			return f.errorf(key, "save", err)
		}
		if err := writeAtomic(f.dir, name, b); err != nil {
			return f.errorf(key, "save", err)
		}
		removeStaleTemps(f.dir, name, time.Now())
		return nil
	})
}

// lockPath is the path of key's lock file.
func (f *File) lockPath(key string) string { return f.Path(key) + ".lock" }

// staleTemp is the age after which a temporary file is taken to be left by
// a writer that crashed between creating and renaming it. A live write takes
// milliseconds; the margin keeps a stalled one in another process safe.
const staleTemp = 10 * time.Minute

// tempPrefix starts the names of name's temporary files.
func tempPrefix(name string) string { return "." + name + ".tmp-" }

// removeStaleTemps deletes the temporary files of name that crashed writers
// left behind, so that they do not pile up. It is best effort: a file it
// cannot remove now is tried again on the next save.
func removeStaleTemps(dir, name string, now time.Time) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	prefix := tempPrefix(name)
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		p := filepath.Join(dir, n)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) > staleTemp {
			os.Remove(p)
		}
	}
}

// writeAtomic replaces dir/name with b.
func writeAtomic(dir, name string, b []byte) (err error) {
	tmp, err := os.CreateTemp(dir, tempPrefix(name)+"*") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	// On Unix rename(2) replaces the target atomically. On Windows os.Rename
	// uses MoveFileEx with MOVEFILE_REPLACE_EXISTING, which NTFS performs as
	// one metadata operation; it fails while another process has the target
	// open without FILE_SHARE_DELETE, and Save then returns that error
	// (Go opens files with FILE_SHARE_DELETE, so tokenkeep's own readers do not
	// cause it).
	if err = os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// Delete implements Store, under the entry's lock file like Save. The lock
// file stays.
func (f *File) Delete(ctx context.Context, key string) error {
	return f.locks.write(ctx, key, f.lockPath(key), true, func() error {
		err := os.Remove(f.Path(key))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return f.errorf(key, "delete", err)
		}
		if err := syncDir(f.dir); err != nil {
			return f.errorf(key, "delete", err)
		}
		return nil
	})
}

// Lock implements Locker. It takes an in-process lock on key, then an
// exclusive lock on the entry's lock file (its file name plus ".lock"),
// polling every few milliseconds until ctx is done. The lock file is
// created 0600 and never deleted. The operating system releases the lock
// when its holder exits, even by SIGKILL; on NFS, see the package
// documentation.
func (f *File) Lock(ctx context.Context, key string) (func() error, error) {
	unlock, err := f.locks.lock(ctx, key, f.lockPath(key))
	if err != nil {
		return nil, f.errorf(key, "lock", err)
	}
	return unlock, nil
}
