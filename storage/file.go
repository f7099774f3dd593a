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

// File is a Store, Locker, Lister and GenerationWaiter that keeps each
// entry in its own encrypted file in one directory. See the package documentation for the
// format and the guarantees.
//
// One file per entry, rather than one file for all: a write replaces one
// small file atomically, so entries never contend with each other, a corrupt
// or tampered file costs one session and not all of them, and each entry's
// lock file serialises exactly the processes that share that entry. Loading
// or saving an entry costs the same whatever the number of entries: nothing
// reads the whole directory except NewFile (at most once every ten minutes,
// to sweep up what crashed writers left) and List.
//
// A File is safe for concurrent use, by goroutines and by processes sharing
// the directory.
type File struct {
	dir   string
	dirf  *os.File // the directory, held open so that every use can check it cheaply
	key   Key
	locks lockSet
}

// NewFile returns a File store in dir, which is created with mode 0700 if
// it does not exist.
//
// On Unix the directory must be the user's own and have mode 0700. One that
// group or others may only read or search (0755, as a umask of 022 makes,
// or t.TempDir) is set to 0700; one that they may write to is refused, since
// they may already have replaced its files. So is a
// directory with a parent that others could use to replace it: every
// directory above it, on the path as given and on the path with symbolic
// links resolved, must be owned by root or the user and must not be
// writable by group or others unless it has the sticky bit (as /tmp does).
// The directory's owner and mode are checked again on every load and save.
// See the package documentation, "File permissions".
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
	if err := checkAncestors(abs); err != nil {
		return nil, err
	}
	d, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := tighten(d); err != nil {
		d.Close()
		return nil, fmt.Errorf("storage: directory %s: %w", abs, err)
	}
	f := &File{dir: abs, dirf: d, key: key}
	if err := f.checkDir(); err != nil {
		d.Close()
		return nil, err
	}
	f.sweep(time.Now())
	return f, nil
}

// checkDir checks the store's directory before a use: it must still be
// the directory NewFile opened, at the same path, with an acceptable owner
// and mode. It costs an fstat and a stat.
func (f *File) checkDir() error {
	fi, err := f.dirf.Stat()
	if err != nil {
		return fmt.Errorf("storage: directory %s: %w", f.dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("storage: %s is not a directory", f.dir)
	}
	if err := checkDir(f.dir, fi); err != nil {
		return err
	}
	now, err := os.Stat(f.dir)
	if err != nil || !os.SameFile(fi, now) {
		return fmt.Errorf("storage: directory %s was moved or replaced after the store was opened; open the store again", f.dir)
	}
	return nil
}

// Dir returns the store's directory.
func (f *File) Dir() string { return f.dir }

// fileName maps an entry's name to a file name. Names made of letters,
// digits and ".-_@" (not starting with a dot) are used as they are, so that
// a directory listing is readable; others become a hash, which cannot collide
// with a plain name because it starts with "~".
func fileName(key string) string {
	if hasPlainName(key) {
		return key + ".tok"
	}
	return hashedName(key) + ".tok"
}

// hasPlainName reports whether key is its own file name.
func hasPlainName(key string) bool {
	if key == "" || len(key) > 128 || key[0] == '.' {
		return false
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '@') {
			return false
		}
	}
	return true
}

func hashedName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "~" + hex.EncodeToString(sum[:20])
}

// nameFile is the file that records the name of an entry whose file name
// is a hash, so that List can name it: "~<hash>.name", holding the name.
// It is "" for a plain name.
func nameFile(key string) string {
	if hasPlainName(key) {
		return ""
	}
	return hashedName(key) + ".name"
}

// recordName writes key's name file if it needs one and has none. Only the
// first save of an entry (or the first by this version) writes it.
func (f *File) recordName(key string) error {
	n := nameFile(key)
	if n == "" {
		return nil
	}
	if fi, err := os.Lstat(filepath.Join(f.dir, n)); err == nil && fi.Mode().IsRegular() {
		return nil
	}
	return writeAtomic(f.dir, n, []byte(key))
}

