package authserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fault changes how the server answers one request.
//
// Status, Body and Drop replace the answer: the request is not processed,
// so no grant takes effect (no token is issued or rotated). Mutate,
// Truncate and SlowBody spoil a normal answer whose grant did take effect:
// this is how a test makes "the refresh reached the server but the client
// never got the new token". Delay waits before either; a client that gives
// up during the delay leaves the request unprocessed.
//
// AnswerAfter and Hold make an answer arrive after the client gave up: the
// request is processed at once (a refresh token is rotated), then its
// answer waits, whether or not the client is still there, before it is
// sent as the other fields say.
type Fault struct {
	Status      int           // answer with this status
	Body        string        // answer with this body (status 200 unless Status is set)
	ContentType string        // Content-Type of Body; default application/json
	RetryAfter  string        // Retry-After header value, sent verbatim
	Delay       time.Duration // wait before answering
	Drop        bool          // close the connection without answering

	Mutate   func(resp map[string]any) // edit the normal JSON answer before it is sent
	Truncate int                       // send only the first Truncate bytes of the normal answer, then close
	SlowBody time.Duration             // send the headers, then the normal answer one byte at a time over this long

	AnswerAfter time.Duration // process the request, then hold its answer this long
	Hold        *Hold         // process the request, then hold its answer until Hold is released
}

// Hold holds a processed request's answer until the test releases it, and
// tells the test when the request has been processed. Create it with
// NewHold. Meant for one request: given to several (through SetFailRate),
// Processed tells of the first, and Release lets them all go.
type Hold struct {
	processed     chan struct{}
	release       chan struct{}
	processedOnce sync.Once
	releaseOnce   sync.Once
}

// NewHold returns a Hold that is not released.
func NewHold() *Hold {
	return &Hold{processed: make(chan struct{}), release: make(chan struct{})}
}

// Processed is closed once the request has been processed and its answer
// is ready (for a replacing fault, once the answer is ready).
func (h *Hold) Processed() <-chan struct{} { return h.processed }

// Release lets the answer go. It may be called more than once, and before
// the request arrives.
func (h *Hold) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

func (f Fault) replaces() bool { return f.Status != 0 || f.Body != "" || f.Drop }

// spoils reports whether f delays or cuts a processed request's answer, so
// that the client may never get the tokens it issued. An answer rewritten
// by Mutate still arrives: what it carries is the client's to keep.
func (f Fault) spoils() bool {
	return f.Truncate > 0 || f.SlowBody > 0 || f.Hold != nil || f.AnswerAfter > 0
}

// faults holds what is injected, per endpoint.
type faults struct {
	mu      sync.Mutex // guards the fields below
	queue   map[string][]Fault
	rate    map[string]float64
	rateF   map[string]Fault
	latency map[string]time.Duration
	rng     *rand.Rand
}

func (f *faults) init() {
	f.queue = make(map[string][]Fault)
	f.rate = make(map[string]float64)
	f.rateF = make(map[string]Fault)
	f.latency = make(map[string]time.Duration)
	f.rng = rand.New(rand.NewPCG(1, 2))
}

// next returns the latency to add and the fault for one request, if any.
func (f *faults) next(endpoint string) (time.Duration, Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lat := f.latency[endpoint]
	if q := f.queue[endpoint]; len(q) > 0 {
		f.queue[endpoint] = q[1:]
		return lat, q[0], true
	}
	if r := f.rate[endpoint]; r > 0 && f.rng.Float64() < r {
		return lat, f.rateF[endpoint], true
	}
	return lat, Fault{}, false
}

// Inject queues faults for the next requests to endpoint, one per request,
// in order.
func (s *Server) Inject(endpoint string, faults ...Fault) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.queue[endpoint] = append(s.faults.queue[endpoint], faults...)
}

// SetFailRate makes each request to endpoint fail with f with probability
// rate, drawn from a seeded generator. Zero turns it off. Queued faults
// from Inject come first.
func (s *Server) SetFailRate(endpoint string, rate float64, f Fault) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.rate[endpoint] = rate
	s.faults.rateF[endpoint] = f
}

// SetLatency adds d to every request to endpoint.
func (s *Server) SetLatency(endpoint string, d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency[endpoint] = d
}

// wrap counts requests to endpoint and applies latency and faults.
func (s *Server) wrap(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.stats.count(endpoint)
		lat, f, faulty := s.faults.next(endpoint)
		if !sleep(r, lat+f.Delay) {
			return // the client went away
		}
		sp := &spending{by: r.UserAgent(), spoiled: faulty && f.spoils()}
		defer s.answered(r, sp)
		r = r.WithContext(context.WithValue(r.Context(), spendingKey{}, sp))
		if !faulty {
			h(w, r)
			return
		}
		s.stats.faultsInjected.Add(1)
		if f.replaces() {
			s.holdAnswer(f)
			writeFault(w, f)
			return
		}
		rec := httptest.NewRecorder()
		h(rec, r)
		s.holdAnswer(f)
		s.spoil(w, r, rec, f)
	}
}

