// Package tokencodec encodes oauth2 tokens for storage without losing the
// fields that oauth2.Token's own JSON form drops.
//
// The encoding is JSON with a version number:
//
//	{"v":1,"access_token":"…","token_type":"Bearer","refresh_token":"…",
//	 "expiry":"2026-11-22T10:00:00.123456789Z","expires_in":3600,
//	 "extra":{"id_token":"…","scope":"…"}}
//
// expires_in is the lifetime the provider granted, which tells how early a
// token loaded from storage should be refreshed.
//
// Version 1 is the only version so far. Decode rejects any other version, so a
// file written by a later release is refused with a clear error rather than
// half-read. Readers of version 1 must be kept for as long as tokens written
// by it may exist.
package tokencodec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"time"

	"golang.org/x/oauth2"
)

// Version is the version written by Encode.
const Version = 1

// ErrFormat is wrapped by every Decode error.
var ErrFormat = errors.New("tokencodec: malformed token encoding")

type wire struct {
	V            int            `json:"v"`
	AccessToken  string         `json:"access_token,omitempty"`
	TokenType    string         `json:"token_type,omitempty"`
	RefreshToken string         `json:"refresh_token,omitempty"`
	Expiry       *time.Time     `json:"expiry,omitempty"`
	ExpiresIn    int64          `json:"expires_in,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// Encode returns the stored form of t. It fails only for a nil token or an
// extra field that has no JSON form.
func Encode(t *oauth2.Token) ([]byte, error) {
	if t == nil {
		return nil, errors.New("tokencodec: nil token")
	}
	w := wire{
		V:            Version,
		AccessToken:  t.AccessToken,
		TokenType:    t.TokenType,
		RefreshToken: t.RefreshToken,
		ExpiresIn:    t.ExpiresIn,
		Extra:        Extras(t),
	}
	if !t.Expiry.IsZero() {
		e := t.Expiry.UTC()
		w.Expiry = &e
	}
	b, err := json.Marshal(w)
	if err != nil {
		// The error names a Go type, never a value.
		return nil, fmt.Errorf("tokencodec: encode extra fields: %T", err)
	}
	return b, nil
}

// Decode parses the output of Encode. Errors wrap ErrFormat and never quote
// the input, which holds secrets.
func Decode(b []byte) (*oauth2.Token, error) {
	var probe struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%w: not a single JSON object", ErrFormat)
	}
	if probe.V == nil {
		return nil, fmt.Errorf("%w: no version field", ErrFormat)
	}
	if *probe.V != Version {
		return nil, fmt.Errorf("%w: version %d is not supported (this build reads version %d)", ErrFormat, *probe.V, Version)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: field of the wrong type", ErrFormat)
	}
	if w.AccessToken == "" && w.RefreshToken == "" {
		return nil, fmt.Errorf("%w: neither access token nor refresh token", ErrFormat)
	}
	t := &oauth2.Token{
		AccessToken:  w.AccessToken,
		TokenType:    w.TokenType,
		RefreshToken: w.RefreshToken,
		ExpiresIn:    w.ExpiresIn,
	}
	if w.Expiry != nil {
		t.Expiry = *w.Expiry
	}
	if len(w.Extra) > 0 {
		t = t.WithExtra(w.Extra)
	}
	return t, nil
}

// Clone returns a deep copy of t, extra fields included. Clone(nil) is nil.
func Clone(t *oauth2.Token) *oauth2.Token {
	if t == nil {
		return nil
	}
	c := &oauth2.Token{
		AccessToken:  t.AccessToken,
		TokenType:    t.TokenType,
		RefreshToken: t.RefreshToken,
		Expiry:       t.Expiry,
		ExpiresIn:    t.ExpiresIn,
	}
	if extra := Extras(t); extra != nil {
		c = c.WithExtra(extra)
	}
	return c
}

// WithExtras returns a copy of t whose extra fields are extra.
func WithExtras(t *oauth2.Token, extra map[string]any) *oauth2.Token {
	c := Clone(t)
	if len(extra) == 0 {
		return c.WithExtra(nil)
	}
	return c.WithExtra(extra)
}

// Extras returns a copy of the extra fields the provider sent with t, or nil.
// The standard fields (access_token, token_type, refresh_token, expires_in)
// are left out: they live in t's own fields.
//
// oauth2.Token keeps them in an unexported field and offers only a lookup by
// name, so they are read here through reflection. Reflection can read an
// unexported field but not hand its value out as an interface, so the value
// is rebuilt from its kind; the token endpoint's JSON (or form) decoding only
// ever produces strings, numbers, booleans, nulls, slices and maps. A test in
// this package fails if a future x/oauth2 stores them differently.
func Extras(t *oauth2.Token) map[string]any {
	if t == nil {
		return nil
	}
	raw := reflect.ValueOf(t).Elem().FieldByName("raw")
	if !raw.IsValid() {
		return nil
	}
	v, ok := rebuild(raw).(map[string]any)
	if !ok {
		return nil
	}
	for _, k := range standardFields {
		delete(v, k)
	}
	if len(v) == 0 {
		return nil
	}
	return v
}

// standardFields are kept in oauth2.Token's own fields; a second copy among
// the extras would outlive rotation (an old refresh token kept on disk).
var standardFields = []string{"access_token", "token_type", "refresh_token", "expires_in"}

var urlValuesType = reflect.TypeOf(url.Values(nil))

// rebuild copies a value of JSON shape out of a read-only reflect.Value.
// Form-encoded responses (url.Values) become a map of their first values,
// which is what oauth2.Token.Extra reports for them.
func rebuild(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return rebuild(v.Elem())
	case reflect.String:
		if v.Type() == reflect.TypeOf(json.Number("")) {
			return json.Number(v.String())
		}
		return v.String()
	case reflect.Bool:
		return v.Bool()
	case reflect.Float32, reflect.Float64:
		return v.Float()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint()
	case reflect.Slice, reflect.Array:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = rebuild(v.Index(i))
		}
		return out
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		out := make(map[string]any, v.Len())
		iter := v.MapRange()
		for iter.Next() {
			val := iter.Value()
			if v.Type() == urlValuesType {
				if val.Len() == 0 {
					continue
				}
				val = val.Index(0)
			}
			out[iter.Key().String()] = rebuild(val)
		}
		return out
	default:
		return nil
	}
}
