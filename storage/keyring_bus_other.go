//go:build windows || darwin || ios

package storage

// sessionBusReachable is a Linux and BSD concern: Keychain and Credential
// Manager need no bus.
func sessionBusReachable() error { return nil }
