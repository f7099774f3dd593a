package storage

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Keys and stores print as a short description, never as their fields:
// fmt prints a struct's fields by reflection, whatever verb it is given
// (%s and %q included, through a nested pointer), and a Key's fields are
// its key bytes or passphrase. Each type below implements fmt.Formatter,
// so that every verb prints String, and slog.LogValuer, so that every slog
// handler logs it; encoding/json sees only unexported fields.

// formatAs writes s, quoted for %q, whatever the verb and flags.
func formatAs(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	io.WriteString(f, s)
}

func (k *rawKey) String() string                    { return "storage.Key(raw)" }
func (k *rawKey) Format(f fmt.State, verb rune)     { formatAs(f, verb, k.String()) }
func (k *rawKey) LogValue() slog.Value              { return slog.StringValue(k.String()) }
func (k *keyringKey) Format(f fmt.State, verb rune) { formatAs(f, verb, k.String()) }
func (k *keyringKey) LogValue() slog.Value          { return slog.StringValue(k.String()) }

func (k *keyringKey) String() string {
	if k == nil {
		return "storage.Key(keyring)"
	}
	return fmt.Sprintf("storage.Key(keyring %q/%q)", k.service, k.user)
}

func (k *passphraseKey) Format(f fmt.State, verb rune) { formatAs(f, verb, k.String()) }
func (k *passphraseKey) LogValue() slog.Value          { return slog.StringValue(k.String()) }

func (k *passphraseKey) String() string {
	if k == nil {
		return "storage.Key(passphrase)"
	}
	p := k.params
	return fmt.Sprintf("storage.Key(passphrase, argon2id time=%d memory=%dKiB threads=%d)", p.Time, p.MemoryKiB, p.Threads)
}

// String describes f by its directory.
func (f *File) String() string {
	if f == nil {
		return "storage.File(nil)"
	}
	return fmt.Sprintf("storage.File(%q)", f.Dir())
}

// Format implements fmt.Formatter: every verb prints String.
func (f *File) Format(s fmt.State, verb rune) { formatAs(s, verb, f.String()) }

// LogValue implements slog.LogValuer: the directory.
func (f *File) LogValue() slog.Value {
	if f == nil {
		return slog.GroupValue()
	}
	return slog.GroupValue(slog.String("dir", f.Dir()))
}

// String names the store, and nothing it holds.
func (m *Memory) String() string { return "storage.Memory" }

// Format implements fmt.Formatter: every verb prints String.
func (m *Memory) Format(f fmt.State, verb rune) { formatAs(f, verb, m.String()) }

// LogValue implements slog.LogValuer: the store's name.
func (m *Memory) LogValue() slog.Value { return slog.StringValue(m.String()) }

// String names the store and its service.
func (k *Keyring) String() string {
	if k == nil {
		return "storage.Keyring(nil)"
	}
	return fmt.Sprintf("storage.Keyring(%q)", k.service)
}

// Format implements fmt.Formatter: every verb prints String, never the
// options and the backend they name.
func (k *Keyring) Format(f fmt.State, verb rune) { formatAs(f, verb, k.String()) }

// LogValue implements slog.LogValuer: the service.
func (k *Keyring) LogValue() slog.Value {
	if k == nil {
		return slog.GroupValue()
	}
	return slog.GroupValue(slog.String("service", k.service))
}
