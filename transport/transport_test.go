package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/authserver"
	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
	"github.com/tokenkeep/tokenkeep/transport"
)

var _ transport.TokenSource = (*tokensource.Source)(nil)

// newServer starts an authorization server that rotates refresh tokens.
func newServer(t testing.TB) *authserver.Server {
	t.Helper()
	srv := authserver.New(authserver.Config{AccessTTL: time.Hour, Rotate: true})
	t.Cleanup(srv.Close)
	return srv
}

// newSource returns a Source that refreshes at srv. If login is set, it
// holds a new login for scopes.
func newSource(t testing.TB, srv *authserver.Server, login bool, scopes ...string) *tokensource.Source {
	t.Helper()
	r, err := tokensource.NewConfigRefresher(srv.OAuth2Config(scopes...), srv.RevocationURL(), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var st storage.Memory
	src, err := tokensource.New(r, &st, "key")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if login {
		if err := src.Put(context.Background(), srv.Mint(scopes...)); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// fakeSource issues numbered tokens. A token stays current until it is
// invalidated, unless sticky is set.
type fakeSource struct {
	sticky bool  // Invalidate does nothing
	fail   error // if set, TokenContext fails from call failFrom on
	// failFrom is the first call that fails; 0 means the first.
	failFrom int64

	calls       atomic.Int64
	invalidated atomic.Int64

	mu     sync.Mutex // guards cur and issued
	cur    *oauth2.Token
	issued int
}

func (s *fakeSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	n := s.calls.Add(1)
	if s.fail != nil && n > s.failFrom {
		return nil, s.fail
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		s.issued++
		s.cur = &oauth2.Token{AccessToken: fmt.Sprintf("tkat_fake_%d", s.issued), TokenType: "bearer"}
	}
	return s.cur, nil
}

func (s *fakeSource) Invalidate(used *oauth2.Token) {
	s.invalidated.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sticky && s.cur == used {
		s.cur = nil
	}
}

// recorder is a RoundTripper that records requests and answers each with
// the next of its responses (200 once they run out).
type recorder struct {
	mu        sync.Mutex // guards the fields below
	reqs      []*http.Request
	auth      []string
	bodies    []string
	responses []*http.Response
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.bodies = append(r.bodies, string(body))
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody}
	if len(r.responses) > 0 {
		resp, r.responses = r.responses[0], r.responses[1:]
	}
	resp.Request = req
	return resp, nil
}

// unauthorized returns a 401 response with the given challenges, and a body
// that records whether it was closed.
func unauthorized(challenges ...string) *http.Response {
	return &http.Response{
		StatusCode: http.StatusUnauthorized,
		Header:     http.Header{"Www-Authenticate": challenges},
		Body:       &trackedBody{Reader: strings.NewReader("unauthorized")},
	}
}

// trackedBody is a body that records whether it was closed.
type trackedBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackedBody) Close() error {
	b.closed.Store(true)
	return nil
}

const invalidToken = `Bearer realm="test", error="invalid_token"`

func TestTrustedHosts(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
		urls  []string
		want  []bool // whether each request carries the token
	}{
		{"pin same origin", nil, []string{"https://api.example.com/a", "https://API.example.com:443/b"}, []bool{true, true}},
		{"pin other host", nil, []string{"https://api.example.com/", "https://evil.example.com/"}, []bool{true, false}},
		{"pin subdomain", nil, []string{"https://example.com/", "https://api.example.com/"}, []bool{true, false}},
		{"pin other port", nil, []string{"https://api.example.com/", "https://api.example.com:8443/"}, []bool{true, false}},
		{"pin downgrade", nil, []string{"https://api.example.com/", "http://api.example.com/"}, []bool{true, false}},
		{"pin downgrade same port", nil, []string{"https://127.0.0.1:8443/", "http://127.0.0.1:8443/"}, []bool{true, false}},
		{"pin loopback http and upgrade", nil, []string{"http://127.0.0.1:8080/", "https://127.0.0.1:8080/"}, []bool{true, true}},
		{"pin plain http", nil, []string{"http://api.example.com/", "http://api.example.com/"}, []bool{false, false}},
		{"pin userinfo", nil, []string{"https://u:p@api.example.com/", "https://api.example.com/"}, []bool{true, true}},
		{"pin ipv6", nil, []string{"http://[::1]:8080/", "http://[::1]:8081/"}, []bool{true, false}},
		{"hosts", []string{"api.example.com"}, []string{
			"https://api.example.com/", "https://API.EXAMPLE.COM:443/", "https://api.example.com:8443/",
			"https://other.example.com/", "http://api.example.com/",
		}, []bool{true, true, false, false, false}},
		{"hosts do not pin", []string{"a.example"}, []string{"https://b.example/", "https://a.example/"}, []bool{false, true}},
		{"hosts port", []string{"API.example.com:8443"}, []string{"https://api.example.com:8443/", "https://api.example.com/"}, []bool{true, false}},
		{"hosts default port", []string{"api.example.com:443"}, []string{"https://api.example.com/", "http://api.example.com:443/"}, []bool{true, false}},
		{"hosts plain http", []string{"http://internal:8080"}, []string{"http://internal:8080/", "https://internal:8080/", "http://internal/"}, []bool{true, true, false}},
		{"hosts https prefix", []string{"https://api.example.com/"}, []string{"https://api.example.com/", "http://api.example.com/"}, []bool{true, false}},
		{"hosts loopback", []string{"localhost:9000", "[::1]:8080", "::2"}, []string{
			"http://localhost:9000/", "http://LOCALHOST:9001/", "http://[::1]:8080/", "https://[::2]/", "http://[::2]/",
		}, []bool{true, false, true, true, false}},
		{"other scheme", nil, []string{"ftp://api.example.com/"}, []bool{false}},
		// Hosts are compared as they are dialled, in their IDNA ASCII
		// form, not by Unicode case folding, which equates σ and ς.
		{"pin final sigma", nil, []string{"https://σσ.example/", "https://σς.example/", "https://ΣΣ.example/"}, []bool{true, false, true}},
		{"hosts final sigma", []string{"σσ.example"}, []string{"https://σς.example/", "https://ΣΣ.example/", "https://xn--4xaa.example/"}, []bool{false, true, true}},
		{"pin sharp s", nil, []string{"https://straße.example/", "https://strasse.example/"}, []bool{true, false}},
		{"hosts IDNA forms", []string{"BÜCHER.example"}, []string{"https://xn--bcher-kva.example/", "https://bücher.example/", "https://bucher.example/"}, []bool{true, true, false}},
		{"pin ASCII, then its Unicode spelling", nil, []string{"https://xn--bcher-kva.example/", "https://Bücher.example/"}, []bool{true, true}},
		{"pin host with no IDNA form", nil, []string{"https://σ_σ.example/", "https://σ_σ.example/", "https://a.example/"}, []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			tr := &transport.Transport{Source: &fakeSource{}, Base: rec, Hosts: tt.hosts}
			for i, u := range tt.urls {
				req, err := http.NewRequest(http.MethodGet, u, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				got := rec.auth[i]
				if want := tt.want[i]; (got != "") != want {
					t.Errorf("%s: got Authorization %q, want token: %v", u, got, want)
				}
			}
		})
	}
}

