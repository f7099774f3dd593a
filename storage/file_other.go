//go:build !unix

package storage

import (
	"io/fs"
	"os"
)

// On Windows, mode bits do not describe access: a file's ACL does, and files
// created under the user's profile inherit an ACL that admits only the user,
// SYSTEM and administrators. Checking ACLs would need the Windows security
// API; the store relies on the profile's inherited ACL instead and says so
// in the package documentation.
func checkDir(string, fs.FileInfo) error  { return nil }
func checkFile(string, fs.FileInfo) error { return nil }
func checkAncestors(string) error         { return nil }
func tighten(*os.File) error              { return nil }

// openEntryFlags: Windows has no FIFOs at a path a store opens, and its
// links are checked by the regular-file test after opening.
const openEntryFlags = os.O_RDONLY

func refuseLink(_ string, err error) error { return err }

// syncDir is a no-op: Windows cannot open a directory for syncing, and NTFS
// journals the rename itself.
func syncDir(string) error { return nil }

// removeLockFiles: on Windows a file removed while others hold it open
// lingers in a pending state in which it cannot be opened, which would turn
// into lock errors; lock files stay.
const removeLockFiles = false
