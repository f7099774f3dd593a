package tokensource

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// stopSignal is a one-shot signal that is also a context.Context: done
// once fire is called, with no deadline and no values. A Source keeps two
// for as long as it lives, and every refresh, Put and Revoke watches them.
//
// A context.WithCancel would keep something of all that watching: the
// first context derived from it makes its done channel, and the map in
// which it keeps its children, which never shrinks. A stopSignal keeps
// nothing once the work that watched it is over. Work registers a function
// with AfterFunc and removes it when it ends; contexts derived from a
// stopSignal register the same way, since the context package uses the
// AfterFunc method of a parent that has one instead of its map. The done
// channel is made only if Done is called.
//
// The zero stopSignal is ready to use. A stopSignal is safe for concurrent
// use and must not be copied.
type stopSignal struct {
	fired atomic.Bool   // fire was called
	mu    sync.Mutex    // guards done and funcs
	done  chan struct{} // closed by fire; nil until Done is called
	funcs *afterFunc    // registered and not yet run nor stopped, most recent first
}

// afterFunc is a function registered with [stopSignal.AfterFunc], linked
// in both directions so that stopping it takes it out at once.
type afterFunc struct {
	f          func() // nil once run or stopped
	prev, next *afterFunc
}

// closedChan is what Done returns when the signal fired before anyone
// asked for its channel.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// fire ends the signal and runs the functions registered with AfterFunc,
// one after the other, before it returns: whatever watches the signal has
// been told when fire returns, as with a context.CancelFunc. Calls after
// the first do nothing.
func (sig *stopSignal) fire() {
	sig.mu.Lock()
	if sig.fired.Load() {
		sig.mu.Unlock()
		return
	}
	sig.fired.Store(true)
	if sig.done != nil {
		close(sig.done)
	}
	var run []func()
	for a := sig.funcs; a != nil; a = a.next {
		run = append(run, a.f)
		a.f = nil
	}
	sig.funcs = nil
	sig.mu.Unlock()
	for _, f := range run {
		f()
	}
}

// AfterFunc arranges for f to run when the signal fires, and returns a
// function that undoes the arrangement: it reports whether it stopped f
// from running, and frees what the arrangement took. If the signal has
// already fired, f runs at once in its own goroutine, as with
// context.AfterFunc. Otherwise fire runs f, which must not block.
//
// The context package calls this method to tie a context derived from the
// signal to it, where for a context of its own it would use a map.
func (sig *stopSignal) AfterFunc(f func()) (stop func() bool) {
	stop = sig.add(f)
	if stop == nil {
		go f()
		return func() bool { return false }
	}
	return stop
}

// add registers f to run when the signal fires, as AfterFunc does, and
// returns nil, without running f, if the signal has already fired.
func (sig *stopSignal) add(f func()) (stop func() bool) {
	sig.mu.Lock()
	defer sig.mu.Unlock()
	if sig.fired.Load() {
		return nil
	}
	a := &afterFunc{f: f, next: sig.funcs}
	if a.next != nil {
		a.next.prev = a
	}
	sig.funcs = a
	return func() bool { return sig.remove(a) }
}

// remove takes a out of the registered functions, and reports whether it
// was still there.
func (sig *stopSignal) remove(a *afterFunc) bool {
	sig.mu.Lock()
	defer sig.mu.Unlock()
	if a.f == nil {
		return false // run by fire, or removed before
	}
	a.f = nil
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		sig.funcs = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	}
	a.prev, a.next = nil, nil
	return true
}

// withDeadline returns a context that ends at deadline or when the signal
// fires, whichever comes first, as context.WithDeadline(sig, deadline)
// would, but without making the signal's done channel. Its cancel function
// also frees the signal of it.
func (sig *stopSignal) withDeadline(deadline time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	stop := sig.add(cancel)
	if stop == nil {
		cancel() // fired already: ended now, as a derived context would be
		return ctx, cancel
	}
	return ctx, func() {
		stop()
		cancel()
	}
}

// Deadline implements context.Context: a signal has no deadline.
func (sig *stopSignal) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context. The channel is made on the first call.
func (sig *stopSignal) Done() <-chan struct{} {
	sig.mu.Lock()
	defer sig.mu.Unlock()
	if sig.done == nil {
		if sig.fired.Load() {
			return closedChan
		}
		sig.done = make(chan struct{})
	}
	return sig.done
}

// Err implements context.Context: context.Canceled once the signal fired,
// and nil before.
func (sig *stopSignal) Err() error {
	// Under mu, as fire sets fired and closes done: Err is not nil exactly
	// when Done is closed, as the context package requires of a parent.
	sig.mu.Lock()
	defer sig.mu.Unlock()
	if sig.fired.Load() {
		return context.Canceled
	}
	return nil
}

// Value implements context.Context: a signal carries no values.
func (sig *stopSignal) Value(key any) any { return nil }