// List implements Lister: it reads the directory, so its cost grows with
// the number of entries. An entry whose name is hashed is listed through
// its name file; one written by version 1 of the format has none until it
// is saved again, and is left out until then.
func (f *File) List(ctx context.Context, yield func(key string) bool) error {
	if err := f.checkDir(); err != nil {
		return fmt.Errorf("storage: list: %w", err)
	}
	d, err := os.Open(f.dir)
	if err != nil {
		return fmt.Errorf("storage: list: %w", err)
	}
	defer d.Close()
	for {
		names, rerr := d.Readdirnames(1024)
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			key, ok := f.entryKey(n)
			if ok && !yield(key) {
				return nil
			}
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("storage: list: %w", rerr)
		}
	}
}

// entryKey returns the entry name of the directory entry n, if it is an
// entry's file.
func (f *File) entryKey(n string) (string, bool) {
	if !strings.HasSuffix(n, ".tok") || strings.HasPrefix(n, ".") {
		return "", false
	}
	key := strings.TrimSuffix(n, ".tok")
	if strings.HasPrefix(n, "~") {
		b, err := os.ReadFile(filepath.Join(f.dir, key+".name"))
		if err != nil || len(b) > 64<<10 {
			return "", false
		}
		key = string(b)
	}
	return key, fileName(key) == n
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
	if err := f.checkDir(); err != nil {
		return nil, f.errorf(key, "read", err)
	}
	return f.load(ctx, key)
}

// load is Load without the directory check.
func (f *File) load(ctx context.Context, key string) (*Record, error) {
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
	return generationOf(f.load(ctx, key))
}

// WaitPoll is how often [File.WaitGeneration] looks at an entry's file.
const WaitPoll = 5 * time.Millisecond

