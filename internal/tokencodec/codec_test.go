package tokencodec

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestRoundTripKeepsExtras(t *testing.T) {
	expiry := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	in := (&oauth2.Token{
		AccessToken:  "at-1",
		TokenType:    "Bearer",
		RefreshToken: "rt-1",
		Expiry:       expiry,
	}).WithExtra(map[string]any{
		"id_token": "eyJhbGciOi.payload.sig",
		"scope":    "openid offline_access",
		"custom":   map[string]any{"nested": []any{"a", true, nil}},
	})
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.AccessToken != "at-1" || out.RefreshToken != "rt-1" || out.TokenType != "Bearer" {
		t.Errorf("Decode lost a field: got %+v", out)
	}
	if !out.Expiry.Equal(expiry) {
		t.Errorf("expiry: got %v, want %v", out.Expiry, expiry)
	}
	for _, k := range []string{"id_token", "scope"} {
		if got, want := out.Extra(k), in.Extra(k); got != want {
			t.Errorf("Extra(%q): got %v, want %v", k, got, want)
		}
	}
	want := map[string]any{"nested": []any{"a", true, nil}}
	if got := out.Extra("custom"); !reflect.DeepEqual(got, want) {
		t.Errorf("Extra(custom): got %#v, want %#v", got, want)
	}
}

func TestExtrasFromFormResponse(t *testing.T) {
	in := (&oauth2.Token{AccessToken: "a"}).WithExtra(url.Values{"scope": {"read write"}, "empty": {}})
	got := Extras(in)
	if want := map[string]any{"scope": "read write"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Extras: got %#v, want %#v", got, want)
	}
}

// TestExtrasSeesOAuth2Raw fails if x/oauth2 stops keeping extra fields where
// Extras looks for them; without it the codec would silently drop id_token.
func TestExtrasSeesOAuth2Raw(t *testing.T) {
	tok := (&oauth2.Token{AccessToken: "a"}).WithExtra(map[string]any{"id_token": "x"})
	if got := Extras(tok); got["id_token"] != "x" {
		t.Fatalf("Extras cannot read oauth2.Token's extra fields: got %#v", got)
	}
}

func TestExtrasLeaveOutStandardFields(t *testing.T) {
	in := (&oauth2.Token{AccessToken: "a"}).WithExtra(map[string]any{
		"access_token": "a", "refresh_token": "r", "token_type": "Bearer", "expires_in": 3600, "scope": "s",
	})
	if got, want := Extras(in), map[string]any{"scope": "s"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Extras: got %#v, want %#v", got, want)
	}
}

func TestCloneIsDeep(t *testing.T) {
	extra := map[string]any{"scope": "a"}
	in := (&oauth2.Token{AccessToken: "a"}).WithExtra(extra)
	c := Clone(in)
	extra["scope"] = "changed"
	if got := c.Extra("scope"); got != "a" {
		t.Errorf("clone shares extras: got %v, want a", got)
	}
	if Clone(nil) != nil {
		t.Error("Clone(nil) != nil")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", ``, "not a single JSON object"},
		{"not json", `secret-ish`, "not a single JSON object"},
		{"no version", `{"access_token":"a"}`, "no version"},
		{"future version", `{"v":2,"access_token":"a"}`, "version 2 is not supported"},
		{"wrong type", `{"v":1,"access_token":7}`, "wrong type"},
		{"bad expiry", `{"v":1,"access_token":"a","expiry":"soon"}`, "wrong type"},
		{"no tokens", `{"v":1,"token_type":"Bearer"}`, "neither"},
		{"trailing", `{"v":1,"access_token":"a"} {}`, "not a single JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("got %v, want ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to mention %q", err, tt.want)
			}
		})
	}
}
