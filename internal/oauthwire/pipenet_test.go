package oauthwire

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/pipenet"
)

// pipeNet is the in-memory network of pipenet, for net/http inside a
// synctest bubble, with dials counted, a hook to fail them, and client
// connections that can be made to fail.
type pipeNet struct {
	*pipenet.Listener

	dials atomic.Int32
	// dial, if set, is called for each dial; a non-nil error fails it.
	dial func(ctx context.Context) error

	mu      sync.Mutex // guards clients
	clients []*faultyConn
}

func newPipeNet() *pipeNet {
	return &pipeNet{Listener: pipenet.Listen("127.0.0.1:80")}
}

func (n *pipeNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	n.dials.Add(1)
	if n.dial != nil {
		if err := n.dial(ctx); err != nil {
			return nil, err
		}
	}
	c, err := n.Listener.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	fc := &faultyConn{Conn: c}
	n.mu.Lock()
	n.clients = append(n.clients, fc)
	n.mu.Unlock()
	return fc, nil
}

// client returns the client end of the i-th connection dialled.
func (n *pipeNet) client(i int) *faultyConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clients[i]
}

// faultyConn is a client connection that can be made to fail as a TCP
// connection whose other end went away does.
type faultyConn struct {
	net.Conn
	mode atomic.Int32
}

const (
	connOK        = iota
	connReset     // writes fail with nothing written: the reset was seen before writing
	connBlackhole // a write vanishes as if sent, then the connection ends: it reached the kernel, not the server
)

func (c *faultyConn) Write(p []byte) (int, error) {
	switch c.mode.Load() {
	case connReset:
		return 0, syscall.ECONNRESET
	case connBlackhole:
		c.Conn.Close()
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// pipeClient returns a Client whose requests reach h over n, and the token
// URL to use. The server and the connections are closed when the test
// ends; handlers must have returned by then.
func pipeClient(t *testing.T, n *pipeNet, h http.Handler) (*Client, string) {
	srv := &http.Server{Handler: h}
	go srv.Serve(n)
	tr := &http.Transport{DialContext: n.DialContext}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	c := &Client{ClientID: "c", ClientSecret: "s", AuthStyle: oauth2.AuthStyleInHeader, HTTP: &http.Client{Transport: tr}, Now: func() time.Time { return now }}
	return c, "http://127.0.0.1/token"
}
