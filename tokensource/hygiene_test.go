package tokensource_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

// leakWatch collects everything tokenkeep says: log records at debug level,
// hook events, error strings and formatted values.
type leakWatch struct {
	mu     sync.Mutex
	logs   bytes.Buffer
	said   []string
	logger *slog.Logger
}

func newLeakWatch() *leakWatch {
	w := &leakWatch{}
	w.logger = slog.New(slog.NewJSONHandler(syncWriter{w}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return w
}

type syncWriter struct{ w *leakWatch }

func (s syncWriter) Write(p []byte) (int, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.w.logs.Write(p)
}

func (w *leakWatch) note(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.said = append(w.said, fmt.Sprintf(format, args...))
}

func (w *leakWatch) err(err error) {
	if err != nil {
		w.note("%v", err)
		w.note("%+v", err)
	}
}

func (w *leakWatch) hook(e tokensource.Event) { w.note("%+v", e) }

// TestNoSecretAnywhere runs the main scenarios of every package with a debug
// logger and a hook, collects every error string and formatted value, and
// fails if any token, key or passphrase appears in them. The embedded
// server's tokens all start with "tkat_" or "tkrt_", so any token, even one
// the test never saw, is caught.
func TestNoSecretAnywhere(t *testing.T) {
	w := newLeakWatch()
	rawKey := bytes.Repeat([]byte{0x5c}, 32)
	passphrase := "tokenkeep-hygiene-passphrase"
	secrets := []string{"tkat_", "tkrt_", passphrase,
		hex.EncodeToString(rawKey), base64.StdEncoding.EncodeToString(rawKey), base64.RawURLEncoding.EncodeToString(rawKey)}

	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"background refreshes and 401s through the transport", func(t *testing.T) {
			for range 3 {
				refreshes := make(chan struct{}, 2)
				hook := func(e tokensource.Event) {
					w.hook(e)
					if e.Kind == tokensource.Refreshed {
						refreshes <- struct{}{}
					}
				}
				// refreshed waits for the next refresh; the minute it
				// allows is a guard against hanging, not a measurement.
				refreshed := func() {
					t.Helper()
					select {
					case <-refreshes:
					case <-time.After(time.Minute):
						t.Fatal("no refresh within a minute")
					}
				}
				srv, src := hygieneSource(t, w, authserver.Config{}, tokensource.WithHook(hook))
				client := transport.NewClient(src)
				get := func() {
					resp, err := client.Get(srv.ResourceURL())
					w.err(err)
					if err == nil {
						resp.Body.Close()
					}
				}
				// A login in its early-refresh window: served while the
				// next token is fetched in the background.
				stale := srv.Mint()
				stale.Expiry = time.Now().Add(2 * time.Minute)
				if err := src.Put(context.Background(), stale); err != nil {
					t.Fatal(err)
				}
				get()
				refreshed()
				get()
				// The resource refuses the access token: the transport
				// invalidates it and the request is retried after a refresh.
				srv.ExpireAccessTokens()
				get()
				refreshed()
			}
		}},
		{"503s ridden out", func(t *testing.T) {
			srv, src := hygieneSource(t, w, authserver.Config{})
			srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 503, RetryAfter: "0"}, authserver.Fault{Status: 503})
			tok, _ := src.Token()
			src.Invalidate(tok)
			_, err := src.Token()
			w.err(err)
		}},
		{"provider echoes the refresh token in its error", func(t *testing.T) {
			srv, src := hygieneSource(t, w, authserver.Config{})
			tok, _ := src.Token()
			srv.Inject(authserver.EndpointToken, authserver.Fault{Status: 400,
				Body: fmt.Sprintf(`{"error":"invalid_grant","error_description":"token %s was revoked","error_uri":"https://x/%s"}`, tok.RefreshToken, tok.AccessToken)})
			src.Invalidate(tok)
			_, err := src.Token()
			if !errors.Is(err, tokensource.ErrReauthRequired) {
				t.Errorf("got %v, want ErrReauthRequired", err)
			}
			w.err(err)
		}},
		{"provider echoes the token in a 500 page", func(t *testing.T) {
			srv, src := hygieneSource(t, w, authserver.Config{}, tokensource.WithBackOff(func() backoff.BackOff {
				return backoff.WithMaxRetries(backoff.NewConstantBackOff(5*time.Millisecond), 2)
			}))
			tok, _ := src.Token()
			srv.SetFailRate(authserver.EndpointToken, 1, authserver.Fault{Status: 500, ContentType: "text/html",
				Body: "<html>refresh_token=" + tok.RefreshToken + "</html>"})
			src.Invalidate(tok)
			_, err := src.Token()
			w.err(err)
		}},
		{"session revoked, seen through http.Client", func(t *testing.T) {
			srv, src := hygieneSource(t, w, authserver.Config{})
			tok, _ := src.Token()
			srv.RevokeFamilyOf(tok.RefreshToken)
			srv.ExpireAccessTokens()
			_, err := transport.NewClient(src).Get(srv.ResourceURL())
			if !errors.Is(err, tokensource.ErrReauthRequired) {
				t.Errorf("got %v, want ErrReauthRequired", err)
			}
			w.err(err)
		}},
		{"logout", func(t *testing.T) {
			_, src := hygieneSource(t, w, authserver.Config{})
			w.err(src.Revoke(context.Background()))
			_, err := src.Token()
			w.err(err)
		}},
		{"save fails", func(t *testing.T) {
			srv := authserver.New(authserver.Config{Rotate: true})
			t.Cleanup(srv.Close)
			st := &failingSaves{Store: storage.NewMemory()}
			src := hygieneSourceOn(t, w, srv, st)
			if err := src.Put(context.Background(), srv.Mint()); err != nil {
				t.Fatal(err)
			}
			tok, _ := src.Token()
			st.mu.Lock()
			st.fail = true
			st.mu.Unlock()
			src.Invalidate(tok)
			_, err := src.Token()
			if !errors.Is(err, tokensource.ErrNotSaved) {
				t.Errorf("got %v, want ErrNotSaved", err)
			}
			w.err(err)
			w.err(src.Close())
		}},
		{"file store: wrong key, wrong passphrase, tampered file, bad key text", func(t *testing.T) {
			dir := t.TempDir()
			key, _ := storage.RawKey(rawKey)
			f, _ := storage.NewFile(dir, key)
			srv := authserver.New(authserver.Config{})
			t.Cleanup(srv.Close)
			w.err(storage.SaveToken(context.Background(), f, "e", srv.Mint()))
			other, _ := storage.RawKey(bytes.Repeat([]byte{1}, 32))
			g, _ := storage.NewFile(dir, other)
			_, err := g.Load(context.Background(), "e")
			w.err(err)
			pk, _ := storage.PassphraseWithParams([]byte(passphrase), storage.Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1})
			p, _ := storage.NewFile(dir, pk)
			_, err = p.Load(context.Background(), "e")
			w.err(err)
			b, _ := os.ReadFile(f.Path("e"))
			b[len(b)-1] ^= 1
			os.WriteFile(f.Path("e"), b, 0o600)
			_, err = f.Load(context.Background(), "e")
			w.err(err)
			t.Setenv("TOKENKEEP_HYGIENE_KEY", passphrase)
			_, err = storage.KeyFromEnv("TOKENKEEP_HYGIENE_KEY")
			w.err(err)
			_, err = storage.RawKey([]byte(passphrase))
			w.err(err)
		}},
		{"stored token unreadable: corrupt file under a Source", func(t *testing.T) {
			srv := authserver.New(authserver.Config{})
			t.Cleanup(srv.Close)
			key, _ := storage.RawKey(rawKey)
			dir := filepath.Join(t.TempDir(), "s")
			f, _ := storage.NewFile(dir, key)
			w.err(storage.SaveToken(context.Background(), f, "alice", srv.Mint()))
			os.WriteFile(f.Path("alice"), []byte("TKKF garbage tkrt_in_file"), 0o600)
			src := hygieneSourceOn(t, w, srv, f)
			_, err := src.Token()
			w.err(err)
		}},
		{"values formatted and logged", func(t *testing.T) {
			_, src := hygieneSource(t, w, authserver.Config{})
			w.note("%v %+v %s", src, src, src)
			w.logger.Info("source", "src", src)
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, sc.run)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	all := append([]string{w.logs.String()}, w.said...)
	for _, text := range all {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %.8s… appears in: %s", s, text)
			}
		}
	}
	if w.logs.Len() == 0 || len(w.said) < len(scenarios) {
		t.Fatalf("collected %d bytes of logs and %d strings: the scenarios said too little to prove anything", w.logs.Len(), len(w.said))
	}
	t.Logf("%d scenarios: %d bytes of debug logs and %d error strings, events and values checked", len(scenarios), w.logs.Len(), len(w.said))
}