// headerServer starts a server that records the Authorization header of
// every request and answers with h.
func headerServer(t *testing.T, tls bool, h http.HandlerFunc) (*httptest.Server, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	handler := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		h(w, r)
	}
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(http.HandlerFunc(handler))
	} else {
		srv = httptest.NewServer(http.HandlerFunc(handler))
	}
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestRedirectLeavesToken(t *testing.T) {
	tests := []struct {
		name     string
		fromTLS  bool
		withHost bool // list the first server in Hosts instead of pinning
	}{
		{"cross host", false, false},
		{"cross host listed", false, true},
		{"https to http", true, false},
		{"https to http listed", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			second, secondSeen := headerServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "second")
			})
			first, firstSeen := headerServer(t, tt.fromTLS, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, second.URL+"/landing", http.StatusFound)
			})
			opts := []transport.Option{transport.WithBase(first.Client().Transport)}
			if tt.withHost {
				opts = append(opts, transport.WithHosts(first.Listener.Addr().String()))
			}
			client := transport.NewClient(&fakeSource{}, opts...)
			resp, err := client.Get(first.URL + "/start")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "second" {
				t.Fatalf("got body %q, want the second server's", body)
			}
			if got, want := *firstSeen, []string{"Bearer tkat_fake_1"}; !reflect.DeepEqual(got, want) {
				t.Errorf("first server got Authorization %q, want %q", got, want)
			}
			if got, want := *secondSeen, []string{""}; !reflect.DeepEqual(got, want) {
				t.Errorf("second server got Authorization %q, want %q", got, want)
			}
		})
	}
}

