// Package pipenet is an in-memory network for net/http: a listener whose
// connections are net.Pipe ends, and a dialler that reaches it whatever
// address it is given.
//
// Inside a testing/synctest bubble every wait on such a connection is
// durably blocking, so a test of timeouts, delays and abandoned requests
// runs on the bubble's clock: exactly, at once, and the same on a loaded
// machine as on an idle one. A loopback socket is not durably blocking, and
// a test using one measures the machine.
package pipenet

import (
	"context"
	"net"
	"sync"
)

// Listener is an in-memory net.Listener. Its zero value is not usable; call
// Listen.
type Listener struct {
	addr   addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// Listen returns a listener that reports address as its own, for URLs; no
// socket is opened.
func Listen(address string) *Listener {
	return &Listener{addr: addr(address), conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next connection dialled.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and makes later dials fail. Connections already made
// stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the address given to Listen.
func (l *Listener) Addr() net.Addr { return l.addr }

// DialContext connects to the listener, whatever network and address say:
// it has the signature of http.Transport.DialContext. It waits until the
// listener accepts, ctx ends, or the listener is closed.
func (l *Listener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	case <-l.closed:
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: l.addr, Err: net.ErrClosed}
	}
}

type addr string

func (addr) Network() string  { return "pipe" }
func (a addr) String() string { return string(a) }
