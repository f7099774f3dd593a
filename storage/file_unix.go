//go:build unix

package storage

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkDir refuses a directory that another user owns or that group or
// others may write to: they could replace or remove its files.
func checkDir(path string, fi fs.FileInfo) error {
	if err := checkOwner(path, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("storage: directory %s is writable by group or others (mode %04o); use mode 0700", path, fi.Mode().Perm())
	}
	return nil
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