func hygieneSource(t *testing.T, w *leakWatch, cfg authserver.Config, opts ...tokensource.Option) (*authserver.Server, *tokensource.Source) {
	cfg.Rotate, cfg.ReuseDetection = true, true
	srv := authserver.New(cfg)
	t.Cleanup(srv.Close)
	src := hygieneSourceOn(t, w, srv, storage.NewMemory(), opts...)
	if err := src.Put(context.Background(), srv.Mint()); err != nil {
		t.Fatal(err)
	}
	return srv, src
}

func hygieneSourceOn(t *testing.T, w *leakWatch, srv *authserver.Server, st storage.Store, opts ...tokensource.Option) *tokensource.Source {
	r, err := tokensource.NewConfigRefresher(srv.OAuth2Config(), srv.RevocationURL(), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]tokensource.Option{tokensource.WithLogger(w.logger), tokensource.WithHook(w.hook),
		tokensource.WithBackOff(func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) })}, opts...)
	src, err := tokensource.New(r, st, "alice", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.err(src.Close()) })
	return src
}

// failingSaves fails every Save once told to.
type failingSaves struct {
	storage.Store
	mu   sync.Mutex
	fail bool
}

func (f *failingSaves) Save(ctx context.Context, key string, r *storage.Record) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return errors.New("disk full")
	}
	return f.Store.Save(ctx, key, r)
}
