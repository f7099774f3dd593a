package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// WaitGeneration implements [storage.GenerationWaiter]. Every Save publishes the new
// generation on the entry's channel, "<prefix>{<hash>}:gen", in the same
// script that writes it; WaitGeneration subscribes to that channel, through
// one connection per Store shared by all its waiting calls, before it reads
// the stored generation, so that no write can slip between the read and the
// wait. Redis delivers messages at most once: after the subscription
// connection drops and is made again, and every RenewEvery in any case, the
// generation is read again rather than trusted to a message.
func (s *Store) WaitGeneration(ctx context.Context, name string, after uint64) (uint64, error) {
	k := s.keys(name)
	w, err := s.watch.add(ctx, s, k.channel)
	if err != nil {
		return 0, classify(ctx, "wait", name, err)
	}
	defer func() { go s.watch.remove(s, k.channel) }()
	select {
	case <-w.ready:
	case <-ctx.Done():
		return 0, fmt.Errorf("redisstore: wait %q: %w", name, ctx.Err())
	}
	if w.err != nil {
		return 0, classify(ctx, "wait", name, w.err)
	}
	t := time.NewTimer(s.opt.RenewEvery)
	defer t.Stop()
	for {
		changed := s.watch.changed(w)
		gen, err := s.generation(ctx, name)
		if err != nil {
			return 0, err
		}
		if gen != after {
			return gen, nil
		}
		select {
		case <-changed:
		case <-t.C:
			t.Reset(s.opt.RenewEvery)
		case <-ctx.Done():
			return 0, fmt.Errorf("redisstore: wait %q: %w", name, ctx.Err())
		}
	}
}

// watcher is the subscription connection a Store's WaitGeneration calls
// share. It exists while at least one call waits.
type watcher struct {
	cmd chan struct{} // one-slot semaphore: serialises subscription changes, which do I/O

	mu    sync.Mutex          // guards ps, stop and chans
	ps    *redis.PubSub       // nil when nothing is watched
	stop  chan struct{}       // closed when ps is given up
	chans map[string]*watched // by channel

	onReady func(ch string) // tests: a first subscription to ch was confirmed
	onIdle  func()          // tests: the connection was given up
}

// watched is one channel a watcher listens on.
type watched struct {
	refs    int           // calls waiting on it
	ready   chan struct{} // closed once Redis confirmed a subscription
	isReady bool
	err     error         // set before ready is closed when Redis refused the subscription
	wake    chan struct{} // closed, and replaced, on every message or confirmation
}

// semaphore returns w's command semaphore.
func (w *watcher) semaphore() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		w.cmd = make(chan struct{}, 1)
	}
	return w.cmd
}

// add registers a waiting call on ch, subscribing to it if it is the first.
func (w *watcher) add(ctx context.Context, s *Store, ch string) (*watched, error) {
	sem := w.semaphore()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sem }()

	w.mu.Lock()
	if e := w.chans[ch]; e != nil {
		e.refs++
		w.mu.Unlock()
		return e, nil
	}
	if w.ps == nil {
		// No channel yet: no I/O until the first Subscribe.
		w.ps, w.stop = s.c.Subscribe(context.Background()), make(chan struct{})
		w.chans = make(map[string]*watched)
		go w.dispatch(s, w.ps, w.stop)
	}
	ps := w.ps
	e := &watched{refs: 1, ready: make(chan struct{}), wake: make(chan struct{})}
	w.chans[ch] = e
	w.mu.Unlock()

	err := s.do(ctx, func(ctx context.Context) error { return ps.Subscribe(ctx, ch) })
	if err != nil {
		w.mu.Lock()
		e.refs--
		w.mu.Unlock()
		w.drop(s, ch, e)
		return nil, err
	}
	return e, nil
}

// remove unregisters a waiting call on ch, unsubscribing when it was the
// last, and closing the connection when no channel is left.
func (w *watcher) remove(s *Store, ch string) {
	sem := w.semaphore()
	sem <- struct{}{}
	defer func() { <-sem }()
	w.mu.Lock()
	e := w.chans[ch]
	e.refs--
	w.mu.Unlock()
	w.drop(s, ch, e)
}

// drop forgets ch if nothing waits on it any more. The caller holds w.cmd.
func (w *watcher) drop(s *Store, ch string, e *watched) {
	w.mu.Lock()
	if e.refs > 0 || w.chans[ch] != e {
		w.mu.Unlock()
		return
	}
	delete(w.chans, ch)
	ps, last := w.ps, len(w.chans) == 0
	if last {
		close(w.stop)
		w.ps, w.stop, w.chans = nil, nil, nil
	}
	w.mu.Unlock()
	if last {
		// In the background: a Subscribe abandoned by its caller may
		// still hold the connection until the client's own timeouts.
		go ps.Close()
		if w.onIdle != nil {
			w.onIdle()
		}
		return
	}
	s.do(context.Background(), func(ctx context.Context) error { return ps.Unsubscribe(ctx, ch) })
}

// changed returns the channel that the next message or confirmation on e
// closes.
func (w *watcher) changed(e *watched) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return e.wake
}

// dispatch receives from ps until it is given up (stop closed), waking the
// calls waiting on each channel that a message or a subscription
// confirmation names. A confirmation seen again, after go-redis made a new
// connection and subscribed anew, wakes them too: messages sent meanwhile
// were lost. After an error every call is woken, and receiving is tried
// again after a pause that grows to LeaseTTL.
func (w *watcher) dispatch(s *Store, ps *redis.PubSub, stop chan struct{}) {
	pause := s.opt.LockPoll
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			var rerr redis.Error
			if errors.As(err, &rerr) && !transient(err) {
				// An answer to a SUBSCRIBE, such as a missing
				// permission: the calls still waiting for a
				// confirmation will not get one.
				w.failPending(err)
			}
			w.wakeAll()
			t := time.NewTimer(pause)
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
			}
			pause = min(2*pause, s.opt.LeaseTTL)
			continue
		}
		pause = s.opt.LockPoll
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && w.wakeChannel(m.Channel, true) && w.onReady != nil {
				w.onReady(m.Channel)
			}
		case *redis.Message:
			w.wakeChannel(m.Channel, false)
		}
	}
}

// wakeChannel wakes the calls waiting on ch; confirmed marks a subscription
// confirmation, which makes the channel ready the first time, and then
// wakeChannel reports true.
func (w *watcher) wakeChannel(ch string, confirmed bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.chans[ch]
	if e == nil {
		return false
	}
	if confirmed && !e.isReady {
		e.isReady = true
		close(e.ready)
		return true
	}
	close(e.wake)
	e.wake = make(chan struct{})
	return false
}

// failPending ends the wait for a confirmation of every channel that has
// none yet, with err.
func (w *watcher) failPending(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.chans {
		if !e.isReady {
			e.isReady, e.err = true, err
			close(e.ready)
		}
	}
}

// wakeAll wakes every waiting call, to read its generation again.
func (w *watcher) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.chans {
		close(e.wake)
		e.wake = make(chan struct{})
	}
}