// WaitGeneration implements GenerationWaiter. No portable notification
// tells a process that another wrote a file, so it polls: every WaitPoll it
// stats the entry's file, which costs one system call, and reads and
// decrypts the entry only when the file changed. A save always changes it:
// it renames a new file over the old one.
func (f *File) WaitGeneration(ctx context.Context, key string, after uint64) (uint64, error) {
	if err := f.checkDir(); err != nil {
		return 0, f.errorf(key, "wait", err)
	}
	path := f.Path(key)
	var last fs.FileInfo
	t := time.NewTicker(WaitPoll)
	defer t.Stop()
	for first := true; ; first = false {
		fi, err := os.Lstat(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, f.errorf(key, "wait", err)
		}
		if first || !sameStamp(last, fi) {
			last = fi
			gen, err := f.generation(ctx, key)
			if err != nil {
				return 0, err
			}
			if gen != after {
				return gen, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, f.errorf(key, "wait", ctx.Err())
		}
	}
}

// sameStamp reports whether a and b describe the same version of a file:
// both missing, or the same file with the same size and modification time.
func sameStamp(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// read returns the file's bytes after checking what it is and who owns it.
// It never blocks on what is not a regular file (a FIFO, a device) and
// never follows a symbolic link: the open neither waits nor follows, and
// the type is checked on the open handle before anything is read.
func (f *File) read(key string) ([]byte, error) {
	path := f.Path(key)
	fd, err := os.OpenFile(path, openEntryFlags, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, f.errorf(key, "read", ErrNotFound)
	}
	if err != nil {
		return nil, f.errorf(key, "read", refuseLink(path, err))
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, f.errorf(key, "read", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, f.errorf(key, "read", fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type()))
	}
	if err := checkFile(path, fi); err != nil {
		return nil, f.errorf(key, "read", err)
	}
	if fi.Size() > maxEntrySize {
		return nil, f.errorf(key, "read", errFormat("file larger than %d bytes", maxEntrySize))
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
//
// A record whose sealed form is larger than a load accepts (1 MiB) is
// refused with an error matching ErrTooLarge, and nothing is written.
func (f *File) Save(ctx context.Context, key string, r *Record) error {
	if err := r.Validate(); err != nil {
		return f.errorf(key, "save", fmt.Errorf("refusing to save: %w", err))
	}
	if err := f.checkDir(); err != nil {
		return f.errorf(key, "save", err)
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
		if err := f.recordName(key); err != nil {
			return f.errorf(key, "save", err)
		}
		if err := writeAtomic(f.dir, name, b); err != nil {
			return f.errorf(key, "save", err)
		}
		return nil
	})
}

// lockPath is the path of key's lock file.
func (f *File) lockPath(key string) string { return f.Path(key) + ".lock" }

// staleTemp is the age after which a temporary file is taken to be left by
// a writer that crashed between creating and renaming it. A live write takes
// milliseconds; the margin keeps a stalled one in another process safe.
const staleTemp = 10 * time.Minute

// tempName is the name of name's temporary file. Only a writer holding the
// entry's lock writes the entry, so one fixed name per entry is enough, and
// a crashed writer leaves at most that one file, which the entry's next
// save replaces and Delete removes, without reading the directory.
func tempName(name string) string { return "." + name + ".tmp" }

// isTemp reports whether a directory entry is a temporary file: this
// version's, or one of version 1's (".<name>.tmp-<random>").
func isTemp(n string) bool {
	return strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".tmp") || strings.Contains(n, ".tmp-"))
}

// sweepStamp is the file whose modification time says when the directory
// was last swept.
const sweepStamp = ".swept"

// sweep deletes the temporary files that crashed writers left behind and
// that are older than staleTemp, at most once per staleTemp for all the
// processes that share the directory, so that a directory of many entries
// is not read at every start. It is best effort.
func (f *File) sweep(now time.Time) {
	stamp := filepath.Join(f.dir, sweepStamp)
	if fi, err := os.Lstat(stamp); err == nil && now.Sub(fi.ModTime()) < staleTemp {
		return
	}
	if fd, err := os.OpenFile(stamp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
		fd.Close()
		os.Chtimes(stamp, now, now)
	}
	d, err := os.Open(f.dir)
	if err != nil {
		return
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			if !isTemp(n) {
				continue
			}
			p := filepath.Join(f.dir, n)
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) > staleTemp {
				os.Remove(p)
			}
		}
		if err != nil {
			return
		}
	}
}

// writeAtomic replaces dir/name with b, through name's temporary file. The
// caller holds the entry's lock.
func writeAtomic(dir, name string, b []byte) (err error) {
	tmpPath := filepath.Join(dir, tempName(name))
	if err := os.Remove(tmpPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpPath)
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
	if err = os.Rename(tmpPath, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// Delete implements Store, under the entry's lock file like Save. It
// removes the entry's file, the temporary file a crashed writer may have
// left, the file that records a hashed entry's name, and the lock file.
func (f *File) Delete(ctx context.Context, key string) error {
	if err := f.checkDir(); err != nil {
		return f.errorf(key, "delete", err)
	}
	return f.locks.write(ctx, key, f.lockPath(key), true, func() error {
		name := fileName(key)
		for _, p := range []string{name, tempName(name), nameFile(key)} {
			if p == "" {
				continue
			}
			err := os.Remove(filepath.Join(f.dir, p))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return f.errorf(key, "delete", err)
			}
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
// created 0600 and removed with the entry by Delete (except on Windows).
// The operating system releases the lock
// when its holder exits, even by SIGKILL; on NFS, see the package
// documentation.
func (f *File) Lock(ctx context.Context, key string) (func() error, error) {
	unlock, err := f.locks.lock(ctx, key, f.lockPath(key))
	if err != nil {
		return nil, f.errorf(key, "lock", err)
	}
	return unlock, nil
}
