package tokensource_test

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/storage"
	"github.com/tokenkeep/tokenkeep/tokensource"
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

// TestNilAndZeroInputs calls the package's exported functions and methods,
// Source's aside, with nil and zero values: none panics, and each returns
// an error where it returns one at all.
func TestNilAndZeroInputs(t *testing.T) {
	var nilCtx context.Context
	ctx := context.Background()
	tok := &oauth2.Token{AccessToken: "tkat_nil-test", RefreshToken: "tkrt_nil-test"}
	cfg := &oauth2.Config{ClientID: "app", Endpoint: oauth2.Endpoint{TokenURL: "https://127.0.0.1:1/token"}}
	valid := &tokensource.ConfigRefresher{Config: cfg, RevocationURL: "https://127.0.0.1:1/revoke"}
	var nilRefresher *tokensource.ConfigRefresher
	var nilFunc tokensource.RefresherFunc
	errOf := func(_ any, err error) error { return err }
	noError := func(f func()) func() error { return func() error { f(); return nil } }
	tests := []struct {
		name    string
		f       func() error
		wantErr bool
	}{
		{"ConfigRefresher(nil).Validate", func() error { return nilRefresher.Validate() }, true},
		{"ConfigRefresher(nil).Refresh", func() error { return errOf(nilRefresher.Refresh(ctx, tok)) }, true},
		{"ConfigRefresher(nil).Revoke", func() error { return nilRefresher.Revoke(ctx, tok) }, true},
		{"ConfigRefresher{}.Refresh", func() error { return errOf((&tokensource.ConfigRefresher{}).Refresh(ctx, tok)) }, true},
		{"ConfigRefresher{}.Revoke", func() error { return (&tokensource.ConfigRefresher{}).Revoke(ctx, tok) }, true},
		{"ConfigRefresher.Refresh(nil token)", func() error { return errOf(valid.Refresh(ctx, nil)) }, true},
		{"ConfigRefresher.Refresh(zero token)", func() error { return errOf(valid.Refresh(ctx, &oauth2.Token{})) }, true},
		{"ConfigRefresher.Revoke(nil token)", func() error { return valid.Revoke(ctx, nil) }, true},
		{"ConfigRefresher.Revoke(zero token)", func() error { return valid.Revoke(ctx, &oauth2.Token{}) }, true},
		{"ConfigRefresher.Refresh(nil ctx)", func() error { return errOf(valid.Refresh(nilCtx, tok)) }, true},
		{"ConfigRefresher.Revoke(nil ctx)", func() error { return valid.Revoke(nilCtx, tok) }, true},
		{"NewConfigRefresher(nil)", func() error { return errOf(tokensource.NewConfigRefresher(nil, "", nil)) }, true},
		{"NewConfigRefresher(zero Config)", func() error { return errOf(tokensource.NewConfigRefresher(&oauth2.Config{}, "", nil)) }, true},
		{"RefresherFunc(nil).Refresh", func() error { return errOf(nilFunc.Refresh(ctx, tok)) }, true},
		{"FromTokenSource(nil).Refresh", func() error { return errOf(tokensource.FromTokenSource(nil).Refresh(ctx, tok)) }, true},
		{"FromTokenSource(returns nil).Refresh", func() error {
			return errOf(tokensource.FromTokenSource(func(context.Context) oauth2.TokenSource { return nil }).Refresh(ctx, tok))
		}, true},
		{"DefaultRetryPolicy(nil)", noError(func() { tokensource.DefaultRetryPolicy(nil) }), false},
		{"DefaultBackOff", noError(func() { tokensource.DefaultBackOff().NextBackOff() }), false},
		{"RefreshError(nil) methods", noError(func() {
			var e *tokensource.RefreshError
			_ = e.Error()
			_ = e.Unwrap()
			_ = fmt.Sprintf("%v %+v %#v %s %q", e, e, e, e, e)
		}), false},
		{"RefreshError{} methods", noError(func() {
			e := &tokensource.RefreshError{}
			_ = e.Error()
			_ = e.Unwrap()
			_ = e.GoString()
			_ = e.LogValue()
			_, _ = e.MarshalText()
			_ = fmt.Sprintf("%v %+v %#v %s %q", e, e, e, e, e)
		}), false},
		{"EventKind(0).String, Event{}.LogValue", noError(func() {
			_ = tokensource.EventKind(0).String()
			_ = tokensource.Event{}.LogValue().Resolve()
		}), false},
		{"ConfigRefresher(nil) printing", noError(func() {
			_ = fmt.Sprintf("%v %+v %#v %s %q", nilRefresher, nilRefresher, nilRefresher, nilRefresher, nilRefresher)
			_ = nilRefresher.LogValue()
			_, _ = nilRefresher.MarshalText()
		}), false},
		{"options with nil and zero values", func() error {
			src, err := tokensource.New(nilFunc, storage.NewMemory(), "k",
				tokensource.WithBackOff(nil), tokensource.WithRetryPolicy(nil), tokensource.WithLogger(nil),
				tokensource.WithHook(nil), tokensource.WithEarlyRefresh(0), tokensource.WithExpiryDelta(0),
				tokensource.WithRefreshTimeout(0), tokensource.WithAttemptTimeout(0), tokensource.WithLockTimeout(0))
			if err != nil {
				return err
			}
			defer src.Close()
			if err := src.Put(ctx, &oauth2.Token{AccessToken: "tkat_x", RefreshToken: "tkrt_x"}); err != nil {
				return err
			}
			_, err = src.Token()
			return err
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
