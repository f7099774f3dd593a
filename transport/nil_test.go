package transport_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/tokenkeep/tokenkeep/transport"
)

// call runs f and reports a panic as an error.
func call(f func() error) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			err, panicked = fmt.Errorf("panic: %v", r), true
		}
	}()
	return f(), false
}

// TestNilAndZeroInputs calls the package's exported functions and methods
// with nil and zero values: none panics, and each returns an error where it
// returns one at all.
func TestNilAndZeroInputs(t *testing.T) {
	ok := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	})
	roundTrip := func(tr http.RoundTripper, req *http.Request) error {
		resp, err := tr.RoundTrip(req)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return err
	}
	newReq := func() *http.Request {
		req, err := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	var nilTransport *transport.Transport
	tests := []struct {
		name    string
		f       func() error
		wantErr bool
	}{
		{"Transport.RoundTrip(nil)", func() error { return roundTrip(&transport.Transport{Source: &fakeSource{}, Base: ok}, nil) }, true},
		{"Transport(nil).RoundTrip", func() error { return roundTrip(nilTransport, newReq()) }, true},
		{"Transport{}.RoundTrip", func() error { return roundTrip(&transport.Transport{Base: ok}, newReq()) }, true},
		{"Transport.RoundTrip(nil URL)", func() error {
			req := newReq()
			req.URL = nil
			return roundTrip(&transport.Transport{Source: &fakeSource{}, Base: ok}, req)
		}, false},
		{"Transport.RoundTrip(zero URL and Header)", func() error {
			return roundTrip(&transport.Transport{Source: &fakeSource{}, Base: ok}, &http.Request{URL: &url.URL{}})
		}, false},
		{"Transport.RoundTrip(nil Header)", func() error {
			req := newReq()
			req.Header = nil
			return roundTrip(&transport.Transport{Source: &fakeSource{}, Base: ok}, req)
		}, false},
		{"ParseChallenges(nil)", func() error { transport.ParseChallenges(nil); return nil }, false},
		{"ParseChallenges(empty)", func() error { transport.ParseChallenges([]string{"", ",", "="}); return nil }, false},
		{"NewClient(nil)", func() error { return roundTrip(transport.NewClient(nil, transport.WithBase(ok)).Transport, newReq()) }, true},
		{"NewClient(nil options)", func() error {
			c := transport.NewClient(&fakeSource{}, nil, transport.WithBase(nil), transport.WithHosts(), transport.WithTimeout(0),
				transport.WithRecoveryInterval(0), transport.WithBase(ok))
			return roundTrip(c.Transport, newReq())
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err, panicked := call(tt.f)
			if panicked || (err != nil) != tt.wantErr {
				t.Errorf("got %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}
