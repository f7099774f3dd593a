package storage

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzFileDecode feeds arbitrary bytes to the file store's reader as an
// entry's file: it must never panic, must reject everything it cannot
// authenticate with ErrCorrupt, and, when it accepts, return a token.
func FuzzFileDecode(f *testing.F) {
	for _, g := range goldenFiles(f) {
		b, err := os.ReadFile(g.path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("TKKF\x01\x01"))
	f.Add([]byte{})
	key := mustRaw(f, testKey())
	pass, _ := PassphraseWithParams(testPassphrase, fastArgon2)
	cheap := func(h *header) bool { // argon2id within the caps can still take seconds
		p, _, err := decodeArgon2(h.params)
		return err != nil || p.Time*p.MemoryKiB <= 8<<10
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ct, err := parseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parseHeader: %v does not match ErrCorrupt", err)
			}
			return
		}
		for _, k := range []Key{key, pass} {
			if k == pass && !cheap(h) {
				continue
			}
			kb, err := k.opening(bg, keyEnv{}, h)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("opening: %v does not match ErrCorrupt", err)
				}
				continue
			}
			if _, err := openBytes(h, ct, kb, goldenEntry); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v does not match ErrCorrupt", err)
			}
		}
	})
}

// FuzzRecordDecode feeds arbitrary plaintext to the record decoder, seeded
// with the records inside the golden files: it must never panic, reject
// with errors matching ErrCorrupt that quote nothing of the input, and
// accept only records that are valid and survive another round trip.
func FuzzRecordDecode(f *testing.F) {
	for _, g := range goldenFiles(f) {
		if g.version != recordVersion {
			continue
		}
		b, err := os.ReadFile(g.path)
		if err != nil {
			f.Fatal(err)
		}
		h, ct, err := parseHeader(b)
		if err != nil {
			f.Fatal(err)
		}
		kb, err := g.key(f).opening(bg, keyEnv{}, h)
		if err != nil {
			f.Fatal(err)
		}
		pt, err := openBytes(h, ct, kb, goldenEntry)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pt)
	}
	f.Add([]byte(`{"v":2,"gen":1,"state":"ended"}`))
	f.Add([]byte(`{"v":2,"gen":1,"state":"live","token":{"v":1,"access_token":"tkat_x"}}`))
	f.Add([]byte(`{"v":2,"gen":18446744073709551615,"state":"live","token":{"v":1,"refresh_token":"tkrt_x"},"lifetime_ms":9223372036854775807}`))
	f.Add([]byte(`{"v":2,"gen":1,"state":"ended"} {"v":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v does not match ErrCorrupt", err)
			}
			for _, secret := range []string{"tkat_", "tkrt_"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error quotes the input: %v", err)
				}
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		again, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("an accepted record does not encode: %v", err)
		}
		r2, err := decodeRecord(again)
		if err != nil {
			t.Fatalf("an accepted record does not read back: %v", err)
		}
		if r2.Generation != r.Generation || r2.State != r.State || r2.Reason != r.Reason || r2.Lifetime != r.Lifetime {
			t.Fatalf("round trip changed the record: %v then %v", r, r2)
		}
	})
}