// barrier holds every 401 answer until n of them have arrived, so that all
// of n concurrent requests are refused before any of them recovers.
type barrier struct {
	base    http.RoundTripper
	n       int64
	arrived atomic.Int64
	all     chan struct{}
}

func (b *barrier) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		if b.arrived.Add(1) == b.n {
			close(b.all)
		}
		select {
		case <-b.all:
		case <-req.Context().Done():
		}
	}
	return resp, err
}

func TestUnauthorizedStorm(t *testing.T) {
	const n = 100
	srv := newServer(t)
	src := newSource(t, srv, true)
	tr := &barrier{base: srv.Client().Transport, n: n, all: make(chan struct{})}
	client := transport.NewClient(src, transport.WithBase(tr))
	srv.ExpireAccessTokens()
	srv.ResetStats()

	var wg sync.WaitGroup
	var ok atomic.Int64
	for range n {
		wg.Go(func() {
			resp, err := client.Get(srv.ResourceURL())
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	st := srv.Stats()
	if ok.Load() != n || st.TokenRequests != 1 || st.RefreshGrants != 1 || st.ResourceRequests != 2*n || st.ResourceUnauthorized != n {
		t.Errorf("got %d OK, %d token requests, %d refresh grants, %d resource requests of which %d unauthorized; want %d, 1, 1, %d, %d",
			ok.Load(), st.TokenRequests, st.RefreshGrants, st.ResourceRequests, st.ResourceUnauthorized, n, 2*n, n)
	}
}

func TestReplayBody(t *testing.T) {
	payload := strings.Repeat("payload ", 1000)
	for _, tt := range []struct {
		name string
		body func() io.Reader
	}{
		{"bytes.Reader", func() io.Reader { return bytes.NewReader([]byte(payload)) }},
		{"strings.Reader", func() io.Reader { return strings.NewReader(payload) }},
		{"bytes.Buffer", func() io.Reader { return bytes.NewBufferString(payload) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var bodies, auths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				auths = append(auths, r.Header.Get("Authorization"))
				first := len(bodies) == 1
				mu.Unlock()
				if first {
					w.Header().Set("WWW-Authenticate", invalidToken)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				io.WriteString(w, "stored")
			}))
			defer srv.Close()
			src := &fakeSource{}
			req, err := http.NewRequest(http.MethodPost, srv.URL, tt.body())
			if err != nil {
				t.Fatal(err)
			}
			resp, err := transport.NewClient(src).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want 200", resp.StatusCode)
			}
			if len(bodies) != 2 || bodies[0] != payload || bodies[1] != payload {
				t.Errorf("got %d requests with bodies of %v bytes, want 2 with the %d-byte payload", len(bodies), lens(bodies), len(payload))
			}
			if want := []string{"Bearer tkat_fake_1", "Bearer tkat_fake_2"}; !reflect.DeepEqual(auths, want) {
				t.Errorf("got Authorization %q, want %q", auths, want)
			}
		})
	}
}

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}

