package authserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sendRefresh posts a refresh grant for rt under ctx in the background and
// delivers the outcome.
func sendRefresh(ctx context.Context, t *testing.T, srv *Server, rt string) <-chan reply {
	done := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+EndpointToken, strings.NewReader(refreshForm(rt).Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(ClientID, ClientSecret)
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- reply{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- reply{status: resp.StatusCode, body: body, err: err}
	}()
	return done
}

// A held answer comes after the client gave up: the refresh token was
// rotated all the same, and presenting it again is reuse.
func TestHoldAnswerAfterClientGaveUp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(h *Hold) Fault
	}{
		{"hold", func(h *Hold) Fault { return Fault{Hold: h} }},
		{"answer after", func(h *Hold) Fault { h.Release(); return Fault{Hold: h, AnswerAfter: time.Hour} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, Config{Rotate: true, ReuseDetection: true})
			tok := srv.Mint()
			hold := NewHold()
			srv.Inject(EndpointToken, tc.fault(hold))
			ctx, cancel := context.WithCancel(t.Context())
			done := sendRefresh(ctx, t, srv, tok.RefreshToken)
			<-hold.Processed()
			if srv.RefreshTokenActive(tok.RefreshToken) {
				t.Error("the refresh token was not rotated before the answer")
			}
			cancel() // the client gives up
			if r := <-done; r.err == nil {
				t.Fatalf("the client got an answer %d before its deadline", r.status)
			}
			hold.Release() // the answer goes nowhere

			// The client tries again with what it has: reuse.
			r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
			if r.status != http.StatusBadRequest || r.errorCode() != "invalid_grant" {
				t.Fatalf("retry: got %d %s, want 400 invalid_grant", r.status, r.body)
			}
			want := Stats{TokenRequests: 2, RefreshGrants: 2, RefreshesGranted: 1, ReuseDetections: 1, FaultsInjected: 1}
			if st := srv.Stats(); st != want {
				t.Errorf("stats\n got %+v\nwant %+v", st, want)
			}
		})
	}
}

// A held answer reaches a client that waits for it.
func TestHoldReleased(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	tok := srv.Mint()
	hold := NewHold()
	srv.Inject(EndpointToken, Fault{Hold: hold, Mutate: func(m map[string]any) { m["scope"] = "held" }})
	done := sendRefresh(t.Context(), t, srv, tok.RefreshToken)
	<-hold.Processed()
	select {
	case r := <-done:
		t.Fatalf("answered %d while held", r.status)
	default:
	}
	hold.Release()
	r := <-done
	m := r.json(t)
	rt, _ := m["refresh_token"].(string)
	if r.status != 200 || m["scope"] != "held" || !srv.RefreshTokenActive(rt) {
		t.Fatalf("got %d %v", r.status, m["scope"])
	}
}

// A replaced answer can be held too: nothing is processed.
func TestHoldReplacedAnswer(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	tok := srv.Mint()
	hold := NewHold()
	srv.Inject(EndpointToken, Fault{Status: 503, Hold: hold})
	done := sendRefresh(t.Context(), t, srv, tok.RefreshToken)
	<-hold.Processed()
	hold.Release()
	if r := <-done; r.status != 503 || !srv.RefreshTokenActive(tok.RefreshToken) {
		t.Fatalf("got %d, refresh token active %v", r.status, srv.RefreshTokenActive(tok.RefreshToken))
	}
}

// Close does not wait for held or trickling answers.
func TestCloseDropsHeldAnswers(t *testing.T) {
	srv := New(Config{Rotate: true})
	hold, after := NewHold(), NewHold()
	after.Release() // only to learn when the request was processed
	srv.Inject(EndpointToken, Fault{Hold: hold})
	held := sendRefresh(t.Context(), t, srv, srv.Mint().RefreshToken)
	<-hold.Processed()
	srv.Inject(EndpointToken, Fault{Hold: after, AnswerAfter: 24 * time.Hour})
	late := sendRefresh(t.Context(), t, srv, srv.Mint().RefreshToken)
	<-after.Processed()
	srv.Close() // returns although neither answer was sent
	for _, done := range []<-chan reply{held, late} {
		if r := <-done; r.err == nil {
			t.Errorf("got %d from a closed server", r.status)
		}
	}
}

// A trickled answer sends its headers at once, then its body byte by
// byte; a client that leaves half way has had its grant processed.
func TestSlowBodyHeadersFirst(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	tok := srv.Mint()
	srv.Inject(EndpointToken, Fault{SlowBody: 24 * time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+EndpointToken, strings.NewReader(refreshForm(tok.RefreshToken).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ClientID, ClientSecret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength < 2 {
		t.Fatalf("got %d with Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	first := make([]byte, 8)
	if n, err := resp.Body.Read(first); n != 1 || first[0] != '{' {
		t.Fatalf("first read: %q, %v; want one byte", first[:n], err)
	}
	if srv.RefreshTokenActive(tok.RefreshToken) {
		t.Error("the grant behind a trickled answer did not take effect")
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("reading on: got %v, want context.Canceled", err)
	}
	// The server's Close (at cleanup) does not wait for the trickle.
}
