package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// ledgerStores are the stores the ledger contract is checked on, each made
// fresh for one test.
func ledgerStores(t *testing.T) []struct {
	name string
	open func(t *testing.T) Store
} {
	return []struct {
		name string
		open func(t *testing.T) Store
	}{
		{"memory", func(t *testing.T) Store { return NewMemory() }},
		{"file", func(t *testing.T) Store { return newFileStore(t, mustRaw(t, testKey())) }},
		{"keyring-fake", func(t *testing.T) Store { return newFakeKeyring(t, &fakeKeyring{}, 1000) }},
		{"keyring-secret-service", func(t *testing.T) Store {
			needSecretService(t)
			k, err := NewKeyring("tokenkeep-test", &KeyringOptions{ChunkSize: 2000, LockDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			return k
		}},
		{"token-store", func(t *testing.T) Store { return FromTokenStore(&memTokenStore{}) }},
	}
}

// ledgerKey is the entry name of a ledger test: unique per test, so that
// tests sharing the real Secret Service do not meet.
func ledgerKey(t *testing.T) string { return "ledger/" + t.Name() }

// sessionToken is the n-th token of a session.
func sessionToken(n int) *oauth2.Token {
	return &oauth2.Token{
		AccessToken:  fmt.Sprintf("tkat_gen%d", n),
		RefreshToken: fmt.Sprintf("tkrt_gen%d", n),
		TokenType:    "Bearer",
		Expiry:       time.Date(2026, 11, 22, 12, 0, n, 0, time.UTC),
	}
}

// mustLoad loads key and fails the test unless it holds generation gen.
func mustLoad(t *testing.T, s Store, key string, gen uint64) *Record {
	t.Helper()
	r, err := s.Load(bg, key)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if r.Generation != gen {
		t.Fatalf("stored generation: got %d, want %d", r.Generation, gen)
	}
	return r
}

// TestLedgerConditionalWrites checks that every store writes a record only
// when it follows the stored generation, and leaves the entry untouched
// otherwise.
func TestLedgerConditionalWrites(t *testing.T) {
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			key := ledgerKey(t)
			t.Cleanup(func() { s.Delete(bg, key) })
			if _, err := s.Load(bg, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load of nothing: got %v, want ErrNotFound", err)
			}
			for _, tc := range []struct {
				name    string
				r       *Record
				wantErr error // nil: written
				stored  uint64
			}{
				{"a second generation on nothing", NewRecord(1, sessionToken(2)), ErrConflict, 0},
				{"the first generation", NewRecord(0, sessionToken(1)), nil, 1},
				{"the first generation again", NewRecord(0, sessionToken(9)), ErrConflict, 1},
				{"a generation ahead", NewRecord(2, sessionToken(9)), ErrConflict, 1},
				{"the next generation", NewRecord(1, sessionToken(2)), nil, 2},
				{"a stale retry of the first", NewRecord(0, sessionToken(1)), ErrConflict, 2},
				{"a stale retry of the second", NewRecord(1, sessionToken(2)), ErrConflict, 2},
				{"the third", NewRecord(2, sessionToken(3)), nil, 3},
			} {
				err := s.Save(bg, key, tc.r)
				if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("%s: got %v, want %v", tc.name, err, tc.wantErr)
				}
				noSecrets(t, err)
				if tc.stored == 0 {
					if _, err := s.Load(bg, key); !errors.Is(err, ErrNotFound) {
						t.Fatalf("%s: got %v, want nothing stored", tc.name, err)
					}
					continue
				}
				got := mustLoad(t, s, key, tc.stored)
				if want := sessionToken(int(tc.stored)); got.Token.AccessToken != want.AccessToken {
					t.Fatalf("%s: the entry holds another generation's token than its own", tc.name)
				}
			}
		})
	}
}

