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
)

// pipeNet is an in-memory network for net/http inside a synctest bubble: a
// Transport dialling it reaches an http.Server serving it, over net.Pipe,
// so that time is fake and every wait is durably blocking.
type pipeNet struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once

	dials atomic.Int32
	// dial, if set, is called for each dial; a non-nil error fails it.
	dial func(ctx context.Context) error

	mu      sync.Mutex // guards clients
	clients []*faultyConn
}

func newPipeNet() *pipeNet {
	return &pipeNet{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (n *pipeNet) Accept() (net.Conn, error) {
	select {
	case c := <-n.conns:
		return c, nil
	case <-n.closed:
		return nil, net.ErrClosed
	}
}

func (n *pipeNet) Close() error {
	n.once.Do(func() { close(n.closed) })
	return nil
}

func (n *pipeNet) Addr() net.Addr { return pipeAddr{} }

func (n *pipeNet) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	n.dials.Add(1)
	if n.dial != nil {
		if err := n.dial(ctx); err != nil {
			return nil, err
		}
	}
	cli, srv := net.Pipe()
	select {
	case n.conns <- srv:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.closed:
		return nil, net.ErrClosed
	}
	fc := &faultyConn{Conn: cli}
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

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:80" }

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