func TestReplayBodyAuthserver(t *testing.T) {
	srv := newServer(t)
	src := newSource(t, srv, true)
	client := transport.NewClient(src)
	srv.ExpireAccessTokens()
	payload := []byte(`{"item":"42"}`)
	resp, err := client.Post(srv.ResourceURL(), "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Method string `json:"method"`
		Sum    string `json:"body_sha256"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	sum := sha256.Sum256(payload)
	if want := hex.EncodeToString(sum[:]); got.Method != http.MethodPost || got.Sum != want {
		t.Errorf("replay got %s with body digest %s, want POST with %s", got.Method, got.Sum, want)
	}
	if st := srv.Stats(); st.ResourceRequests != 2 || st.RefreshGrants != 1 {
		t.Errorf("got %d resource requests and %d refreshes, want 2 and 1", st.ResourceRequests, st.RefreshGrants)
	}
}

func TestNoReplayWithoutGetBody(t *testing.T) {
	srv := newServer(t)
	src := newSource(t, srv, true)
	client := transport.NewClient(src)
	srv.ExpireAccessTokens()
	srv.ResetStats()
	// A reader http.NewRequest does not know gets no GetBody.
	body := struct{ io.Reader }{strings.NewReader("once only")}
	resp, err := client.Post(srv.ResourceURL(), "text/plain", body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "invalid token") {
		t.Errorf("got %d %q, want the server's 401 untouched", resp.StatusCode, b)
	}
	if st := srv.Stats(); st.ResourceRequests != 1 || st.TokenRequests != 0 {
		t.Errorf("got %d resource and %d token requests, want 1 and 0", st.ResourceRequests, st.TokenRequests)
	}
	// The refused token was invalidated: the next request refreshes first.
	resp, err = client.Get(srv.ResourceURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := srv.Stats(); resp.StatusCode != http.StatusOK || st.ResourceRequests != 2 || st.RefreshGrants != 1 {
		t.Errorf("next request: got %d after %d resource requests and %d refreshes, want 200, 2, 1", resp.StatusCode, st.ResourceRequests, st.RefreshGrants)
	}
}

func TestWhichAnswersRecover(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header []string
		want   int // requests sent
	}{
		{"401 invalid_token", 401, []string{invalidToken}, 2},
		{"401 no header", 401, nil, 2},
		{"401 bearer without error", 401, []string{`Bearer realm="test"`}, 2},
		{"401 basic only", 401, []string{`Basic realm="test"`}, 2},
		{"401 case-insensitive", 401, []string{`bEaReR ERROR="invalid_token"`}, 2},
		{"401 second challenge", 401, []string{`Basic realm="x", Bearer error="invalid_token"`}, 2},
		{"401 second header", 401, []string{`Basic realm="x"`, `Bearer error=invalid_token`}, 2},
		{"401 insufficient_scope", 401, []string{`Bearer realm="test", error="insufficient_scope", scope="admin"`}, 1},
		{"401 invalid_request", 401, []string{`Bearer error="invalid_request"`}, 1},
		{"403 insufficient_scope", 403, []string{`Bearer error="insufficient_scope"`}, 1},
		{"403 invalid_token", 403, []string{invalidToken}, 1},
		{"500", 500, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := unauthorized(tt.header...)
			first.StatusCode = tt.status
			rec := &recorder{responses: []*http.Response{first}}
			src := &fakeSource{}
			tr := &transport.Transport{Source: src, Base: rec}
			req, err := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := len(rec.reqs); got != tt.want {
				t.Fatalf("got %d requests, want %d", got, tt.want)
			}
			if tt.want == 1 {
				if resp != first || src.invalidated.Load() != 0 {
					t.Errorf("got response %p and %d invalidations, want the first response %p and none", resp, src.invalidated.Load(), first)
				}
				return
			}
			if !first.Body.(*trackedBody).closed.Load() || resp.StatusCode != 200 {
				t.Errorf("got status %d, first body closed %v; want 200, true", resp.StatusCode, first.Body.(*trackedBody).closed.Load())
			}
			if want := []string{"Bearer tkat_fake_1", "Bearer tkat_fake_2"}; !reflect.DeepEqual(rec.auth, want) {
				t.Errorf("got Authorization %q, want %q", rec.auth, want)
			}
		})
	}
}

func TestFinalAnswersAuthserver(t *testing.T) {
	srv := newServer(t)
	src := newSource(t, srv, true, "read")
	client := transport.NewClient(src)
	srv.ResetStats()
	resp, err := client.Get(srv.ResourceURL() + "/admin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := srv.Stats(); resp.StatusCode != http.StatusForbidden || st.ResourceRequests != 1 || st.TokenRequests != 0 {
		t.Errorf("got %d after %d resource and %d token requests, want 403, 1, 0", resp.StatusCode, st.ResourceRequests, st.TokenRequests)
	}
}

func TestAtMostOneReplay(t *testing.T) {
	for _, tt := range []struct {
		name   string
		sticky bool // the source offers the same token again
		want   []string
	}{
		{"new token", false, []string{"Bearer tkat_fake_1", "Bearer tkat_fake_2"}},
		{"same token", true, []string{"Bearer tkat_fake_1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := headerServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("WWW-Authenticate", invalidToken)
				http.Error(w, "no", http.StatusUnauthorized)
			})
			resp, err := transport.NewClient(&fakeSource{sticky: tt.sticky}).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("got status %d, want 401", resp.StatusCode)
			}
			if !reflect.DeepEqual(*seen, tt.want) {
				t.Errorf("server got Authorization %q, want %q", *seen, tt.want)
			}
		})
	}
}

func TestRequestUnchanged(t *testing.T) {
	rec := &recorder{responses: []*http.Response{unauthorized(invalidToken)}}
	tr := &transport.Transport{Source: &fakeSource{}, Base: rec}
	req, err := http.NewRequest(http.MethodPut, "https://api.example.com/items/1?x=y", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", "b")
	req.Header["X-Suppressed"] = nil
	before, header, u := *req, req.Header.Clone(), *req.URL

	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := *req
	if reflect.ValueOf(after.GetBody).Pointer() != reflect.ValueOf(before.GetBody).Pointer() {
		t.Error("request GetBody changed")
	}
	after.GetBody, before.GetBody = nil, nil // functions are never DeepEqual
	if !reflect.DeepEqual(after, before) || !reflect.DeepEqual(req.Header, header) || !reflect.DeepEqual(*req.URL, u) {
		t.Errorf("request changed:\n got %+v %v\nwant %+v %v", after, req.Header, before, header)
	}
	if len(rec.reqs) != 2 {
		t.Fatalf("got %d requests, want 2", len(rec.reqs))
	}
	for i, sent := range rec.reqs {
		if sent == req {
			t.Errorf("request %d is the caller's", i)
		}
		want := header.Clone()
		want.Set("Authorization", fmt.Sprintf("Bearer tkat_fake_%d", i+1))
		if !reflect.DeepEqual(sent.Header, want) {
			t.Errorf("request %d: got header %v, want %v", i, sent.Header, want)
		}
		if rec.bodies[i] != "body" {
			t.Errorf("request %d: got body %q, want %q", i, rec.bodies[i], "body")
		}
	}
}

// authorizationFields counts the Authorization fields h would send: net/http
// writes a key as it is spelt in the map.
func authorizationFields(h http.Header) int {
	n := 0
	for k, vv := range h {
		if strings.EqualFold(k, "Authorization") {
			n += len(vv)
		}
	}
	return n
}

func TestPresetAuthorization(t *testing.T) {
	for _, name := range []string{"Authorization", "authorization", "AUTHORIZATION"} {
		for _, preset := range []string{"Basic dXNlcjpwYXNz", ""} {
			t.Run(fmt.Sprintf("%s %q", name, preset), func(t *testing.T) {
				testPresetAuthorization(t, name, preset)
			})
		}
	}
}

// testPresetAuthorization sends a request whose header map holds name,
// set to preset.
func testPresetAuthorization(t *testing.T, name, preset string) {
	first := unauthorized(invalidToken)
	rec := &recorder{responses: []*http.Response{first}}
	src := &fakeSource{}
	tr := &transport.Transport{Source: src, Base: rec}
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header[name] = []string{preset}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(rec.reqs) != 1 || rec.reqs[0] != req || resp != first {
		t.Errorf("got %d requests, want the caller's request sent once and its 401 returned", len(rec.reqs))
	}
	if n := authorizationFields(rec.reqs[0].Header); n != 1 {
		t.Errorf("the request went out with %d Authorization fields, want the caller's one", n)
	}
	if src.calls.Load() != 0 || src.invalidated.Load() != 0 {
		t.Errorf("source got %d token calls and %d invalidations, want none", src.calls.Load(), src.invalidated.Load())
	}

	// The request pinned its origin: where a redirect might lead
	// next, no token follows.
	req, err = http.NewRequest(http.MethodGet, "https://elsewhere.example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := rec.auth[len(rec.auth)-1]; got != "" {
		t.Errorf("request to another host after the first got Authorization %q, want none", got)
	}
}

func TestReauthRequired(t *testing.T) {
	tests := []struct {
		name      string
		login     bool
		revoke    bool
		resources int64 // resource requests sent
	}{
		{"nothing stored", false, false, 0},
		{"session revoked", true, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			src := newSource(t, srv, tt.login)
			if tt.revoke {
				tok, err := src.TokenContext(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				srv.RevokeFamilyOf(tok.RefreshToken)
				srv.ExpireAccessTokens()
			}
			srv.ResetStats()
			resp, err := transport.NewClient(src).Get(srv.ResourceURL())
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got status %d, want an error", resp.StatusCode)
			}
			if !errors.Is(err, tokensource.ErrReauthRequired) {
				t.Errorf("got %v, want an error matching ErrReauthRequired", err)
			}
			if msg := err.Error(); strings.Contains(msg, "tkat_") || strings.Contains(msg, "tkrt_") {
				t.Errorf("error %q holds a token", msg)
			}
			if got := srv.Stats().ResourceRequests; got != tt.resources {
				t.Errorf("got %d resource requests, want %d", got, tt.resources)
			}
		})
	}
}

// TestCancelDuringRefresh: a request whose token is refused while the token
// endpoint takes 2 s returns when its 100 ms context ends, not when the
// refresh does. It runs in a synctest bubble, so the times are exact.
func TestCancelDuringRefresh(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		p := newMemProvider(time.Hour, 1)
		p.tokenLatency = 2 * time.Second
		r, err := tokensource.NewConfigRefresher(memConfig(), "", &http.Client{Transport: p})
		if err != nil {
			t.Fatal(err)
		}
		src, err := tokensource.New(r, storage.NewMemory(), "key")
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if err := src.Put(context.Background(), p.Mint()); err != nil {
			t.Fatal(err)
		}
		p.expireAccessTokens()
		client := transport.NewClient(src, transport.WithBase(p))

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, memResourceURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, err := client.Do(req)
		elapsed := time.Since(start)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got status %d, want an error", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) || elapsed != 100*time.Millisecond {
			t.Errorf("got %v after %v, want a deadline error after 100ms", err, elapsed)
		}
	})
}

// closeCounter is a request body that counts Close calls.
type closeCounter struct {
	io.Reader
	closed atomic.Int64
}

func (b *closeCounter) Close() error {
	b.closed.Add(1)
	return nil
}

// failing is a RoundTripper that fails after closing the body, as the
// contract requires.
type failing struct{}

func (failing) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, errors.New("no route")
}

func TestBodyClosedOnError(t *testing.T) {
	errSource := errors.New("source down")
	tests := []struct {
		name    string
		src     transport.TokenSource
		base    http.RoundTripper
		sent    int   // requests that reached the recorder
		wantErr error // if set, the error must match it
	}{
		{"source fails", &fakeSource{fail: errSource}, &recorder{}, 0, errSource},
		{"nil source", nil, &recorder{}, 0, nil},
		{"base fails", &fakeSource{}, failing{}, 0, nil},
		{"source fails on replay", &fakeSource{fail: errSource, failFrom: 1}, &recorder{responses: []*http.Response{unauthorized(invalidToken)}}, 1, errSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &closeCounter{Reader: strings.NewReader("body")}
			req, err := http.NewRequest(http.MethodPost, "https://api.example.com/", body)
			if err != nil {
				t.Fatal(err)
			}
			var replayBodies []*closeCounter
			req.GetBody = func() (io.ReadCloser, error) {
				b := &closeCounter{Reader: strings.NewReader("body")}
				replayBodies = append(replayBodies, b)
				return b, nil
			}
			tr := &transport.Transport{Source: tt.src, Base: tt.base}
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got status %d, want an error", resp.StatusCode)
			}
			if resp != nil {
				t.Errorf("got a response with error %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v wrapped", err, tt.wantErr)
			}
			if got := body.closed.Load(); got == 0 {
				t.Error("request body not closed")
			}
			for i, b := range replayBodies {
				if b.closed.Load() == 0 {
					t.Errorf("replay body %d not closed", i)
				}
			}
			if rec, ok := tt.base.(*recorder); ok && len(rec.reqs) != tt.sent {
				t.Errorf("got %d requests sent, want %d", len(rec.reqs), tt.sent)
			}
		})
	}
}

func TestRefusedBodyClosedWhenReplayFails(t *testing.T) {
	first := unauthorized(invalidToken)
	rec := &recorder{responses: []*http.Response{first}}
	tr := &transport.Transport{Source: &fakeSource{fail: errors.New("down"), failFrom: 1}, Base: rec}
	req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	resp, err := tr.RoundTrip(req)
	if err == nil || resp != nil {
		t.Fatalf("got %v, %v; want no response and an error", resp, err)
	}
	if !first.Body.(*trackedBody).closed.Load() || len(rec.reqs) != 1 {
		t.Errorf("got %d requests, 401 body closed %v; want 1, true", len(rec.reqs), first.Body.(*trackedBody).closed.Load())
	}
}

func TestNewClient(t *testing.T) {
	src := &fakeSource{}
	c := transport.NewClient(src)
	tr, ok := c.Transport.(*transport.Transport)
	if !ok {
		t.Fatalf("got Transport %T, want *transport.Transport", c.Transport)
	}
	if c.Timeout != 60*time.Second || tr.Source != src || len(tr.Hosts) != 0 {
		t.Errorf("got timeout %v, hosts %q, want 60s and none", c.Timeout, tr.Hosts)
	}
	if base, ok := tr.Base.(*http.Transport); !ok || base == http.DefaultTransport {
		t.Errorf("got base %T %p, want a clone of http.DefaultTransport", tr.Base, tr.Base)
	}

	hosts := []string{"a.example", "b.example"}
	c = transport.NewClient(src, transport.WithBase(failing{}), transport.WithHosts(hosts...), transport.WithTimeout(0))
	tr = c.Transport.(*transport.Transport)
	hosts[0] = "changed"
	if c.Timeout != 0 || tr.Base != (failing{}) || !reflect.DeepEqual(tr.Hosts, []string{"a.example", "b.example"}) {
		t.Errorf("got timeout %v, base %T, hosts %q; want 0, failing, [a.example b.example]", c.Timeout, tr.Base, tr.Hosts)
	}
}