// TestLedgerTombstones checks that an ended record round-trips with its
// reason, that no write derived from an older generation replaces it, and
// that a new login does.
func TestLedgerTombstones(t *testing.T) {
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			key := ledgerKey(t)
			t.Cleanup(func() { s.Delete(bg, key) })
			if err := s.Save(bg, key, NewRecord(0, sessionToken(1))); err != nil {
				t.Fatal(err)
			}
			ended := &Record{Generation: 2, State: Ended, Reason: "refused by the provider: invalid_grant"}
			if err := s.Save(bg, key, ended); err != nil {
				t.Fatal(err)
			}
			got := mustLoad(t, s, key, 2)
			if got.State != Ended || got.Token != nil || got.Reason != ended.Reason {
				t.Fatalf("tombstone read back as %v", got)
			}
			if _, err := LoadToken(bg, s, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("LoadToken of an ended session: got %v, want ErrNotFound", err)
			}
			// A refresh that began from generation 1 loses.
			if err := s.Save(bg, key, NewRecord(1, sessionToken(2))); !errors.Is(err, ErrConflict) {
				t.Fatalf("refresh derived from before the end: got %v, want ErrConflict", err)
			}
			mustLoad(t, s, key, 2)
			// A new login follows the tombstone.
			if err := s.Save(bg, key, NewRecord(2, sessionToken(3))); err != nil {
				t.Fatal(err)
			}
			if got := mustLoad(t, s, key, 3); got.State != Live || got.Token.RefreshToken != sessionToken(3).RefreshToken {
				t.Fatalf("login after the end read back as %v", got)
			}
		})
	}
}

// TestLedgerMetadata checks that a record's session metadata survives.
func TestLedgerMetadata(t *testing.T) {
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			key := ledgerKey(t)
			t.Cleanup(func() { s.Delete(bg, key) })
			want := NewRecord(0, sampleToken())
			want.Lifetime = time.Hour + 1500*time.Millisecond
			want.RetryAfter = time.Date(2026, 11, 22, 12, 30, 0, 123456789, time.UTC)
			want.RefreshExpiry = time.Date(2027, 5, 22, 0, 0, 0, 0, time.FixedZone("x", 3600))
			if err := s.Save(bg, key, want); err != nil {
				t.Fatal(err)
			}
			got := mustLoad(t, s, key, 1)
			sameToken(t, got.Token, sampleToken())
			if got.Lifetime != want.Lifetime || !got.RetryAfter.Equal(want.RetryAfter) || !got.RefreshExpiry.Equal(want.RefreshExpiry) {
				t.Fatalf("metadata: got %v %v %v, want %v %v %v", got.Lifetime, got.RetryAfter, got.RefreshExpiry,
					want.Lifetime, want.RetryAfter, want.RefreshExpiry)
			}
		})
	}
}

// TestLedgerRefusesInvalidRecords checks that no store writes a record that
// a reader would reject.
func TestLedgerRefusesInvalidRecords(t *testing.T) {
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			key := ledgerKey(t)
			for _, tc := range []struct {
				name string
				r    *Record
			}{
				{"nil", nil},
				{"generation 0", &Record{State: Live, Token: sampleToken()}},
				{"live without a token", &Record{Generation: 1, State: Live}},
				{"live with an empty token", &Record{Generation: 1, State: Live, Token: &oauth2.Token{TokenType: "Bearer"}}},
				{"ended with a token", &Record{Generation: 1, State: Ended, Token: sampleToken()}},
				{"no state", &Record{Generation: 1, Token: sampleToken()}},
				{"negative lifetime", &Record{Generation: 1, State: Live, Token: sampleToken(), Lifetime: -time.Second}},
			} {
				err := s.Save(bg, key, tc.r)
				if err == nil || errors.Is(err, ErrConflict) {
					t.Errorf("%s: got %v, want a refusal", tc.name, err)
				}
				noSecrets(t, err)
			}
			if _, err := s.Load(bg, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after refused writes: got %v, want ErrNotFound", err)
			}
		})
	}
}

