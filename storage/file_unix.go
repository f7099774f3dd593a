//go:build unix

package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkDir refuses a store directory that another user owns or that group
// or others may use in any way: mode 0700 is the only one accepted. Others
// able to write could replace or remove its files; able to read or search,
// they learn the entries' names, which may be personal.
func checkDir(path string, fi fs.FileInfo) error {
	if err := checkOwner(path, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("storage: directory %s is accessible to group or others (mode %04o); the store needs mode 0700 (chmod 700 it)", path, fi.Mode().Perm())
	}
	return nil
}

// tighten sets the mode of the store's directory, open as d, to 0700 if it
// is the user's own and group and others may read or search it but not
// write to it. Anything else is left for checkDir to judge.
func tighten(d *os.File) error {
	fi, err := d.Stat()
	if err != nil {
		return err
	}
	perm := fi.Mode().Perm()
	if checkOwner(d.Name(), fi) != nil || perm&0o077 == 0 || perm&0o022 != 0 {
		return nil
	}
	return d.Chmod(perm &^ 0o077)
}

// checkAncestors checks every directory above dir, in the spirit of
// OpenSSH's StrictModes: each must be owned by root or the user, and must
// not be writable by group or others unless it has the sticky bit, which
// stops them from renaming or removing what they do not own (/tmp).
// Otherwise whoever can write one of them can put another directory, or an
// old copy of this one, in its place. Both the path as given (each
// ancestor followed if it is a link) and the path with links resolved are
// checked, so that neither a link nor its target sits in a directory open
// to others.
func checkAncestors(dir string) error {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	uid := os.Getuid()
	for _, p := range []string{dir, resolved} {
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil {
				return fmt.Errorf("storage: %w", err)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && st.Uid != 0 {
				return fmt.Errorf("storage: %s, above the store's directory, is owned by uid %d, neither root nor this user (uid %d): that user could replace the store's files", d, st.Uid, uid)
			}
			if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
				return fmt.Errorf("storage: %s, above the store's directory, is writable by group or others (mode %04o) and not sticky: they could replace the store's files", d, fi.Mode().Perm())
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}

// openEntryFlags open an entry's file without following a symbolic link
// and without waiting on a FIFO or a device.
const openEntryFlags = os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// refuseLink explains the error of opening a symbolic link with O_NOFOLLOW.
func refuseLink(path string, err error) error {
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("%s is a symbolic link; entries must be regular files", path)
	}
	return err
}

// checkFile refuses a file that another user owns or that group or others
// may read or write.
func checkFile(path string, fi fs.FileInfo) error {
	if err := checkOwner(path, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("storage: %s is accessible to group or others (mode %04o); refusing it, as its tokens may have been read: log in again, or chmod 600 it if you know it was not", path, fi.Mode().Perm())
	}
	return nil
}

func checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("storage: %s is owned by uid %d, not by this user (uid %d)", path, st.Uid, uid)
	}
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeLockFiles: on Unix a lock file can be unlinked while others hold it
// open, and the lock protocol (see lockSet) makes that safe.
const removeLockFiles = true
