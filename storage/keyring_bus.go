//go:build !windows && !darwin && !ios

package storage

import (
	"os"
	"path/filepath"
)

// sessionBusReachable reports ErrUnavailable when there is no D-Bus session
// bus to find the Secret Service on. Without this check the D-Bus library
// would try to start a bus with dbus-launch, which on a headless machine
// hangs or spawns a daemon nobody stops.
func sessionBusReachable() error {
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" && a != "autolaunch:" {
		return nil
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		for _, name := range []string{"bus", "dbus-session"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return nil
			}
		}
	}
	return errNoSessionBus
}