// answered notes when the answer to the request that sp describes was
// over, and that it was lost if the client had gone by then.
func (s *Server) answered(r *http.Request, sp *spending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp.done = s.now()
	if r.Context().Err() != nil {
		sp.spoiled = true
	}
}

// holdAnswer waits as f's AnswerAfter and Hold say, whether or not the
// client is still there. If the server closes meanwhile, it drops the
// connection without an answer.
func (s *Server) holdAnswer(f Fault) {
	if !s.waitToAnswer(f) {
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) waitToAnswer(f Fault) bool {
	if f.Hold != nil {
		f.Hold.processedOnce.Do(func() { close(f.Hold.processed) })
		select {
		case <-f.Hold.release:
		case <-s.done:
			return false
		}
	}
	if f.AnswerAfter > 0 {
		t := time.NewTimer(f.AnswerAfter)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.done:
			return false
		}
	}
	return true
}

// sleep waits d unless the request's context ends first.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	// An HTTP/1 server notices that the client went away only once the
	// request body has been read to its end: read it now, so that the wait
	// below ends when the client gives up and the request stays unprocessed.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func writeFault(w http.ResponseWriter, f Fault) {
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	status, body, ct := f.Status, f.Body, f.ContentType
	if status == 0 {
		status = http.StatusOK
	}
	if body == "" {
		body, ct = http.StatusText(status)+"\n", "text/plain; charset=utf-8"
	}
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// spoil sends a recorded normal answer, edited, cut short or slowed.
func (s *Server) spoil(w http.ResponseWriter, r *http.Request, rec *httptest.ResponseRecorder, f Fault) {
	body := rec.Body.Bytes()
	if f.Mutate != nil {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			f.Mutate(m)
			body, _ = json.Marshal(m)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	switch {
	case f.Truncate > 0 && f.Truncate < len(body):
		w.Write(body[:f.Truncate])
		// Returning short of Content-Length makes the server close the
		// connection: the client reads an unexpected EOF.
	case f.SlowBody > 0 && len(body) > 0:
		step := f.SlowBody / time.Duration(len(body))
		fl, _ := w.(http.Flusher)
		t := time.NewTimer(step)
		defer t.Stop()
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			t.Reset(step)
			select {
			case <-t.C:
			case <-r.Context().Done(): // the client went away: the rest would go nowhere
				return
			case <-s.done:
				return
			}
		}
	default:
		w.Write(bytes.Clone(body))
	}
}

// Stats counts requests since the server started or ResetStats.
type Stats struct {
	TokenRequests           int64 // requests to the token endpoint, faulty ones included
	RefreshGrants           int64 // refresh_token grants processed, refused ones included
	RefreshesGranted        int64 // of RefreshGrants, those answered with new tokens
	CodeGrants              int64
	DeviceGrants            int64 // device_code polls processed
	ClientCredentialsGrants int64
	ReuseDetections         int64 // retired refresh tokens presented again
	RevokeRequests          int64 // requests to the revocation endpoint, faulty and refused ones included
	Revocations             int64 // revocation requests processed
	ResourceRequests        int64 // requests to the resource and userinfo endpoints
	ResourceUnauthorized    int64 // of which answered 401
	FaultsInjected          int64
}

type counters struct {
	tokenRequests, refreshGrants, refreshesGranted, codeGrants, deviceGrants atomic.Int64
	clientCredentialsGrants, reuseDetections, revokeRequests, revocations    atomic.Int64
	resourceRequests, resourceUnauthorized, faultsInjected                   atomic.Int64
}

func (c *counters) count(endpoint string) {
	switch endpoint {
	case EndpointToken:
		c.tokenRequests.Add(1)
	case EndpointRevoke:
		c.revokeRequests.Add(1)
	case EndpointResource, EndpointUserinfo:
		c.resourceRequests.Add(1)
	}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		TokenRequests:           c.tokenRequests.Load(),
		RefreshGrants:           c.refreshGrants.Load(),
		RefreshesGranted:        c.refreshesGranted.Load(),
		CodeGrants:              c.codeGrants.Load(),
		DeviceGrants:            c.deviceGrants.Load(),
		ClientCredentialsGrants: c.clientCredentialsGrants.Load(),
		ReuseDetections:         c.reuseDetections.Load(),
		RevokeRequests:          c.revokeRequests.Load(),
		Revocations:             c.revocations.Load(),
		ResourceRequests:        c.resourceRequests.Load(),
		ResourceUnauthorized:    c.resourceUnauthorized.Load(),
		FaultsInjected:          c.faultsInjected.Load(),
	}
}

// ResetStats sets every counter to zero.
func (s *Server) ResetStats() {
	c := &s.stats
	for _, n := range []*atomic.Int64{
		&c.tokenRequests, &c.refreshGrants, &c.refreshesGranted, &c.codeGrants, &c.deviceGrants,
		&c.clientCredentialsGrants, &c.reuseDetections, &c.revokeRequests, &c.revocations,
		&c.resourceRequests, &c.resourceUnauthorized, &c.faultsInjected,
	} {
		n.Store(0)
	}
}
