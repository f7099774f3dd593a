package oauthwire

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

var now = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

func TestCheckEndpoint(t *testing.T) {
	tests := []struct {
		url  string
		ok   bool
		kind error
	}{
		{"https://idp.example/token", true, nil},
		{"http://127.0.0.1:8080/token", true, nil},
		{"http://127.9.9.9/token", true, nil},
		{"http://localhost/token", true, nil},
		{"http://[::1]:9/token", true, nil},
		{"http://idp.example/token", false, ErrInsecureEndpoint},
		{"http://10.0.0.1/token", false, ErrInsecureEndpoint},
		{"http://localhost.idp.example/token", false, ErrInsecureEndpoint},
		{"ftp://idp.example/token", false, nil},
		{"", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := CheckEndpoint(tt.url)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("got %v, want %v", err, tt.kind)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"2", 2 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"99999999999999999999", 0, false},
		{"9223372036", 9223372036 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := RetryAfter(tt.in, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// answer serves one canned token endpoint answer.
func answer(status int, contentType, body string, header http.Header) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
}

func TestTokenAnswers(t *testing.T) {
	const js = "application/json"
	tests := []struct {
		name, ct, body string
		status         int
		wantErr        error  // matched with errors.Is
		wantCode       string // OAuth error code in a *oauth2.RetrieveError
		wantLife       time.Duration
		wantExtra      string // scope
	}{
		{name: "plain", status: 200, ct: js, body: `{"access_token":"a","token_type":"Bearer","expires_in":3600,"scope":"s"}`, wantLife: time.Hour, wantExtra: "s"},
		{name: "expires_in string", status: 200, ct: js, body: `{"access_token":"a","expires_in":"3599"}`, wantLife: 3599 * time.Second},
		{name: "expires_in float", status: 200, ct: js, body: `{"access_token":"a","expires_in":3599.7}`, wantLife: 3599 * time.Second},
		{name: "expires_in null", status: 200, ct: js, body: `{"access_token":"a","expires_in":null}`},
		{name: "expires_in missing", status: 200, ct: js, body: `{"access_token":"a"}`},
		{name: "expires_in huge", status: 200, ct: js, body: `{"access_token":"a","expires_in":1e300}`, wantLife: (1<<31 - 1) * time.Second},
		{name: "expires_in negative", status: 200, ct: js, body: `{"access_token":"a","expires_in":-60}`, wantErr: ErrMalformed},
		{name: "expires_in zero", status: 200, ct: js, body: `{"access_token":"a","expires_in":0}`},
		{name: "expires_in garbage", status: 200, ct: js, body: `{"access_token":"a","expires_in":"soon"}`, wantErr: ErrMalformed},
		{name: "expires_in object", status: 200, ct: js, body: `{"access_token":"a","expires_in":{}}`, wantErr: ErrMalformed},
		{name: "form body", status: 200, ct: "application/x-www-form-urlencoded", body: `access_token=a&expires_in=60&scope=s`, wantLife: time.Minute, wantExtra: "s"},
		{name: "no access_token", status: 200, ct: js, body: `{"token_type":"Bearer"}`, wantErr: ErrMalformed},
		{name: "refresh_token not a string", status: 200, ct: js, body: `{"access_token":"a","refresh_token":5}`, wantErr: ErrMalformed},
		{name: "html page", status: 200, ct: "text/html", body: `<html>maintenance</html>`, wantErr: ErrMalformed},
		{name: "truncated json", status: 200, ct: js, body: `{"access_token":"a","exp`, wantErr: ErrMalformed},
		{name: "trailing data", status: 200, ct: js, body: `{"access_token":"a"}{}`, wantErr: ErrMalformed},
		{name: "json array", status: 200, ct: js, body: `[1]`, wantErr: ErrMalformed},
		{name: "200 with error", status: 200, ct: js, body: `{"error":"invalid_grant"}`, wantCode: "invalid_grant"},
		{name: "400 invalid_grant", status: 400, ct: js, body: `{"error":"invalid_grant","error_description":"expired"}`, wantCode: "invalid_grant"},
		{name: "503 html", status: 503, ct: "text/html", body: `<html>down</html>`, wantCode: ""},
		{name: "too large", status: 200, ct: js, body: `{"access_token":"a","pad":"` + strings.Repeat("x", MaxBody) + `"}`, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := answer(tt.status, tt.ct, tt.body, nil)
			defer srv.Close()
			c := &Client{ClientID: "c", ClientSecret: "s", AuthStyle: oauth2.AuthStyleInHeader, Now: func() time.Time { return now }}
			tok, err := c.Token(context.Background(), srv.URL, url.Values{"grant_type": {"refresh_token"}})
			var re *oauth2.RetrieveError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			case tt.status != 200 || tt.wantCode != "":
				if !errors.As(err, &re) {
					t.Fatalf("got %v, want *oauth2.RetrieveError", err)
				}
				if re.ErrorCode != tt.wantCode || re.Response.StatusCode != tt.status {
					t.Errorf("got code %q status %d, want %q %d", re.ErrorCode, re.Response.StatusCode, tt.wantCode, tt.status)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				var life time.Duration
				if !tok.Expiry.IsZero() {
					life = tok.Expiry.Sub(now)
				}
				if life != tt.wantLife {
					t.Errorf("lifetime: got %v, want %v", life, tt.wantLife)
				}
				if got := tok.Extra("scope"); tt.wantExtra != "" && got != tt.wantExtra {
					t.Errorf("scope: got %v, want %v", got, tt.wantExtra)
				}
			}
			if err != nil && strings.Contains(err.Error(), `"a"`) {
				t.Errorf("error quotes the answer: %v", err)
			}
		})
	}
}

func TestClientAuthentication(t *testing.T) {
	var gotUser, gotPass, gotFormID, gotFormSecret string
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		r.ParseForm()
		gotUser, gotPass, _ = r.BasicAuth()
		gotFormID, gotFormSecret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		w.Header().Set("Content-Type", "application/json")
		if gotFormSecret == "" { // this provider wants credentials in the body
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		io.WriteString(w, `{"access_token":"a"}`)
	}))
	defer srv.Close()
	c := &Client{ClientID: "id with space", ClientSecret: "s:e/c"}
	for i := range 2 {
		if _, err := c.Token(context.Background(), srv.URL, url.Values{"grant_type": {"x"}}); err != nil {
			t.Fatal(err)
		}
		if gotFormID != "id with space" || gotFormSecret != "s:e/c" {
			t.Errorf("call %d: body credentials got %q %q", i, gotFormID, gotFormSecret)
		}
	}
	if calls != 3 {
		t.Errorf("requests: got %d, want 3 (header tried once, then remembered params)", calls)
	}
	if gotUser != "" || gotPass != "" {
		t.Errorf("remembered style still sent Basic auth")
	}
}

