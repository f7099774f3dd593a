package oauthwire

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
)

const okBody = `{"access_token":"tkat_1","token_type":"Bearer","expires_in":3600,"refresh_token":"tkrt_2"}`

var refreshGrant = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"tkrt_1"}}

// provider is a token endpoint that counts the requests it processed and
// answers with answer, or okBody when answer is nil.
type provider struct {
	processed atomic.Int32
	answer    func(w http.ResponseWriter, r *http.Request)
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	p.processed.Add(1)
	if p.answer != nil {
		p.answer(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, okBody)
}

// sleepThenAnswer answers okBody after d, whether or not the client waits.
func sleepThenAnswer(d time.Duration) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(d)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, okBody)
	}
}

// TestSendTimeout checks which part of a request the send timeout bounds,
// and how failures are classified, in fake time over an in-memory network.
func TestSendTimeout(t *testing.T) {
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for _, tc := range []struct {
		name      string
		send      time.Duration // 0: no send timeout
		deadline  time.Duration // the caller's ctx
		dial      func(ctx context.Context) error
		answer    func(http.ResponseWriter, *http.Request)
		wantErr   error // matched with errors.Is; nil means success
		inDoubt   bool
		processed int32
		took      time.Duration
	}{
		{
			name: "connect hangs past the send timeout", send: time.Second, deadline: time.Minute, dial: hang,
			wantErr: context.DeadlineExceeded, took: time.Second,
		},
		{
			name: "connect hangs, no send timeout", deadline: time.Minute, dial: hang,
			wantErr: context.DeadlineExceeded, took: time.Minute,
		},
		{
			name: "connect hangs past the caller's deadline", send: time.Minute, deadline: time.Second, dial: hang,
			wantErr: context.DeadlineExceeded, took: time.Second,
		},
		{
			name: "answer later than the send timeout", send: time.Second, deadline: time.Minute,
			answer: sleepThenAnswer(5 * time.Second), processed: 1, took: 5 * time.Second,
		},
		{
			name: "answer later than the caller's deadline", send: time.Second, deadline: 3 * time.Second,
			answer: sleepThenAnswer(5 * time.Second), wantErr: context.DeadlineExceeded, inDoubt: true, processed: 1, took: 3 * time.Second,
		},
		{
			name: "answer later than the caller's deadline, no send timeout", deadline: 3 * time.Second,
			answer: sleepThenAnswer(5 * time.Second), wantErr: context.DeadlineExceeded, inDoubt: true, processed: 1, took: 3 * time.Second,
		},
		{
			name: "connection dropped after the request", send: time.Second, deadline: time.Minute,
			answer: func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			},
			wantErr: io.EOF, inDoubt: true, processed: 1,
		},
		{
			name: "answer cut short", send: time.Second, deadline: time.Minute,
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "300")
				io.WriteString(w, okBody[:20])
			},
			wantErr: io.ErrUnexpectedEOF, inDoubt: true, processed: 1,
		},
		{
			name: "body trickles past the caller's deadline", send: time.Second, deadline: 3 * time.Second,
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "300")
				for i := range 300 {
					if _, err := io.WriteString(w, okBody[i%len(okBody):][:1]); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					time.Sleep(time.Second)
				}
			},
			wantErr: context.DeadlineExceeded, inDoubt: true, processed: 1, took: 3 * time.Second,
		},
		{
			name: "refusal cut short is a refusal", send: time.Second, deadline: time.Minute,
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "300")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"error":"temporarily_unavailable"`)
			},
			wantErr: new(oauth2.RetrieveError), processed: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newPipeNet()
				n.dial = tc.dial
				p := &provider{answer: tc.answer}
				c, tokenURL := pipeClient(t, n, p)
				ctx, cancel := context.WithTimeout(t.Context(), tc.deadline)
				defer cancel()
				if tc.send > 0 {
					ctx = WithSendTimeout(ctx, tc.send)
				}
				start := time.Now()
				tok, err := c.Token(ctx, tokenURL, refreshGrant)
				took := time.Since(start)
				checkErr(t, err, tc.wantErr, tc.inDoubt)
				if tc.wantErr == nil && tok.RefreshToken != "tkrt_2" {
					t.Errorf("refresh token: got %q, want tkrt_2", tok.RefreshToken)
				}
				if tc.took > 0 && took != tc.took {
					t.Errorf("took %v, want %v", took, tc.took)
				}
				time.Sleep(time.Hour) // let the provider finish
				if got := p.processed.Load(); got != tc.processed {
					t.Errorf("provider processed %d requests, want %d", got, tc.processed)
				}
				if err != nil && strings.Contains(err.Error(), "tkrt_") {
					t.Errorf("error quotes a token: %v", err)
				}
			})
		})
	}
}

// checkErr compares err with want (matched with errors.Is, or errors.As
// for a *oauth2.RetrieveError) and its in-doubt classification.
func checkErr(t *testing.T, err, want error, inDoubt bool) {
	t.Helper()
	var re *oauth2.RetrieveError
	switch {
	case want == nil:
		if err != nil {
			t.Fatalf("got %v, want success", err)
		}
	case errors.As(want, &re):
		if !errors.As(err, &re) {
			t.Fatalf("got %v, want a *oauth2.RetrieveError", err)
		}
	case !errors.Is(err, want):
		t.Fatalf("got %v, want an error matching %v", err, want)
	}
	if got := InDoubt(err); got != inDoubt {
		t.Errorf("InDoubt(%v) = %v, want %v", err, got, inDoubt)
	}
}

// TestConnectionReuse checks the classification when a connection from the
// pool turns out dead: a write that fails sends nothing, and the transport
// tries again on a new connection; a write that seems to succeed may have
// reached the provider.
func TestConnectionReuse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      int32 // of the pooled connection, for the second request
		redial    bool  // whether a new connection can be made
		wantErr   error
		inDoubt   bool
		processed int32 // by the second request
	}{
		{name: "reset before writing, new connection", mode: connReset, redial: true, processed: 1},
		{name: "reset before writing, no new connection", mode: connReset, wantErr: errNoDial},
		{name: "written, then the connection ends", mode: connBlackhole, redial: true, wantErr: io.ErrClosedPipe, inDoubt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newPipeNet()
				p := new(provider)
				c, tokenURL := pipeClient(t, n, p)
				ctx := WithSendTimeout(t.Context(), time.Second)
				if _, err := c.Token(ctx, tokenURL, refreshGrant); err != nil {
					t.Fatal(err)
				}
				synctest.Wait() // the connection is back in the pool
				n.client(0).mode.Store(tc.mode)
				if !tc.redial {
					n.dial = func(context.Context) error { return errNoDial }
				}
				_, err := c.Token(ctx, tokenURL, refreshGrant)
				checkErr(t, err, tc.wantErr, tc.inDoubt)
				if got := n.dials.Load(); got < 1 || (tc.mode == connReset) != (got == 2) {
					t.Errorf("dials: got %d", got)
				}
				synctest.Wait()
				if got := p.processed.Load() - 1; got != tc.processed {
					t.Errorf("the second request was processed %d times, want %d", got, tc.processed)
				}
			})
		})
	}
}

var errNoDial = errors.New("no route to host")

// TestRevokeInDoubt: a revocation whose answer does not come in time is in
// doubt too; a 200 whose body is cut short is a success.
func TestRevokeInDoubt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet()
		p := &provider{answer: func(w http.ResponseWriter, r *http.Request) {
			if r.PostForm.Get("token") == "slow" {
				time.Sleep(time.Hour)
			}
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "{")
		}}
		c, revokeURL := pipeClient(t, n, p)
		ctx, cancel := context.WithTimeout(WithSendTimeout(t.Context(), time.Second), time.Minute)
		defer cancel()
		if err := c.Revoke(ctx, revokeURL, "slow", "refresh_token"); !InDoubt(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("slow revocation: got %v, want in doubt", err)
		}
		if err := c.Revoke(t.Context(), revokeURL, "cut", ""); err != nil {
			t.Errorf("200 cut short: got %v, want success", err)
		}
		time.Sleep(2 * time.Hour) // let the provider finish
	})
}

// untraced is a RoundTripper that reports nothing through httptrace.
type untraced struct {
	hang bool
}

func (u untraced) RoundTrip(r *http.Request) (*http.Response, error) {
	if u.hang {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return &http.Response{
		StatusCode: 200,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(okBody)),
		Request:    r,
	}, nil
}

// TestSendTimeoutUntraced: a transport that reports no progress is bounded
// by the send timeout until it answers, and its answer is read whole.
func TestSendTimeoutUntraced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := WithSendTimeout(t.Context(), time.Second)
		c := &Client{AuthStyle: oauth2.AuthStyleInParams, HTTP: &http.Client{Transport: untraced{}}}
		if _, err := c.Token(ctx, "http://127.0.0.1/token", refreshGrant); err != nil {
			t.Fatal(err)
		}
		c.HTTP = &http.Client{Transport: untraced{hang: true}}
		start := time.Now()
		_, err := c.Token(ctx, "http://127.0.0.1/token", refreshGrant)
		checkErr(t, err, context.DeadlineExceeded, false)
		if took := time.Since(start); took != time.Second {
			t.Errorf("took %v, want 1s", took)
		}
	})
}
