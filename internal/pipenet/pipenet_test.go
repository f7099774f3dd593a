package pipenet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// An HTTP exchange over the pipe, and a client timeout that fires on the
// bubble's clock: exactly, whatever the machine's load.
func TestHTTPInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := Listen("127.0.0.1:80")
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				select {
				case <-time.After(time.Minute):
				case <-r.Context().Done():
					return
				}
			}
			io.WriteString(w, "hello")
		})}
		go srv.Serve(l)
		tr := &http.Transport{DialContext: l.DialContext}
		defer func() {
			tr.CloseIdleConnections()
			srv.Close()
		}()
		c := &http.Client{Transport: tr}

		resp, err := c.Get("http://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello" {
			t.Fatalf("body %q", body)
		}

		c.Timeout = time.Second
		start := time.Now()
		var ne net.Error
		if _, err := c.Get("http://" + l.Addr().String() + "/slow"); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("slow: %v, want a client timeout", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Errorf("timed out after %v, want exactly 1s", el)
		}
	})
}

func TestDialAfterClose(t *testing.T) {
	l := Listen("x")
	l.Close()
	l.Close() // a second Close is harmless
	if _, err := l.DialContext(t.Context(), "tcp", "x"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after Close: %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if a := l.Addr(); a.Network() != "pipe" || a.String() != "x" {
		t.Errorf("Addr %s %s", a.Network(), a)
	}
}

func TestDialContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := Listen("x")
		defer l.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := l.DialContext(ctx, "tcp", "x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dial nobody accepts: %v, want the context's deadline", err)
		}
	})
}
