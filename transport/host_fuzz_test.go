package transport_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/idna"

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

// dialled is host as net/http dials it: lower case, and in IDNA's ASCII
// form if it is not ASCII. ok is false if it has no such form.
func dialled(host string) (string, bool) {
	for _, r := range host {
		if r >= utf8.RuneSelf {
			a, err := idna.Lookup.ToASCII(host)
			return strings.ToLower(a), err == nil
		}
	}
	return strings.ToLower(host), true
}

func canDial(host string) bool {
	_, ok := dialled(host)
	return ok
}

// entryHost is the host an entry of Transport.Hosts names, in the test's
// own reading of the syntax: an optional "http://" or "https://", then
// "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address.
func entryHost(entry string) string {
	e := strings.TrimSpace(entry)
	for _, p := range []string{"http://", "https://"} {
		if len(e) >= len(p) && strings.EqualFold(e[:len(p)], p) {
			e = e[len(p):]
			break
		}
	}
	e = strings.TrimSuffix(e, "/")
	if rest, ok := strings.CutPrefix(e, "["); ok {
		h, _, _ := strings.Cut(rest, "]")
		return h
	}
	if strings.Count(e, ":") == 1 {
		h, _, _ := strings.Cut(e, ":")
		return h
	}
	return e
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
// not: to a host that net/http would dial under another name than the one
// the entry or the pin names, to another port, or over plain http to a host
// that is not loopback without an explicit "http://" entry. It also checks
// that nothing panics.
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
		{"σσ.example", "https://σσ.example/", "https://σς.example/"},
		{"ΣΣ.example:8443", "https://straße.example/", "https://strasse.example/"},
		{"\u212aelvin.example", "https://σ_σ.example/", "https://kelvin.example/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, entry, first, target string) {
		// An allow-list of one entry.
		rec := &recorder{}
		listed := &transport.Transport{Source: &fakeSource{sticky: true}, Base: rec, Hosts: []string{entry}}
		if u, sent := sentToken(listed, rec, target); sent {
			host, ok := dialled(u.Hostname())
			want, wantOK := dialled(entryHost(entry))
			e := strings.ToLower(strings.TrimSpace(entry))
			plain := strings.EqualFold(u.Scheme, "http")
			switch {
			case !strings.EqualFold(u.Scheme, "https") && !plain:
				t.Fatalf("token sent over scheme %q", u.Scheme)
			case host == "" || !ok || !wantOK || host != want:
				t.Fatalf("token sent to %q, which entry %q does not name", u.Host, entry)
			case u.Port() != "" && u.Port() != "80" && u.Port() != "443" && !strings.Contains(e, ":"+u.Port()):
				t.Fatalf("token sent to port %s, which entry %q does not name", u.Port(), entry)
			case plain && !loopback(host) && !strings.HasPrefix(e, "http://"):
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
		host, ok := dialled(u.Hostname())
		if host == "" || !ok {
			t.Fatalf("token sent to %q, which names no host net/http can dial", target)
		}
		if pin == nil || pin.Hostname() == "" || !canDial(pin.Hostname()) ||
			!strings.EqualFold(pin.Scheme, "https") && !strings.EqualFold(pin.Scheme, "http") {
			// The first request could not carry a token and pinned
			// nothing, so the target pinned its own origin.
			pin = u
		}
		switch pinned, _ := dialled(pin.Hostname()); {
		case host != pinned:
			t.Fatalf("token sent to %q; the pinned host is %q", u.Hostname(), pin.Hostname())
		case effectivePort(u) != effectivePort(pin):
			t.Fatalf("token sent to port %s; the pinned port is %s", effectivePort(u), effectivePort(pin))
		case strings.EqualFold(u.Scheme, "http") && !loopback(host):
			t.Fatalf("token sent over plain http to %q", u.Host)
		case strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(pin.Scheme, "http"):
			t.Fatalf("token sent over plain http to %q, pinned by %q", u.Host, pin.Scheme+"://"+pin.Host)
		case !strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "http"):
			t.Fatalf("token sent over scheme %q", u.Scheme)
		}
	})
}
