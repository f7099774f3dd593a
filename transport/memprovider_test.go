package transport_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// memProvider is an authorization server and protected resource that live
// in memory: it is an http.RoundTripper that hands requests to its handlers
// without a socket. Tests run it inside a synctest bubble, where sockets
// cannot be used and time is fake, so that token lifetimes, latencies and
// backoffs play out the same on any machine, however busy.
//
// Its token endpoint speaks the refresh_token grant only, rotating refresh
// tokens with reuse detection; its resource, at any other path, honours
// access tokens until they expire on its clock. Requests spend a latency
// "on the wire" before they arrive; a token is checked on arrival.
type memProvider struct {
	lifetime     time.Duration // of access tokens
	tokenLatency time.Duration // of each token request
	resourceMin  time.Duration // latency of each resource request: drawn from
	resourceMax  time.Duration // [resourceMin, resourceMax]
	failRate     float64       // share of token requests answered 503

	mu            sync.Mutex           // guards the fields below
	rand          *mrand.Rand          // draws for failRate
	failNext      int                  // token requests still to answer 503 before any other
	access        map[string]time.Time // access token to expiry
	refresh       map[string]bool      // refresh token to whether it is unspent
	tokenRequests int
	refreshGrants int
	faults        int // token requests answered 503
	reuse         int // spent refresh tokens presented again
	resourceCalls int
	unauthorized  int // resource requests refused
}

// Where a memProvider answers. No name is looked up: it sees requests
// before any network would.
const (
	memTokenURL    = "https://provider.test/token"
	memResourceURL = "https://api.test/resource"
)

// memConfig is a client of a memProvider.
func memConfig() *oauth2.Config {
	return &oauth2.Config{
		ClientID:     "tokenkeep-test",
		ClientSecret: "tokenkeep-test-secret",
		Endpoint:     oauth2.Endpoint{TokenURL: memTokenURL, AuthStyle: oauth2.AuthStyleInHeader},
	}
}

func newMemProvider(lifetime time.Duration, seed uint64) *memProvider {
	return &memProvider{
		lifetime: lifetime,
		rand:     mrand.New(mrand.NewPCG(seed, seed)),
		access:   make(map[string]time.Time),
		refresh:  make(map[string]bool),
	}
}

// memStats is a snapshot of a memProvider's counters.
type memStats struct {
	TokenRequests, RefreshGrants, Faults, Reuse, ResourceCalls, Unauthorized int
}

func (p *memProvider) stats() memStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return memStats{p.tokenRequests, p.refreshGrants, p.faults, p.reuse, p.resourceCalls, p.unauthorized}
}

// Mint issues a login's token directly.
func (p *memProvider) Mint() *oauth2.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issueLocked()
}

func (p *memProvider) issueLocked() *oauth2.Token {
	at, rt := "tkat_"+random(), "tkrt_"+random()
	exp := time.Now().Add(p.lifetime)
	p.access[at] = exp
	p.refresh[rt] = true
	return &oauth2.Token{AccessToken: at, RefreshToken: rt, TokenType: "Bearer", Expiry: exp,
		ExpiresIn: int64(math.Ceil(p.lifetime.Seconds()))}
}

// expireAccessTokens ends every access token issued so far, as a server
// that revokes them early does.
func (p *memProvider) expireAccessTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for at := range p.access {
		p.access[at] = now
	}
}

func random() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// RoundTrip implements http.RoundTripper.
func (p *memProvider) RoundTrip(req *http.Request) (*http.Response, error) {
	latency := p.tokenLatency
	if req.URL.Path != "/token" {
		latency = p.resourceLatency()
	}
	if latency > 0 {
		timer := time.NewTimer(latency)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-req.Context().Done():
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, req.Context().Err()
		}
	}
	rec := httptest.NewRecorder()
	if req.URL.Path == "/token" {
		p.token(rec, req)
	} else {
		p.resource(rec, req)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

func (p *memProvider) resourceLatency() time.Duration {
	if p.resourceMax <= p.resourceMin {
		return p.resourceMin
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resourceMin + time.Duration(p.rand.Int64N(int64(p.resourceMax-p.resourceMin)+1))
}

func (p *memProvider) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tokenRequests++
	if p.failNext > 0 || p.rand.Float64() < p.failRate {
		if p.failNext > 0 {
			p.failNext--
		}
		p.faults++
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	rt := r.PostForm.Get("refresh_token")
	unspent, known := p.refresh[rt]
	if r.PostForm.Get("grant_type") != "refresh_token" || !known || !unspent {
		if known {
			p.reuse++
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant"}`)
		return
	}
	p.refresh[rt] = false
	p.refreshGrants++
	t := p.issueLocked()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": t.AccessToken, "refresh_token": t.RefreshToken,
		"token_type": "Bearer", "expires_in": t.ExpiresIn,
	})
}

func (p *memProvider) resource(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
	}
	at, _ := cutBearer(r.Header.Get("Authorization"))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resourceCalls++
	if exp, ok := p.access[at]; !ok || !time.Now().Before(exp) {
		p.unauthorized++
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	io.WriteString(w, "ok")
}

func cutBearer(h string) (string, bool) {
	const prefix = "Bearer "
	if len(h) < len(prefix) || h[:len(prefix)] != prefix {
		return "", false
	}
	return h[len(prefix):], true
}