// TestLedgerDeletePurges checks that Delete forgets the entry and its
// generation: what follows starts again at generation 1.
func TestLedgerDeletePurges(t *testing.T) {
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			s := st.open(t)
			key := ledgerKey(t)
			t.Cleanup(func() { s.Delete(bg, key) })
			for i := range 3 {
				if err := s.Save(bg, key, NewRecord(uint64(i), sessionToken(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Delete(bg, key); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(bg, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
			}
			if err := s.Save(bg, key, NewRecord(3, sessionToken(4))); !errors.Is(err, ErrConflict) {
				t.Fatalf("a write derived from before the purge: got %v, want ErrConflict", err)
			}
			if err := s.Save(bg, key, NewRecord(0, sessionToken(1))); err != nil {
				t.Fatal(err)
			}
			mustLoad(t, s, key, 1)
		})
	}
}

// TestLedgerConcurrentWriters races goroutines that each read the entry
// and write the next generation: every generation is won by exactly one of
// them, the losers see ErrConflict, and the generation only grows.
func TestLedgerConcurrentWriters(t *testing.T) {
	const writers, rounds = 8, 25
	for _, st := range ledgerStores(t) {
		t.Run(st.name, func(t *testing.T) {
			if st.name == "keyring-secret-service" && testing.Short() {
				t.Skip("slow against a real Secret Service")
			}
			s := st.open(t)
			key := ledgerKey(t)
			t.Cleanup(func() { s.Delete(bg, key) })
			var mu sync.Mutex
			won := map[uint64]int{} // generation → writer
			conflicts := 0
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					var seen uint64
					for range rounds {
						var gen uint64
						r, err := s.Load(bg, key)
						switch {
						case err == nil:
							gen = r.Generation
						case errors.Is(err, ErrNotFound):
						default:
							t.Error(err)
							return
						}
						if gen < seen {
							t.Errorf("writer %d read generation %d after %d", w, gen, seen)
							return
						}
						seen = gen
						err = s.Save(bg, key, NewRecord(gen, sessionToken(int(gen)+1)))
						mu.Lock()
						switch {
						case err == nil:
							if prev, ok := won[gen+1]; ok {
								t.Errorf("generation %d written by writers %d and %d", gen+1, prev, w)
							}
							won[gen+1] = w
						case errors.Is(err, ErrConflict):
							conflicts++
						default:
							t.Error(err)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			final := mustLoad(t, s, key, uint64(len(won)))
			if final.Token.AccessToken != sessionToken(len(won)).AccessToken {
				t.Fatal("the final record is not the last generation's")
			}
			for g := range uint64(len(won)) {
				if _, ok := won[g+1]; !ok {
					t.Fatalf("generation %d was never written, yet %d were", g+1, len(won))
				}
			}
			t.Logf("%d writers × %d rounds: %d generations written, %d stale writes refused", writers, rounds, len(won), conflicts)
		})
	}
}

// memTokenStore is a TokenStore that keeps bare tokens, as a store written
// before records had generations does.
type memTokenStore struct {
	mu     sync.Mutex
	tokens map[string]*oauth2.Token
}

func (m *memTokenStore) Load(_ context.Context, key string) (*oauth2.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[key]
	if !ok {
		return nil, ErrNotFound
	}
	return t, nil
}

func (m *memTokenStore) Save(_ context.Context, key string, t *oauth2.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tokens == nil {
		m.tokens = map[string]*oauth2.Token{}
	}
	m.tokens[key] = t
	return nil
}

func (m *memTokenStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, key)
	return nil
}

// TestFromTokenStoreLegacyToken checks that a token saved by a program that
// knew nothing of records reads as generation 1, and that the next write
// follows it.
func TestFromTokenStoreLegacyToken(t *testing.T) {
	ts := &memTokenStore{}
	ts.Save(bg, "e", sampleToken())
	s := FromTokenStore(ts)
	r := mustLoad(t, s, "e", 1)
	sameToken(t, r.Token, sampleToken())
	if err := s.Save(bg, "e", NewRecord(0, sessionToken(2))); !errors.Is(err, ErrConflict) {
		t.Fatalf("a first generation over a legacy token: got %v, want ErrConflict", err)
	}
	if err := s.Save(bg, "e", NewRecord(1, sessionToken(2))); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, s, "e", 2)
}
