package oauthwire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// ErrInDoubt is wrapped, together with its cause (the context's error, an
// unexpected EOF, a reset connection), by errors about requests whose
// outcome is unknown: the request was written to the wire but no complete
// answer was read. The provider may have processed it — for a refresh
// token grant, rotated the refresh token — so presenting the same grant
// again may be refused as reuse.
var ErrInDoubt = errors.New("request in doubt: the request reached the wire but no answer was read; the provider may have processed it")

// InDoubt reports whether err is, or wraps, ErrInDoubt.
func InDoubt(err error) bool { return errors.Is(err, ErrInDoubt) }

type sendTimeoutKey struct{}

// WithSendTimeout returns a copy of ctx under which each request of a
// [Client] must be on the wire within d: d bounds connecting (DNS, TCP,
// TLS, a connection from the pool) and writing the request, not waiting
// for the answer. A request not written when d passes is cancelled, and its
// error wraps context.DeadlineExceeded without ErrInDoubt: the provider
// never received it. Once it is written, its answer is awaited until ctx
// itself ends, since cancelling it would not undo what the provider did.
// d <= 0 means no send timeout.
//
// The moment the request is written is reported by net/http through
// [httptrace.ClientTrace]: WroteRequest without an error. From the moment
// its headers are written (WroteHeaders) the request counts as on its way:
// the send timeout no longer cancels it, and a failure that follows is in
// doubt unless the transport reports that the write itself failed. An
// [http.RoundTripper] that reports neither is bounded by ctx alone once it
// returns an answer; until then the send timeout cancels it.
func WithSendTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, sendTimeoutKey{}, d)
}

func sendTimeout(ctx context.Context) time.Duration {
	d, _ := ctx.Value(sendTimeoutKey{}).(time.Duration)
	return d
}

// progress follows one request through the transport's trace hooks.
//
// Over HTTP/1.1, net/http reports WroteRequest once the request is in the
// connection's write buffer, just before flushing it; a flush that fails
// writes nothing, and on a pooled connection the transport then tries
// again on a new one. Until then the request counts as written: a failure
// after WroteRequest is in doubt, a conservative answer for the rare
// connection that dies in between.
type progress struct {
	mu      sync.Mutex // guards the fields below
	writing bool       // headers written in this attempt, the end of the write not yet reported
	written bool       // this attempt wrote the request whole, or an answer arrived
	expired bool       // the send timeout passed first and cancelled the request
}

func (p *progress) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		// A transport starts an attempt by asking for a connection. Over
		// HTTP/1.1, net/http sends a POST again only when the previous
		// attempt wrote nothing to its connection (a pooled connection
		// found dead); over HTTP/2, only when the provider refused the
		// stream unprocessed. A new attempt therefore clears what the
		// previous one reported.
		GetConn: func(string) { p.attempt() },
		GotConn: func(httptrace.GotConnInfo) { p.attempt() },
		WroteHeaders: func() {
			p.mu.Lock()
			p.writing = true
			p.mu.Unlock()
		},
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			p.mu.Lock()
			p.writing = false
			p.written = info.Err == nil
			p.mu.Unlock()
		},
	}
}

func (p *progress) attempt() {
	p.mu.Lock()
	p.writing, p.written = false, false
	p.mu.Unlock()
}

// expire reports whether the send timeout may cancel the request, and if
// so records that it did.
func (p *progress) expire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.written || p.writing {
		return false
	}
	p.expired = true
	return true
}

// answered records that the answer's headers arrived: whatever the trace
// said, the request was written.
func (p *progress) answered() {
	p.mu.Lock()
	p.written = true
	p.mu.Unlock()
}

// onWire reports whether the request may have reached the provider whole.
func (p *progress) onWire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written || p.writing
}

// exchange sends req under ctx and reads the whole answer, applying ctx's
// send timeout. Errors are classified:
//   - nothing sent, send timeout passed: wraps context.DeadlineExceeded;
//   - nothing sent, other failure: the transport's error as it is;
//   - sent, no answer or an answer cut short: wraps ErrInDoubt and the
//     cause.
//
// When the answer's headers arrived but its body could not be read whole,
// resp is returned with the part of the body read, and err wraps
// ErrInDoubt: whether that matters depends on the status, which the
// caller judges. The response body is closed.
func (c *Client) exchange(ctx context.Context, req *http.Request) (resp *http.Response, body []byte, err error) {
	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := new(progress)
	sendCtx = httptrace.WithClientTrace(sendCtx, p.trace())
	d := sendTimeout(ctx)
	if d > 0 {
		timer := time.AfterFunc(d, func() {
			if p.expire() {
				cancel()
			}
		})
		defer timer.Stop()
	}
	resp, err = c.httpClient().Do(req.WithContext(sendCtx))
	if err != nil {
		switch {
		case p.onWire():
			return nil, nil, fmt.Errorf("%w: %w", ErrInDoubt, err)
		case ctx.Err() == nil && p.expiredFirst():
			return nil, nil, fmt.Errorf("%s %s: request not written within the send timeout of %v: %w", req.Method, req.URL.Redacted(), d, context.DeadlineExceeded)
		}
		return nil, nil, err
	}
	p.answered()
	defer resp.Body.Close()
	body, err = readBody(resp.Body)
	if err != nil && !errors.Is(err, ErrMalformed) {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		return resp, body, fmt.Errorf("%w: %w", ErrInDoubt, err)
	}
	return resp, body, err
}

func (p *progress) expiredFirst() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.expired
}
