package authserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

var ccForm = url.Values{"grant_type": {"client_credentials"}}

// probe asks the token endpoint for a client_credentials token, a grant
// whose processing Stats().ClientCredentialsGrants counts.
func probe(t *testing.T, srv *Server) reply {
	t.Helper()
	return post(t, srv, EndpointToken, ccForm, confidential)
}

func TestFaultReplacesAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fault      Fault
		status     int
		body       string
		ct         string
		retryAfter string
	}{
		{
			name:   "status body content type",
			fault:  Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`},
			status: 503, body: `{"error":"temporarily_unavailable"}`, ct: "application/json",
		},
		{
			name:   "html error page",
			fault:  Fault{Status: 502, Body: "<html>Bad Gateway</html>", ContentType: "text/html; charset=utf-8"},
			status: 502, body: "<html>Bad Gateway</html>", ct: "text/html; charset=utf-8",
		},
		{
			name:   "status only",
			fault:  Fault{Status: 500},
			status: 500, body: "Internal Server Error\n", ct: "text/plain; charset=utf-8",
		},
		{
			name:   "body only is a 200",
			fault:  Fault{Body: `{"access_token":"tkat_fake","token_type":"Bearer"}`},
			status: 200, body: `{"access_token":"tkat_fake","token_type":"Bearer"}`, ct: "application/json",
		},
		{
			name:   "429 with Retry-After seconds",
			fault:  Fault{Status: 429, Body: `{"error":"slow_down"}`, RetryAfter: "7"},
			status: 429, body: `{"error":"slow_down"}`, ct: "application/json", retryAfter: "7",
		},
		{
			name:   "503 with Retry-After date",
			fault:  Fault{Status: 503, RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"},
			status: 503, body: "Service Unavailable\n", ct: "text/plain; charset=utf-8", retryAfter: "Wed, 21 Oct 2015 07:28:00 GMT",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, Config{})
			srv.Inject(EndpointToken, tc.fault)
			r := probe(t, srv)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tc.status || string(r.body) != tc.body {
				t.Errorf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
			}
			if ct := r.header.Get("Content-Type"); ct != tc.ct {
				t.Errorf("Content-Type %q, want %q", ct, tc.ct)
			}
			if ra := r.header.Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			st := srv.Stats()
			if st.ClientCredentialsGrants != 0 {
				t.Errorf("the grant was processed behind a replacing fault")
			}
			if st.TokenRequests != 1 || st.FaultsInjected != 1 {
				t.Errorf("stats %+v, want 1 token request and 1 fault", st)
			}
			// The fault is spent: the next request is answered normally.
			if r := probe(t, srv); r.status != 200 || r.header.Get("Retry-After") != "" {
				t.Errorf("next request: %d %s", r.status, r.body)
			}
		})
	}
}

func TestFaultSeenByOAuth2(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
	tok := srv.Mint()

	srv.Inject(EndpointToken, Fault{Status: 429, Body: `{"error":"temporarily_unavailable"}`, RetryAfter: "2"})
	_, err := refresh(ctx, cfg, tok.RefreshToken)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 429 || re.Response.Header.Get("Retry-After") != "2" || re.ErrorCode != "temporarily_unavailable" {
		t.Fatalf("got %v", err)
	}
	// Nothing was rotated, so the old refresh token still works.
	if !srv.RefreshTokenActive(tok.RefreshToken) {
		t.Fatal("a replaced answer rotated the refresh token")
	}
	if _, err := refresh(ctx, cfg, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
}

func TestFaultMutate(t *testing.T) {
	srv := newServer(t, Config{Rotate: true})
	ctx, cfg := clientCtx(t, srv), srv.OAuth2Config()
	tok := srv.Mint()

	// The refresh happens, but the client never sees the new refresh token.
	srv.Inject(EndpointToken, Fault{Mutate: func(m map[string]any) { delete(m, "refresh_token") }})
	r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
	m := r.json(t)
	if r.status != 200 || m["refresh_token"] != nil || !strings.HasPrefix(m["access_token"].(string), "tkat_") {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if srv.RefreshTokenActive(tok.RefreshToken) {
		t.Fatal("the grant behind a Mutate fault did not take effect")
	}
	if !srv.AccessTokenActive(m["access_token"].(string)) {
		t.Fatal("the issued access token is not active")
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}

	// Through x/oauth2: a changed value reaches the client.
	tok2 := srv.Mint()
	srv.Inject(EndpointToken, Fault{Mutate: func(m map[string]any) {
		m["access_token"] = "tkat_mutated"
		m["expires_in"] = 1
	}})
	got, err := refresh(ctx, cfg, tok2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "tkat_mutated" || time.Until(got.Expiry) > 2*time.Second {
		t.Fatalf("got %q expiring %v", got.AccessToken, got.Expiry)
	}
	if !strings.HasPrefix(got.RefreshToken, "tkrt_") || !srv.RefreshTokenActive(got.RefreshToken) {
		t.Fatalf("rotated refresh token %q missing or inactive", got.RefreshToken)
	}

	// A missing access token is an error for x/oauth2.
	srv.Inject(EndpointToken, Fault{Mutate: func(m map[string]any) { delete(m, "access_token") }})
	if _, err := refresh(ctx, cfg, got.RefreshToken); err == nil {
		t.Fatal("x/oauth2 accepted an answer without access_token")
	}

	// On the resource too, and on error answers.
	at := srv.Mint().AccessToken
	srv.Inject(EndpointResource, Fault{Mutate: func(m map[string]any) { m["sub"] = "mallory" }})
	if r := get(t, srv.Client(), srv.ResourceURL(), at); r.status != 200 || r.json(t)["sub"] != "mallory" {
		t.Fatalf("resource: %d %s", r.status, r.body)
	}
	srv.Inject(EndpointToken, Fault{Mutate: func(m map[string]any) { m["error_description"] = "edited" }})
	r = post(t, srv, EndpointToken, refreshForm("tkrt_unknown"), confidential)
	if r.status != 400 || r.errorCode() != "invalid_grant" || r.json(t)["error_description"] != "edited" {
		t.Fatalf("error answer: %d %s", r.status, r.body)
	}
	if st := srv.Stats(); st.FaultsInjected != 5 || st.RefreshGrants != 4 {
		t.Errorf("stats %+v, want 5 faults and 4 refresh grants", st)
	}
}

func TestFaultTruncate(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		srv := newServer(t, Config{Rotate: true, TLS: tlsOn})
		tok := srv.Mint()
		srv.Inject(EndpointToken, Fault{Truncate: 12})
		r := post(t, srv, EndpointToken, refreshForm(tok.RefreshToken), confidential)
		if r.status != 200 {
			t.Fatalf("TLS %v: status %d, err %v", tlsOn, r.status, r.err)
		}
		if !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("TLS %v: body read error %v, want unexpected EOF", tlsOn, r.err)
		}
		if len(r.body) != 12 || !strings.HasPrefix(string(r.body), "{") {
			t.Errorf("TLS %v: got %q, want the first 12 bytes", tlsOn, r.body)
		}
		if srv.RefreshTokenActive(tok.RefreshToken) {
			t.Errorf("TLS %v: the grant behind a Truncate fault did not take effect", tlsOn)
		}

		// x/oauth2 reports an error, not a half token.
		tok2 := srv.Mint()
		srv.Inject(EndpointToken, Fault{Truncate: 1})
		if got, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), tok2.RefreshToken); err == nil {
			t.Errorf("TLS %v: x/oauth2 accepted a truncated answer: %+v", tlsOn, got)
		}

		// Truncating beyond the end leaves the answer whole.
		srv.Inject(EndpointToken, Fault{Truncate: 1 << 20})
		if r := probe(t, srv); r.status != 200 || r.err != nil {
			t.Errorf("TLS %v: long Truncate: %d %v", tlsOn, r.status, r.err)
		} else {
			r.json(t)
		}
		// The next request is whole again.
		if r := probe(t, srv); r.err != nil || r.status != 200 {
			t.Errorf("TLS %v: after truncation: %d %v", tlsOn, r.status, r.err)
		}
	}
}

func TestFaultDrop(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		srv := newServer(t, Config{Rotate: true, TLS: tlsOn})
		tok := srv.Mint()

		srv.Inject(EndpointToken, Fault{Drop: true})
		r := probe(t, srv)
		if r.err == nil {
			t.Fatalf("TLS %v: dropped request answered %d %s", tlsOn, r.status, r.body)
		}

		// x/oauth2 sees a transport error, and nothing was rotated; a
		// delay before the drop changes neither.
		srv.Inject(EndpointToken, Fault{Drop: true, Delay: 50 * time.Millisecond})
		_, err := refresh(clientCtx(t, srv), srv.OAuth2Config(), tok.RefreshToken)
		if err == nil {
			t.Fatalf("TLS %v: refresh through a dropped connection succeeded", tlsOn)
		}
		if code, _ := retrieveErr(err); code != "" {
			t.Errorf("TLS %v: got an OAuth error %q, want a transport error", tlsOn, code)
		}
		if !srv.RefreshTokenActive(tok.RefreshToken) {
			t.Errorf("TLS %v: the grant behind a Drop fault took effect", tlsOn)
		}

		// The resource, on a fresh connection (a GET on a reused
		// connection would be retried by the transport).
		c := srv.Client()
		tr := c.Transport.(*http.Transport).Clone()
		tr.DisableKeepAlives = true
		c.Transport = tr
		srv.Inject(EndpointResource, Fault{Drop: true})
		if r := get(t, c, srv.ResourceURL(), tok.AccessToken); r.err == nil {
			t.Errorf("TLS %v: dropped resource request answered %d", tlsOn, r.status)
		}

		st := srv.Stats()
		if st.ClientCredentialsGrants != 0 || st.RefreshGrants != 0 || st.FaultsInjected != 3 {
			t.Errorf("TLS %v: stats %+v", tlsOn, st)
		}
		if r := probe(t, srv); r.err != nil || r.status != 200 {
			t.Errorf("TLS %v: after the drop: %d %v", tlsOn, r.status, r.err)
		}
	}
}

func TestFaultDelay(t *testing.T) {
	inBubble(t, Config{}, func(t *testing.T, srv *Server) {
		const delay = 200 * time.Millisecond

		// Delay alone: a normal answer, late.
		srv.Inject(EndpointToken, Fault{Delay: delay})
		start := time.Now()
		r := probe(t, srv)
		if el := time.Since(start); el != delay {
			t.Errorf("answered after %v, want %v", el, delay)
		}
		if r.status != 200 || srv.Stats().ClientCredentialsGrants != 1 {
			t.Fatalf("got %d %s", r.status, r.body)
		}

		// Delay with a replacing status.
		srv.Inject(EndpointToken, Fault{Delay: delay, Status: 504})
		start = time.Now()
		r = probe(t, srv)
		if el := time.Since(start); el != delay || r.status != 504 {
			t.Errorf("got %d after %v", r.status, el)
		}
	})
}

// A client that gives up while the server waits leaves the request
// unprocessed: no grant, no revocation.
func TestFaultDelayAbandoned(t *testing.T) {
	const wait = 400 * time.Millisecond
	for _, tc := range []struct {
		name    string
		tls     bool
		latency bool // SetLatency rather than Fault.Delay
		revoke  bool // the revocation endpoint rather than the token endpoint
	}{
		{name: "token"},
		{name: "token TLS", tls: true},
		{name: "token latency", latency: true},
		{name: "revoke", revoke: true},
		{name: "revoke TLS latency", revoke: true, tls: true, latency: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inBubble(t, Config{TLS: tc.tls}, func(t *testing.T, srv *Server) {
				tok := srv.Mint()
				ep, form := EndpointToken, ccForm
				if tc.revoke {
					ep, form = EndpointRevoke, url.Values{"token": {tok.RefreshToken}}
				}
				if tc.latency {
					srv.SetLatency(ep, wait)
				} else {
					srv.Inject(ep, Fault{Delay: wait})
				}
				c := srv.Client()
				c.Timeout = wait / 8
				start := time.Now()
				if r := postWith(t, c, srv, ep, form, confidential); r.err == nil {
					t.Fatalf("request answered %d before the client's timeout", r.status)
				}
				if el := time.Since(start); el != wait/8 {
					t.Errorf("the client gave up after %v, want %v", el, wait/8)
				}
				time.Sleep(2 * wait) // past the wait, had the server ignored the client
				st := srv.Stats()
				if st.ClientCredentialsGrants != 0 || st.Revocations != 0 || !srv.RefreshTokenActive(tok.RefreshToken) {
					t.Errorf("an abandoned request was processed: %+v", st)
				}
				if st.FaultsInjected != 0 {
					t.Errorf("FaultsInjected %d for an abandoned request", st.FaultsInjected)
				}
			})
		})
	}
}

func TestFaultSlowBody(t *testing.T) {
	inBubble(t, Config{Rotate: true}, func(t *testing.T, srv *Server) {
		const slow = time.Second
		srv.Inject(EndpointToken, Fault{SlowBody: slow})
		start := time.Now()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+EndpointToken, strings.NewReader(ccForm.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(ClientID, ClientSecret)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		headers := time.Since(start)
		body := readAll(t, resp)
		resp.Body.Close()
		total := time.Since(start)
		if headers != 0 {
			t.Errorf("headers took %v; only the body should be slow", headers)
		}
		// One byte at a time, a pause after each: the last byte comes one
		// pause short of slow.
		if step := slow / time.Duration(len(body)); total != slow-step-slow%time.Duration(len(body)) {
			t.Errorf("body took %v, want %v less one pause of %v", total, slow, step)
		}
		r := reply{status: resp.StatusCode, body: body}
		if at, _ := r.json(t)["access_token"].(string); resp.StatusCode != 200 || !strings.HasPrefix(at, "tkat_") {
			t.Fatalf("slow answer %d %s", resp.StatusCode, body)
		}
		if resp.ContentLength != int64(len(body)) {
			t.Errorf("Content-Length %d for %d bytes", resp.ContentLength, len(body))
		}

		// A client that gives up half way: the grant has taken effect anyway.
		tok := srv.Mint()
		srv.Inject(EndpointToken, Fault{SlowBody: slow})
		ctx, cancel := context.WithTimeout(clientCtx(t, srv), slow/3)
		defer cancel()
		if _, err := refresh(ctx, srv.OAuth2Config(), tok.RefreshToken); err == nil {
			t.Fatal("refresh finished before the client's deadline")
		}
		if srv.RefreshTokenActive(tok.RefreshToken) {
			t.Fatal("the grant behind a SlowBody fault did not take effect")
		}
	})
}

func TestFaultRetryAfterOnNormalAnswer(t *testing.T) {
	srv := newServer(t, Config{})
	srv.Inject(EndpointToken, Fault{RetryAfter: "120"})
	r := probe(t, srv)
	if r.status != 200 || r.header.Get("Retry-After") != "120" {
		t.Fatalf("got %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if at, _ := r.json(t)["access_token"].(string); !strings.HasPrefix(at, "tkat_") {
		t.Fatalf("body %s", r.body)
	}
	if st := srv.Stats(); st.ClientCredentialsGrants != 1 || st.FaultsInjected != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestInjectQueue(t *testing.T) {
	srv := newServer(t, Config{})
	srv.Inject(EndpointToken, Fault{Status: 500}, Fault{Status: 502})
	srv.Inject(EndpointToken, Fault{Status: 503})
	srv.Inject(EndpointResource, Fault{Status: 418})
	var got []int
	for range 5 {
		got = append(got, probe(t, srv).status)
	}
	if want := []int{500, 502, 503, 200, 200}; !equalInts(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	// The resource's fault waited for a resource request.
	at := srv.Mint().AccessToken
	if r := get(t, srv.Client(), srv.ResourceURL(), at); r.status != 418 {
		t.Fatalf("resource: %d", r.status)
	}
	if r := get(t, srv.Client(), srv.ResourceURL(), at); r.status != 200 {
		t.Fatalf("resource after its fault: %d", r.status)
	}
	// /resource/admin shares the resource's queue.
	srv.Inject(EndpointResource, Fault{Status: 500})
	if r := get(t, srv.Client(), srv.ResourceURL()+"/admin", at); r.status != 500 {
		t.Fatalf("admin: %d", r.status)
	}

	// Every endpoint takes faults.
	for _, ep := range []string{EndpointAuthorize, EndpointDevice, EndpointRevoke, EndpointUserinfo} {
		srv.Inject(ep, Fault{Status: 500})
	}
	if _, err := srv.Login(t.Context(), srv.OAuth2Config(), nil); err == nil {
		t.Error("Login through a failing authorize endpoint succeeded")
	}
	if _, err := srv.PublicConfig().DeviceAuth(clientCtx(t, srv)); err == nil {
		t.Error("DeviceAuth through a failing endpoint succeeded")
	}
	if r := post(t, srv, EndpointRevoke, url.Values{"token": {at}}, confidential); r.status != 500 || !srv.AccessTokenActive(at) {
		t.Errorf("revoke: %d, token active %v", r.status, srv.AccessTokenActive(at))
	}
	if r := get(t, srv.Client(), srv.UserinfoURL(), at); r.status != 500 {
		t.Errorf("userinfo: %d", r.status)
	}
	if st := srv.Stats(); st.FaultsInjected != 9 || st.Revocations != 0 {
		t.Errorf("stats %+v, want 9 faults and no revocation", st)
	}
}

func TestInjectConcurrent(t *testing.T) {
	srv := newServer(t, Config{})
	const n = 20
	faults := make([]Fault, n)
	for i := range faults {
		faults[i] = Fault{Status: 503}
	}
	srv.Inject(EndpointToken, faults...)
	var mu sync.Mutex
	count := map[int]int{}
	var wg sync.WaitGroup
	for range 2 * n {
		wg.Go(func() {
			r := probe(t, srv)
			mu.Lock()
			count[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if count[503] != n || count[200] != n {
		t.Fatalf("statuses %v, want %d of 503 and of 200", count, n)
	}
}

func TestSetFailRate(t *testing.T) {
	srv := newServer(t, Config{})
	srv.SetFailRate(EndpointToken, 1, Fault{Status: 503, RetryAfter: "1"})
	for i := range 10 {
		if r := probe(t, srv); r.status != 503 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("request %d with rate 1: %d", i, r.status)
		}
	}
	// Queued faults come first.
	srv.Inject(EndpointToken, Fault{Status: 429})
	if r := probe(t, srv); r.status != 429 {
		t.Fatalf("queued fault: %d", r.status)
	}
	if r := probe(t, srv); r.status != 503 {
		t.Fatalf("after the queue: %d", r.status)
	}
	// Other endpoints are unaffected.
	at := srv.Mint().AccessToken
	if r := get(t, srv.Client(), srv.ResourceURL(), at); r.status != 200 {
		t.Fatalf("resource: %d", r.status)
	}
	if st := srv.Stats(); st.ClientCredentialsGrants != 0 || st.FaultsInjected != 12 {
		t.Errorf("stats %+v", st)
	}

	srv.SetFailRate(EndpointToken, 0, Fault{Status: 503})
	for i := range 10 {
		if r := probe(t, srv); r.status != 200 {
			t.Fatalf("request %d with rate 0: %d", i, r.status)
		}
	}

	srv.SetFailRate(EndpointToken, 0.5, Fault{Status: 500})
	failed := 0
	const n = 200
	for range n {
		switch r := probe(t, srv); r.status {
		case 500:
			failed++
		case 200:
		default:
			t.Fatalf("status %d", r.status)
		}
	}
	if failed < n/4 || failed > 3*n/4 {
		t.Errorf("%d of %d failed at rate 0.5", failed, n)
	}
}

func TestSetLatency(t *testing.T) {
	inBubble(t, Config{}, func(t *testing.T, srv *Server) {
		const lat = 150 * time.Millisecond
		at := srv.Mint().AccessToken
		srv.SetLatency(EndpointResource, lat)

		timed := func(f func() reply) (time.Duration, reply) {
			start := time.Now()
			r := f()
			return time.Since(start), r
		}
		resource := func() reply { return get(t, srv.Client(), srv.ResourceURL(), at) }
		if el, r := timed(resource); el != lat || r.status != 200 {
			t.Errorf("resource with latency: %d after %v, want 200 after %v", r.status, el, lat)
		}
		// Latency adds to a fault's delay.
		srv.Inject(EndpointResource, Fault{Delay: lat})
		if el, _ := timed(resource); el != 2*lat {
			t.Errorf("latency plus delay took %v, want %v", el, 2*lat)
		}
		// Other endpoints are unaffected.
		srv.SetLatency(EndpointResource, time.Hour)
		if el, _ := timed(func() reply { return probe(t, srv) }); el != 0 {
			t.Errorf("token endpoint took %v", el)
		}
		srv.SetLatency(EndpointResource, 0)
		if el, _ := timed(resource); el != 0 {
			t.Errorf("latency 0 still took %v", el)
		}
		// Latency is not a fault.
		if st := srv.Stats(); st.FaultsInjected != 1 {
			t.Errorf("FaultsInjected %d, want 1", st.FaultsInjected)
		}
	})
}

func TestStats(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, Config{Rotate: true, ReuseDetection: true, Now: clock.Now})
	ctx, cfg := clientCtx(t, srv), srv.OAuth2Config("read")
	if st := srv.Stats(); st != (Stats{}) {
		t.Fatalf("new server stats %+v", st)
	}

	tok, err := srv.Login(t.Context(), cfg, nil) // 1 token request, 1 code grant
	if err != nil {
		t.Fatal(err)
	}
	tok1, err := refresh(ctx, cfg, tok.RefreshToken) // 1 refresh grant
	if err != nil {
		t.Fatal(err)
	}
	refresh(ctx, cfg, tok.RefreshToken)                                                 // reuse: 1 refresh grant, 1 detection
	probe(t, srv)                                                                       // 1 client_credentials grant
	dc, uc := startDevice(t, srv, public)                                               // not a token request
	pollDevice(t, srv, dc, public)                                                      // 1 device grant, pending
	srv.ApproveDevice(uc)                                                               //
	srv.Inject(EndpointToken, Fault{Status: 500})                                       //
	pollDevice(t, srv, dc, public)                                                      // a token request, a fault, no grant
	post(t, srv, EndpointToken, ccForm, nil)                                            // a token request, unauthenticated, no grant
	get(t, srv.Client(), srv.ResourceURL(), "")                                         // 1 resource request, unauthorized
	get(t, srv.Client(), srv.UserinfoURL(), "tkat_x")                                   // 1 resource request, unauthorized
	at := srv.Mint().AccessToken                                                        // no request
	get(t, srv.Client(), srv.ResourceURL(), at)                                         // 1 resource request
	get(t, srv.Client(), srv.ResourceURL()+"/admin", at)                                // 1 resource request, 403 is not 401
	post(t, srv, EndpointRevoke, url.Values{"token": {tok1.AccessToken}}, confidential) // 1 revocation

	want := Stats{
		TokenRequests:           7,
		RefreshGrants:           2,
		RefreshesGranted:        1,
		CodeGrants:              1,
		DeviceGrants:            1,
		ClientCredentialsGrants: 1,
		ReuseDetections:         1,
		RevokeRequests:          1,
		Revocations:             1,
		ResourceRequests:        4,
		ResourceUnauthorized:    2,
		FaultsInjected:          1,
	}
	if st := srv.Stats(); st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}

	srv.ResetStats()
	if st := srv.Stats(); st != (Stats{}) {
		t.Fatalf("after ResetStats: %+v", st)
	}
	// Counting resumes; the server's state is untouched by the reset.
	clock.Advance(time.Minute)
	r := pollDevice(t, srv, dc, public)
	wantPoll(t, r, "")
	if st := srv.Stats(); st != (Stats{TokenRequests: 1, DeviceGrants: 1}) {
		t.Fatalf("after a poll: %+v", st)
	}
}

// Stats are safe to read while requests run.
func TestStatsConcurrent(t *testing.T) {
	srv := newServer(t, Config{})
	srv.SetFailRate(EndpointToken, 0.3, Fault{Status: 500})
	const workers, each = 8, 10
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				srv.Stats()
			}
		}
	}()
	for range workers {
		wg.Go(func() {
			for range each {
				probe(t, srv)
			}
		})
	}
	wg.Wait()
	close(stop)
	st := srv.Stats()
	if st.TokenRequests != workers*each || st.ClientCredentialsGrants+st.FaultsInjected != workers*each {
		t.Fatalf("stats %+v", st)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
