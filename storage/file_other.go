//go:build !unix

package storage

import "io/fs"

// On Windows, mode bits do not describe access: a file's ACL does, and files
// created under the user's profile inherit an ACL that admits only the user,
// SYSTEM and administrators. Checking ACLs would need the Windows security
// API; the store relies on the profile's inherited ACL instead and says so
// in the package documentation.
func checkDir(string, fs.FileInfo) error  { return nil }
func checkFile(string, fs.FileInfo) error { return nil }

// syncDir is a no-op: Windows cannot open a directory for syncing, and NTFS
// journals the rename itself.
func syncDir(string) error { return nil }

// removeLockFiles: on Windows a file removed while others hold it open
// lingers in a pending state in which it cannot be opened, which would turn
// into lock errors; lock files stay.
const removeLockFiles = false