func TestBasicAuthIsFormEncoded(t *testing.T) {
	var user, pass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ = r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"a"}`)
	}))
	defer srv.Close()
	c := &Client{ClientID: "a b", ClientSecret: "p&q", AuthStyle: oauth2.AuthStyleInHeader}
	if _, err := c.Token(context.Background(), srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	if user != "a+b" || pass != "p%26q" {
		t.Errorf("got %q %q, want a+b p%%26q (RFC 6749 section 2.3.1)", user, pass)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var hit bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit = true }))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := &Client{ClientID: "c", AuthStyle: oauth2.AuthStyleInParams}
	_, err := c.Token(context.Background(), srv.URL, url.Values{"refresh_token": {"tkrt_secret"}})
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("got %v, want the 307 as an error", err)
	}
	if hit {
		t.Error("the refresh token followed the redirect")
	}
}

func TestRevoke(t *testing.T) {
	var form url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		form = r.PostForm
		if form.Get("token") == "bad" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"unsupported_token_type"}`)
		}
	}))
	defer srv.Close()
	c := &Client{ClientID: "c", ClientSecret: "s"}
	if err := c.Revoke(context.Background(), srv.URL, "tkrt_1", "refresh_token"); err != nil {
		t.Fatal(err)
	}
	if form.Get("token") != "tkrt_1" || form.Get("token_type_hint") != "refresh_token" {
		t.Errorf("form: got %v", form)
	}
	err := c.Revoke(context.Background(), srv.URL, "bad", "")
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "unsupported_token_type" {
		t.Errorf("got %v, want unsupported_token_type", err)
	}
	if err := c.Revoke(context.Background(), "http://idp.example/revoke", "t", ""); !errors.Is(err, ErrInsecureEndpoint) {
		t.Errorf("got %v, want ErrInsecureEndpoint", err)
	}
}
