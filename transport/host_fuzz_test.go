package transport_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenkeep/tokenkeep/transport"
)

// sentToken sends a GET for raw through tr and reports whether the base
// transport saw an Authorization header. A URL that net/http would refuse
// is reported as not sent.
func sentToken(tr *transport.Transport, rec *recorder, raw string) (*url.URL, bool) {
	req, err := http.NewRequest(http.MethodGet, raw, nil)
	if err != nil {
		return nil, false
	}
	n := len(rec.auth)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return req.URL, false
	}
	resp.Body.Close()
	return req.URL, len(rec.auth) > n && rec.auth[n] != ""
}

// loopback is the test's own idea of a loopback host, written apart from the
// transport's.
func loopback(host string) bool {
	h := strings.ToLower(host)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// effectivePort is u's port, or its scheme's default.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// FuzzHostMatching sends a request to a fuzzed URL through a Transport whose
// trusted hosts are set by a fuzzed Hosts entry, and through one pinned by a
// fuzzed first request, and checks that the token never goes where it must
// not: to a host the entry or the pin does not name, to another port, or
// over plain http to a host that is not loopback without an explicit
// "http://" entry. It also checks that nothing panics.
func FuzzHostMatching(f *testing.F) {
	for _, s := range [][3]string{
		{"api.example.com", "https://api.example.com/v1", "https://API.Example.com./x"},
		{"api.example.com:8443", "https://api.example.com:8443/", "https://api.example.com/"},
		{"http://intranet:8080", "http://intranet:8080/", "http://intranet:8081/"},
		{"[::1]:9000", "http://[::1]:9000/", "http://[::1]:9000@evil.example/"},
		{"https://api.example.com/", "https://api.example.com/", "http://api.example.com/"},
		{"localhost", "http://localhost/", "http://evil.localhost.example/"},
		{"example.com", "https://example.com/", "https://example.com.evil.net/"},
		{"::1", "https://[::1]/", "https://[::1%25eth0]/"},
		{"", "https://a/", "https://a:443/"},
		{"", "https:///first", "https:///second"},
		{"EXAMPLE.com:", "https://example.com:/", "https://user:pass@example.com/"},
		{"xn--bcher-kva.example", "https://bücher.example/", "https://xn--bcher-kva.example/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, entry, first, target string) {
		// An allow-list of one entry.
		rec := &recorder{}
		listed := &transport.Transport{Source: &fakeSource{sticky: true}, Base: rec, Hosts: []string{entry}}
		if u, sent := sentToken(listed, rec, target); sent {
			host := strings.ToLower(u.Hostname())
			e := strings.ToLower(strings.TrimSpace(entry))
			plain := strings.EqualFold(u.Scheme, "http")
			switch {
			case !strings.EqualFold(u.Scheme, "https") && !plain:
				t.Fatalf("token sent over scheme %q", u.Scheme)
			case host == "" || !strings.Contains(e, host):
				t.Fatalf("token sent to %q, which entry %q does not name", u.Host, entry)
			case u.Port() != "" && u.Port() != "80" && u.Port() != "443" && !strings.Contains(e, ":"+u.Port()):
				t.Fatalf("token sent to port %s, which entry %q does not name", u.Port(), entry)
			case plain && !loopback(u.Hostname()) && !strings.HasPrefix(e, "http://"):
				t.Fatalf("token sent over plain http to %q for entry %q", u.Host, entry)
			}
		}

		// No allow-list: the first request pins the origin.
		rec = &recorder{}
		pinned := &transport.Transport{Source: &fakeSource{sticky: true}, Base: rec}
		pin, _ := sentToken(pinned, rec, first)
		u, sent := sentToken(pinned, rec, target)
		if !sent {
			return
		}
		if u.Hostname() == "" {
			t.Fatalf("token sent to %q, which names no host", target)
		}
		if pin == nil || pin.Hostname() == "" || !strings.EqualFold(pin.Scheme, "https") && !strings.EqualFold(pin.Scheme, "http") {
			// The first request could not carry a token and pinned
			// nothing, so the target pinned its own origin.
			pin = u
		}
		switch {
		case !strings.EqualFold(u.Hostname(), pin.Hostname()):
			t.Fatalf("token sent to %q; the pinned host is %q", u.Hostname(), pin.Hostname())
		case effectivePort(u) != effectivePort(pin):
			t.Fatalf("token sent to port %s; the pinned port is %s", effectivePort(u), effectivePort(pin))
		case strings.EqualFold(u.Scheme, "http") && !loopback(u.Hostname()):
			t.Fatalf("token sent over plain http to %q", u.Host)
		case strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(pin.Scheme, "http"):
			t.Fatalf("token sent over plain http to %q, pinned by %q", u.Host, pin.Scheme+"://"+pin.Host)
		case !strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "http"):
			t.Fatalf("token sent over scheme %q", u.Scheme)
		}
	})
}
