package storage

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/oauth2"
)

// call runs f and reports a panic as an error, so that a table can say
// what each call must do with nil and zero inputs.
func call(f func() error) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			err, panicked = fmt.Errorf("panic: %v", r), true
		}
	}()
	return f(), false
}

// TestNilAndZeroInputs calls the package's exported functions with nil and
// zero values: each returns an error, and none panics.
func TestNilAndZeroInputs(t *testing.T) {
	var nilCtx context.Context
	tok := &oauth2.Token{AccessToken: "tkat_nil-test", TokenType: "Bearer"}
	raw := mustRaw(t, testKey())
	pass, err := PassphraseWithParams(testPassphrase, fastArgon2)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := Seal(bg, raw, "e", NewRecord(0, tok))
	if err != nil {
		t.Fatal(err)
	}
	errOf := func(_ any, err error) error { return err }
	tests := []struct {
		name string
		f    func() error
	}{
		{"RawKey(nil)", func() error { return errOf(RawKey(nil)) }},
		{"KeyFromEnv(\"\")", func() error { return errOf(KeyFromEnv("")) }},
		{"Passphrase(nil)", func() error { return errOf(Passphrase(nil)) }},
		{"PassphraseWithParams(nil, zero)", func() error { return errOf(PassphraseWithParams(nil, Argon2Params{})) }},
		{"PassphraseWithParams(zero params)", func() error { return errOf(PassphraseWithParams([]byte("x"), Argon2Params{})) }},
		{"KeyringKey(\"\", \"\", nil)", func() error { return errOf(KeyringKey("", "", nil)) }},
		{"Seal(nil key)", func() error { return errOf(Seal(bg, nil, "e", NewRecord(0, tok))) }},
		{"Seal(nil token)", func() error { return errOf(Seal(bg, raw, "e", nil)) }},
		{"Seal(nil ctx)", func() error { return errOf(Seal(nilCtx, pass, "e", NewRecord(0, tok))) }},
		{"Seal(all nil)", func() error { return errOf(Seal(nilCtx, nil, "", nil)) }},
		{"Open(nil key)", func() error { return errOf(Open(bg, nil, "e", sealed)) }},
		{"Open(nil bytes)", func() error { return errOf(Open(bg, raw, "e", nil)) }},
		{"Open(nil ctx)", func() error { return errOf(Open(nilCtx, pass, "e", sealed)) }},
		{"Open(all nil)", func() error { return errOf(Open(nilCtx, nil, "", nil)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err, panicked := call(tt.f)
			if panicked || err == nil {
				t.Errorf("got %v, want an error", err)
			}
		})
	}
}
